"""`kerasmtl train`'s training options: --weighting NAME[:key=value], --early-stopping,
--tensorboard, --checkpoint-dir and --resume (zoo/training.py, zoo/training_callbacks.py).

Runs train the synthetic tabular model in batches of 500 rows (3 steps per epoch).
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasmtl as mtl
from kerasmtl import cli, weighting_spec
from zoo import registry, training

FAST = ["--batch-size", "500"]


@pytest.fixture
def trained(monkeypatch):
    """Runs the CLI and keeps what `train_zoo_model` returned (and was given)."""
    runs = []
    real = training.train_zoo_model

    def recording(*args, **kwargs):
        runs.append({"kwargs": kwargs, **real(*args, **kwargs)})
        return runs[-1]

    monkeypatch.setattr(training, "train_zoo_model", recording)
    return runs


def outputs(tmp_path):
    return ["--save", str(tmp_path / "m.keras"), "--export-dir", str(tmp_path / "export")]


# -- --weighting -------------------------------------------------------------------


def test_weighting_names_are_every_registered_weighting_and_balancer(capsys):
    listed = {w.class_name: w.level for w in weighting_spec.registered_weightings()}
    expected = {}
    for name in mtl.weighting.__all__:
        cls = getattr(mtl.weighting, name)
        if keras.saving.get_registered_object(f"kerasmtl>{name}") is cls:
            expected[name] = ("gradient" if issubclass(cls, mtl.weighting.GradientBalancer)
                              else "loss")
    assert listed == expected and len(listed) >= 17
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for name in listed:
        assert name in help_text, name
    # Spellings: case-insensitive, CamelCase or snake_case, initials of long names.
    for text, class_name in (("PCGrad", "PCGrad"), ("pcgrad", "PCGrad"),
                             ("dynamic_weight_average", "DynamicWeightAverage"),
                             ("DWA", "DynamicWeightAverage"), ("aligned_mtl", "AlignedMTL")):
        assert weighting_spec.parse_weighting_spec(text) == (class_name, {})
    assert weighting_spec.parse_weighting_spec(
        "cagrad:c=0.4,iterations=50,rep_grad=true") == (
        "CAGrad", {"c": 0.4, "iterations": 50, "rep_grad": True})
    factory = weighting_spec.weighting_factory("static:weights={'size': 2.0, 'tags': 1}")
    assert factory().get_config()["weights"] == {"size": 2.0, "tags": 1.0}


@pytest.mark.parametrize("spec, message", [
    ("nope", "Unknown weighting 'nope'. Valid names"),
    ("dwa:temp=2", "DynamicWeightAverage takes no argument `temp` (in --weighting "
                   "'dwa:temp=2'). Its arguments: temperature=2.0."),
    ("pcgrad:seed=1.5", "Invalid value for PCGrad's argument `seed`. Expected an int "
                        "(its default is 0). Received: seed=1.5"),
    ("dwa:temperature=warm", "argument `temperature`. Expected a float"),
    ("gradnorm:alpha=-1", "Invalid value for GradNorm's argument(s) alpha=-1: "),
    ("static", "Static needs argument(s) weights"),
    ("dwa:temperature", "Invalid weighting argument 'temperature'"),
])
def test_bad_weightings_are_refused_before_training(spec, message, tmp_path, capsys):
    argv = ["train", "tabular_mtl_mlp", "--data", "synthetic", "--weighting", spec,
            *outputs(tmp_path)]
    try:
        code = cli.main(argv)
    except SystemExit as exit_info:  # the name and syntax: argparse's error
        code = exit_info.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err, err
    if spec == "nope":
        assert "PCGrad" in err and "Uncertainty" in err
    assert not (tmp_path / "export").exists()


def test_a_loss_weighting_with_arguments_reaches_the_trained_model(trained, tmp_path):
    code = cli.main(["train", "tabular_mtl_mlp", "--data", "synthetic", "--epochs", "1",
                     "--weighting", "dwa:temperature=3", *FAST, *outputs(tmp_path)])
    assert code == 0
    weighting = trained[-1]["model"].weighting
    assert type(weighting) is mtl.weighting.DynamicWeightAverage
    assert weighting.temperature == 3.0
    assert trained[-1]["kwargs"]["early_stopping"] is None  # the recipe decides


# -- --tensorboard, with a gradient balancer ---------------------------------------------


def scalars(directory):
    found = {}
    for path in directory.glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                found.setdefault(value.tag, []).append(
                    float(tf.make_ndarray(value.tensor)))
    return found


def test_tensorboard_logs_per_task_scalars_and_the_learning_rate(trained, tmp_path):
    logs = tmp_path / "tb"
    code = cli.main(["train", "tabular_mtl_mlp", "--data", "synthetic", "--epochs", "2",
                     "--weighting", "PCGrad:seed=3", "--optimizer", "sgd",
                     "--tensorboard", str(logs), *FAST, *outputs(tmp_path)])
    assert code == 0
    weighting = trained[-1]["model"].weighting
    assert type(weighting) is mtl.weighting.PCGrad and weighting.seed == 3
    train, dev = scalars(logs / "train"), scalars(logs / "validation")
    for task in ("species", "size", "tags"):
        assert len(train[f"epoch_loss/{task}"]) == 2, sorted(train)
        assert len(train[f"epoch_weight/{task}"]) == 2
        assert len(dev[f"epoch_loss/{task}"]) == 2, sorted(dev)
    assert len(train["epoch_species/accuracy"]) == 2 and len(dev["epoch_tags/f1"]) == 2
    history = trained[-1]["history"]
    np.testing.assert_allclose(train["epoch_loss/size"], history["loss/size"], rtol=1e-6)
    np.testing.assert_allclose(train["epoch_learning_rate"], [0.01, 0.01])  # SGD's default


# -- --early-stopping ------------------------------------------------------------------


class Scramble(keras.callbacks.Callback):
    """Keeps each epoch's weights (after early stopping took its copy), then
    makes the model useless after epoch 2: the dev loss gets worse from there."""

    def __init__(self):
        super().__init__()
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(self.model.get_weights())
        if epoch == 1:
            rng = np.random.default_rng(0)
            for layer in self.model.layers:
                if isinstance(layer, keras.layers.Dense):
                    layer.kernel.assign(rng.normal(scale=30.0, size=layer.kernel.shape))


def tabular_with_recipe(monkeypatch, name: str, recipe: dict) -> str:
    """Registers `name`: the synthetic tabular zoo model with `recipe`, for
    this test only."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    base = registry.get_entry("tabular_mtl_mlp")

    def factory(**kwargs):
        return base.factory(**kwargs)

    factory.__name__ = name
    registry.register_model(factory, data=base.data, recipe=recipe)
    return name


