"""The command line and the quickstart (the README's main job)."""

import json
import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from harness import tiny_model
from kerasmtl import cli
from kerasmtl.data import synthetic_tabular, synthetic_tabular_tasks


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
