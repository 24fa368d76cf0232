"""The command line and the quickstart (the README's main job)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_multilabel_zoo import write_mulan_folder

import zoo
from harness import tiny_model
from kerasmtl import cli, cli_arguments
from kerasmtl.data import synthetic_tabular
from kerasmtl.quiet_tensorflow import drop_absl_lines_below
from kerasmtl.tasks import synthetic_tabular_tasks
from zoo.registry import get_entry

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_module(*args, env=None, code=None):
    """`python -m kerasmtl ARGS` (or `python -c CODE`) in a fresh process."""
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "kerasmtl", *args]
    return subprocess.run(command, cwd=REPO_ROOT, env=env or dict(os.environ),
                          capture_output=True, text=True, timeout=300)


def test_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(word in out for word in ("quickstart", "export", "zoo"))
    assert cli.main([]) == 2


def test_quickstart_small(tmp_path, capsys):
    export_dir = tmp_path / "exported" / "quickstart"
    code = cli.main([
        "quickstart", "--epochs", "1", "--examples", "128",
        "--export-dir", str(export_dir), "--weighting", "dwa",
    ])
    assert code == 0
    out = capsys.readouterr().out
    for expected in ("Δm = ", "docker run", str(export_dir / "1")):
        assert expected in out
    assert out.index("kerasmtl serve") < out.index("docker run")  # no Docker needed
    # One comparison row per task, on its primary metric, with MTL, STL and Δ.
    for task, metric in (("species", "accuracy"), ("size", "mae"), ("tags", "f1")):
        assert re.search(rf"^{task}\s+{metric} \S+\s+[\d.]+\s+[\d.]+\s+[-+][\d.]+%$", out, re.M), out
    # Known-label counts come from the tasks' own masks: 128 rows, 5 tags each.
    assert re.search(r"^  tags\s+\d+ known / 640 label elements$", out, re.M), out
    signature = tf.saved_model.load(str(export_dir / "1")).signatures["serving_default"]
    result = signature(features=tf.zeros([2, 8]))
    assert {"species", "species_prediction", "size", "tags_prediction"} <= set(result)


def test_export_command(tmp_path, capsys):
    x, y = synthetic_tabular(16, seed=0)
    model = tiny_model(synthetic_tabular_tasks())
    model.compile(optimizer="adam")
    model.fit(x, y, epochs=1, verbose=0)
    path = str(tmp_path / "m.keras")
    model.save(path)
    assert cli.main(["export", path, str(tmp_path / "served"), "--version", "3"]) == 0
    assert capsys.readouterr().out.strip().endswith(os.path.join("served", "3"))
    loaded = tf.saved_model.load(str(tmp_path / "served" / "3"))
    got = loaded.signatures["serving_default"](features=tf.constant(x))["size"].numpy()
    np.testing.assert_allclose(got, model.predict(x, verbose=0)["size"], atol=1e-5)
    keras.backend.clear_session()


def test_export_command_errors(tmp_path, capsys):
    assert cli.main(["export", str(tmp_path / "missing.keras"), str(tmp_path / "out")]) == 2
    assert "No model file" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("x")
    x, y = synthetic_tabular(8, seed=0)
    model = tiny_model(synthetic_tabular_tasks())
    model.save(str(tmp_path / "m.keras"))
    assert cli.main(["export", str(tmp_path / "m.keras"), str(tmp_path)]) == 2
    assert "is not a model base directory" in capsys.readouterr().err


def test_zoo_commands(capsys):
    assert cli.main(["zoo", "list"]) == 0
    assert "tabular_mtl_mlp" in capsys.readouterr().out
    assert cli.main(["zoo", "card", "tabular_mtl_mlp"]) == 0
    assert "Δm" in capsys.readouterr().out
    assert cli.main(["zoo", "card", "nope"]) == 2


def test_train_and_evaluate_commands(tmp_path, capsys):
    save, export_dir = tmp_path / "m.keras", tmp_path / "export"
    code = cli.main(["train", "tabular_mtl_mlp", "--data", "synthetic", "--epochs", "1",
                     "--save", str(save), "--export-dir", str(export_dir)])
    assert code == 0 and save.exists() and (export_dir / "1").is_dir()
    assert "dev set:" in capsys.readouterr().out
    report = tmp_path / "report.json"
    code = cli.main(["evaluate", "tabular_mtl_mlp", "--data", "synthetic", "--epochs", "1",
                     "--weighting", "uncertainty", "--json", str(report)])
    assert code == 0
    out = capsys.readouterr().out
    assert "Δm = " in out and "multi-task model on dev:" in out
    assert {r["task"] for r in json.loads(report.read_text())["rows"]} == {
        "species", "size", "tags"}
    assert cli.main(["train", "tabular_mtl_mlp", "--data", "x.csv"]) == 2
    assert "--data synthetic only" in capsys.readouterr().err


def test_python_m_kerasmtl_and_argument_errors_answer_without_tensorflow():
    result = run_module("--help")
    assert result.returncode == 0 and "quickstart" in result.stdout, result.stderr
    result = run_module("train", "tabular_mtl_mlp", "--data", "synthetic", "--epochs", "0")
    assert result.returncode == 2
    assert "kerasmtl train: error: argument --epochs: expected an int >= 1, got 0" in (
        result.stderr)
    # The command line's parsing, help and argument errors load no TensorFlow
    # (Python's import-time log lists every module a process imported).
    for argv in (["--help"], ["train", "--help"],
                 ["evaluate", "multilabel_mlp", "--data", "x", "--batch-size", "0"]):
        result = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "kerasmtl", *argv],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
        assert result.returncode in (0, 2), result.stderr[-3000:]
        imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
                    if line.startswith("import time:")}
        assert "kerasmtl.cli" in imported
        assert not {"tensorflow", "keras"} & imported, argv
    # A library import registers everything at once, whatever the import
    # order: load_model finds kerasmtl's classes with no submodule touched.
    code = (
        "import kerasmtl as mtl\n"
        "import keras\n"
        "from kerasmtl import MultiTaskModel, weighting\n"
        "assert mtl.tasks.Regression and mtl.MultiTaskModel is MultiTaskModel\n"
        "assert weighting.Equal is mtl.weighting.Equal\n"
        "print('registered', keras.saving.get_registered_object("
        "'kerasmtl>MultiTaskModel') is MultiTaskModel)\n"
        "print('missing', [n for n in mtl.__all__ if not hasattr(mtl, n)])\n"
    )
    result = run_module(code=code)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines()
             if line.startswith(("registered", "missing"))]
    assert lines == ["registered True", "missing []"]


@pytest.mark.parametrize("argv, message", [
    (["train", "tabular_mtl_mlp", "--data", "synthetic", "--epochs", "0"],
     "argument --epochs: expected an int >= 1, got 0"),
    (["train", "tabular_mtl_mlp", "--data", "synthetic", "--epochs", "-3"],
     "argument --epochs: expected an int >= 1, got -3"),
    (["train", "tabular_mtl_mlp", "--data", "synthetic", "--batch-size", "0"],
     "argument --batch-size: expected an int >= 1, got 0"),
    (["evaluate", "tabular_mtl_mlp", "--data", "synthetic", "--epochs", "0"],
     "argument --epochs: expected an int >= 1, got 0"),
    (["train", "multilabel_mlp", "--data", "synthetic", "--dev-fraction", "1"],
     "argument --dev-fraction: expected a number in (0, 1), got '1'"),
    (["quickstart", "--epochs", "0"], "argument --epochs: expected an int >= 1, got 0"),
    (["quickstart", "--examples", "0"], "argument --examples: expected an int >= 1, got 0"),
])
def test_degenerate_budgets_are_refused_before_training(argv, message, tmp_path, capsys):
    export_dir = tmp_path / "export"
    extra = [] if argv[0] == "evaluate" else ["--export-dir", str(export_dir)]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv + extra)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not export_dir.exists()


def test_header_only_arff_is_refused_before_training(tmp_path, capsys):
    folder = write_mulan_folder(tmp_path / "toy", rows=0)
    save, export_dir = tmp_path / "m.keras", tmp_path / "export"
    code = cli.main(["train", "multilabel_mlp", "--data", str(folder), "--save", str(save),
                     "--export-dir", str(export_dir)])
    assert code == 2
    err = capsys.readouterr().err
    assert "kerasmtl train: error: " in err and "toy-train.arff: no data rows after @data" in err
    assert not save.exists() and not export_dir.exists()


def test_plain_mulan_folder_trains_and_evaluate_shows_progress(tmp_path, capsys):
    folder = write_mulan_folder(tmp_path / "toy")
    save, export_dir = tmp_path / "m.keras", tmp_path / "export"
    code = cli.main(["train", "multilabel_mlp", "--data", str(folder), "--epochs", "1",
                     "--batch-size", "8", "--save", str(save), "--export-dir", str(export_dir)])
    assert code == 0 and save.exists() and (export_dir / "1").is_dir()
    out = capsys.readouterr().out
    assert "18 train / 2 dev rows (dev: random 0.1 of the rows, seed 0)" in out, out

    code = cli.main(["evaluate", "multilabel_mlp", "--data", str(folder), "--epochs", "2",
                     "--batch-size", "8", "--dev-fraction", "0.25", "--seed", "3"])
    assert code == 0
    out = capsys.readouterr().out
    assert "15 train / 5 dev rows (dev: random 0.25 of the rows, seed 3)" in out, out
    # Which model trains, then Keras' line per epoch (2 batches of 8 rows).
    progress = [line.split(" - ")[0] for line in out.splitlines()
                if line.startswith(("[", "Epoch ", "2/2 - "))]
    assert progress == [
        "[1/2] training the multi-task model (labels) for 2 epoch(s)", "Epoch 1/2", "2/2",
        "Epoch 2/2", "2/2",
        "[2/2] training the single-task baseline of 'labels' for 2 epoch(s)", "Epoch 1/2",
        "2/2", "Epoch 2/2", "2/2",
    ], out
    assert "Δm = " in out

    assert cli.main(["train", "tabular_mtl_mlp", "--data", "synthetic",
                     "--dev-fraction", "0.2"]) == 2
    assert "does not apply to it" in capsys.readouterr().err


def test_help_describes_the_data_of_every_trainable_zoo_model(capsys):
    for command in ("train", "evaluate"):
        with pytest.raises(SystemExit) as exit_info:
            cli.main([command, "--help"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert "--dev-fraction F" in out and "dev_split_seed0.txt" in out
        for name in zoo.list_models():
            if get_entry(name).data is not None:
                assert re.search(rf"^  {name}\b", out, re.M), (name, out)


def test_lazy_lookups_agree_with_the_library():
    from kerasmtl import weighting
    from kerasmtl.serving import server

    assert (cli_arguments.DEFAULT_PORT, cli_arguments.DEFAULT_MAX_BODY_BYTES) == (
        server.DEFAULT_PORT, server.DEFAULT_MAX_BODY_BYTES)
    for name in cli_arguments.WEIGHTINGS:
        assert issubclass(cli._weighting_factory(name), weighting.LossWeighting)


def test_absl_start_up_lines_below_the_level_are_dropped(capfd):
    lines = (b"WARNING: All log messages before absl::InitializeLog() is called are "
             b"written to STDERR\n"
             b"I0000 00:00:1796398546.159138    4400 port.cc:153] oneDNN custom operations\n"
             b"W0000 00:00:1796398546.159138    4400 a.cc:1] a warning\n"
             b"E0000 00:00:1796398546.159138    4400 b.cc:2] an error\n"
             b"F0000 00:00:1796398546.159138    4400 c.cc:3] fatal\n"
             b"plain text\n")
    for level, kept in ((1, ["W0000", "E0000", "F0000", "plain"]),
                        (3, ["F0000", "plain"]), (0, ["WARNING:", "I0000", "W0000", "E0000",
                                                     "F0000", "plain"])):
        with drop_absl_lines_below(level):
            os.write(2, lines)
        err = capfd.readouterr().err
        assert [line.split()[0] for line in err.splitlines()] == kept, (level, err)


def test_export_in_a_fresh_process_logs_nothing_from_tensorflow(tmp_path):
    model = tiny_model(synthetic_tabular_tasks())
    model.save(str(tmp_path / "m.keras"))
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    # The lazy package registers the model's tasks and layers before loading.
    result = run_module("export", str(tmp_path / "m.keras"), str(tmp_path / "out"), env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith(os.path.join("out", "1"))
    noise = [line for line in result.stderr.splitlines()
             if re.match(r"[IWE]\d{4} |WARNING: All log messages before absl", line)]
    assert noise == [], result.stderr


@pytest.mark.parametrize("command, preset, expected", [
    ("train", None, "true"), ("quickstart", None, "true"),
    ("train", "false", "false"),  # the user's setting wins
    ("serve", None, "None"),  # a server gives memory back: the default allocator
])
def test_training_commands_use_the_bfc_cpu_allocator(command, preset, expected):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPU_ALLOCATOR_USE_BFC"}
    if preset is not None:
        env["TF_CPU_ALLOCATOR_USE_BFC"] = preset
    # As the console script starts (argv[0] `kerasmtl`: the package loads
    # lazily, so TensorFlow is not imported yet).
    code = ("import os, sys\nsys.argv[0] = 'kerasmtl'\n"
            "from kerasmtl.quiet_tensorflow import start_tensorflow_quietly\n"
            f"start_tensorflow_quietly({command!r})\n"
            "print(os.environ.get('TF_CPU_ALLOCATOR_USE_BFC'))")
    result = run_module(code=code, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-1] == expected