@pytest.fixture
def recipe_with_patience(monkeypatch):
    return tabular_with_recipe(monkeypatch, "patient_mlp", {
        "epochs": 6, "batch_size": 500, "early_stopping": 1})


def test_early_stopping_from_the_recipe_stops_and_restores_the_best_epoch(
        recipe_with_patience, tmp_path):
    name = recipe_with_patience
    settings = training.training_settings(name)
    assert (settings.early_stopping, settings.early_stopping_source) == (1, "recipe")
    assert training.training_settings(name, early_stopping=0).early_stopping == 0
    with pytest.raises(ValueError, match=r"`early_stopping`. Expected an int >= 0"):
        training.training_settings(name, early_stopping=-1)
    with pytest.raises(ValueError, match=r"`early_stopping` must be an int >= 0"):
        registry.register_model(lambda: None, recipe={"early_stopping": -2})

    lines, scramble = [], Scramble()
    result = training.train_zoo_model(name, "synthetic", callbacks=[scramble],
                                      print_fn=lines.append)
    val_loss = result["history"]["val_loss"]
    # Epoch 3 starts from scrambled weights: patience 1 stops there at the latest.
    assert len(val_loss) <= 3 < 6 and val_loss[-1] > min(val_loss), val_loss
    best = int(np.argmin(val_loss))
    for got, want in zip(result["model"].get_weights(), scramble.weights[best]):
        np.testing.assert_array_equal(got, want)
    assert "early_stopping=1 on val_loss (recipe)" in " ".join(lines)
    assert (f"early stopping: stopped after epoch {len(val_loss)} of 6; weights of the "
            f"best epoch {best + 1} (val_loss={val_loss[best]:.4f}) restored") in lines


def test_early_stopping_on_the_joint_dev_metric_keeps_its_best_epoch(
        recipe_with_patience):
    name, scramble, lines = recipe_with_patience, Scramble(), []
    result = training.train_zoo_model(name, "synthetic", monitor="joint",
                                      callbacks=[scramble], print_fn=lines.append)
    history = result["history"]
    # The mean of the primary dev metrics, negated where lower is better (MAE).
    want = (np.array(history["val_species/accuracy"]) - np.array(history["val_size/mae"])
            + np.array(history["val_tags/f1"])) / 3
    np.testing.assert_allclose(history["val_joint"], want, rtol=1e-6)
    joint = history["val_joint"]
    assert len(joint) <= 3 < 6 and joint[-1] < max(joint), joint
    best = int(np.argmax(joint))
    for got, wanted in zip(result["model"].get_weights(), scramble.weights[best]):
        np.testing.assert_array_equal(got, wanted)
    assert "early_stopping=1 on val_joint (recipe)" in " ".join(lines)
    assert any(line.startswith("early stopping: stopped after epoch") and
               f"best epoch {best + 1} (val_joint=" in line for line in lines), lines


def test_a_monitor_that_is_not_logged_stops_the_run_with_the_logged_keys(tmp_path, capsys):
    code = cli.main(["train", "tabular_mtl_mlp", "--data", "synthetic", "--epochs", "2",
                     "--early-stopping", "1", "--monitor", "val_species/f1", *FAST,
                     *outputs(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "--monitor 'val_species/f1' is not among the values logged after epoch 1" in err
    assert "'val_species/accuracy'" in err
    with pytest.raises(ValueError, match=r"`monitor` must be a str"):
        registry.register_model(lambda: None, recipe={"monitor": 3})
    assert cli.command_parser().parse_args(["train", "m", "--data", "d"]).monitor is None
    assert cli.command_parser().parse_args(
        ["train", "m", "--data", "d", "--monitor", "joint"]).monitor == "joint"


def test_a_recipes_weighting_trains_the_model_unless_one_is_given(monkeypatch):
    tabular_with_recipe(monkeypatch, "weighted_mlp", {
        "epochs": 1, "batch_size": 500,
        "weighting": "static:weights={'species': 1.0, 'size': 0.5, 'tags': 2.0}"})
    lines = []
    model = training.train_zoo_model("weighted_mlp", "synthetic",
                                     print_fn=lines.append)["model"]
    assert type(model.weighting).__name__ == "Static"
    assert model.weighting.get_config()["weights"] == {"species": 1.0, "size": 0.5, "tags": 2.0}
    assert "weighting: static:weights={'species': 1.0, 'size': 0.5, 'tags': 2.0} (recipe)" in lines
    lines.clear()
    given = training.train_zoo_model("weighted_mlp", "synthetic", print_fn=lines.append,
                                     weighting=weighting_spec.weighting_factory("pcgrad"))
    assert type(given["model"].weighting).__name__ == "PCGrad"
    assert not any(line.startswith("weighting:") for line in lines), lines
    with pytest.raises(ValueError, match=r"Invalid recipe for zoo model '<lambda>': "
                       r"`weighting` 'nope': Unknown weighting 'nope'. Valid names"):
        registry.register_model(lambda: None, recipe={"weighting": "nope"})


# -- --checkpoint-dir and --resume -------------------------------------------------------


class Killed(Exception):
    pass


class Interrupt(keras.callbacks.Callback):
    """Stands for a killed process: the run ends after epoch 2's backup."""

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise Killed("after epoch 2")


@pytest.mark.large
def test_checkpoints_keep_the_best_model_and_resume_continues_the_run(trained, tmp_path,
                                                                     capsys):
    checkpoints = tmp_path / "ck"
    options = dict(epochs=4, batch_size=500, checkpoint_dir=str(checkpoints),
                   print_fn=lambda line: None)
    with pytest.raises(Killed):
        training.train_zoo_model("tabular_mtl_mlp", "synthetic", callbacks=[Interrupt()],
                                 **options)
    assert (checkpoints / "best.keras").is_file() and (checkpoints / "backup").is_dir()
    assert json.loads((checkpoints / "run.json").read_text())["model"] == "tabular_mtl_mlp"
    best = keras.models.load_model(checkpoints / "best.keras")
    assert best.task_names == ["species", "size", "tags"]

    base = ["train", "tabular_mtl_mlp", "--data", "synthetic", "--epochs", "4", *FAST,
            "--checkpoint-dir", str(checkpoints), *outputs(tmp_path)]
    assert cli.main(base) == 2  # a backup is there: starting over needs a choice
    assert "holds the backup of an unfinished run" in capsys.readouterr().err
    assert cli.main(base[:4] + ["--epochs", "4", "--batch-size", "250", *base[8:],
                                "--resume"]) == 2
    err = capsys.readouterr().err
    assert "Cannot resume the run" in err and "batch_size: backup 500, now 250" in err

    assert cli.main(base + ["--resume"]) == 0
    assert "resuming the run backed up in" in capsys.readouterr().out
    history, model = trained[-1]["history"], trained[-1]["model"]
    assert len(history["loss"]) == 2  # epochs 3 and 4 only
    assert int(model.optimizer.iterations) == 4 * 3  # the optimizer's step came back
    assert not (checkpoints / "backup").exists()  # a finished run leaves no backup


def test_resume_needs_a_checkpoint_dir_and_flags_are_checked(tmp_path, capsys):
    code = cli.main(["train", "tabular_mtl_mlp", "--data", "synthetic", "--resume",
                     *outputs(tmp_path)])
    assert code == 2
    assert "give it with --checkpoint-dir DIR" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "tabular_mtl_mlp", "--data", "synthetic",
                  "--early-stopping", "-1"])
    assert exit_info.value.code == 2
    assert "argument --early-stopping: expected an int >= 0, got -1" in (
        capsys.readouterr().err)
    args = cli.command_parser().parse_args(["train", "m", "--data", "d"])
    assert (args.early_stopping, args.tensorboard, args.checkpoint_dir, args.resume) == (
        None, None, None, False)


def _train_process(tmp_path, name: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "kerasmtl.cli", "train", "tabular_mtl_mlp", "--data",
            "synthetic", "--epochs", "12", "--batch-size", "100",
            "--save", str(tmp_path / f"{name}.keras"),
            "--export-dir", str(tmp_path / f"export_{name}"), *extra]


@pytest.mark.large  # three TensorFlow processes
def test_a_run_killed_with_sigkill_resumes_to_the_uninterrupted_weights(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    root = Path(__file__).resolve().parents[1]
    subprocess.run(_train_process(tmp_path, "reference"), env=env, cwd=root, check=True,
                   capture_output=True, timeout=600)
    checkpoints = str(tmp_path / "ck")
    killed = subprocess.Popen(_train_process(tmp_path, "resumed", "--checkpoint-dir",
                                             checkpoints),
                              env=env, cwd=root, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        for line in killed.stdout:  # SIGKILL inside epoch 5, after epoch 4's backup
            if line.startswith("Epoch 5/"):
                os.kill(killed.pid, signal.SIGKILL)
                break
        assert killed.wait(60) == -signal.SIGKILL
    finally:
        killed.kill()
        killed.stdout.close()
    assert (tmp_path / "ck" / "backup").is_dir()
    assert not (tmp_path / "resumed.keras").exists()

    resumed = subprocess.run(
        _train_process(tmp_path, "resumed", "--checkpoint-dir", checkpoints, "--resume"),
        env=env, cwd=root, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming the run backed up in" in resumed.stdout
    assert "Epoch 5/12" in resumed.stdout and "Epoch 4/12" not in resumed.stdout
    reference = keras.models.load_model(tmp_path / "reference.keras")
    model = keras.models.load_model(tmp_path / "resumed.keras")
    for want, got in zip(reference.weights, model.weights, strict=True):
        # Same process-independent seeds and data order: equal up to float
        # reassociation (measured equal to the bit on one machine).
        np.testing.assert_allclose(keras.ops.convert_to_numpy(got),
                                   keras.ops.convert_to_numpy(want), atol=1e-6,
                                   err_msg=want.path)


def test_tensorboard_logs_the_balancers_gradient_cosines(tmp_path):
    logs = tmp_path / "tb"
    code = cli.main(["train", "tabular_mtl_mlp", "--data", "synthetic", "--epochs", "2",
                     "--weighting", "pcgrad", "--tensorboard", str(logs), *FAST,
                     *outputs(tmp_path)])
    assert code == 0
    train, dev = scalars(logs / "train"), scalars(logs / "validation")
    pairs = sorted(tag for tag in train if tag.startswith("epoch_grad_cos/"))
    assert pairs == ["epoch_grad_cos/size-tags", "epoch_grad_cos/species-size",
                     "epoch_grad_cos/species-tags"], sorted(train)
    for tag in pairs:
        assert len(train[tag]) == 2 and all(-1.0 <= v <= 1.0 for v in train[tag]), tag
    assert not [tag for tag in dev if "grad_cos" in tag]  # training-only
    assert len(train["epoch_learning_rate"]) == 2
