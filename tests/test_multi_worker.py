"""MultiTaskModel under tf.distribute.MultiWorkerMirroredStrategy, two local
worker processes (TF_CONFIG on 127.0.0.1, collective ops over loopback).

Keras 3's own `fit` fails there (keras-team/keras#20585); kerasmtl's
`MultiWorkerTrainingMixin` works around it. Each worker trains 4 SGD steps
(2 epochs of 2 global batches of 16) with every registered loss weighting and
gradient balancer, the shards holding different numbers of known labels (one
worker's shard has no `size` label at all); weights and History (and, for
three of them, `evaluate` and `predict`) must equal the single-device run on
the same data. `kerasmtl train` under TF_CONFIG is checked the same way.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from unittest import mock

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasmtl as mtl
from kerasmtl.multi_worker import (
    cluster_from_tf_config,
    local_worker_configs,
    spans_workers,
)
from kerasmtl.weighting_spec import registered_weightings

WORKER_SCRIPT = '''
import json, os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf

role, out_path = sys.argv[1], sys.argv[2]
# A multi-worker strategy must exist before TensorFlow runs any op.
strategy = (tf.distribute.MultiWorkerMirroredStrategy() if role == "worker"
            else tf.distribute.get_strategy())
import keras, numpy as np
import kerasmtl as mtl
from kerasmtl.data import synthetic_tabular

x, y = synthetic_tabular(32, missing_rate=0.2, seed=0)
y = {"species": y["species"], "size": y["size"]}
for start in (0, 16):                         # in each global batch of 16:
    y["size"][start:start + 8] = np.nan       # worker 0's half: no size label
    y["species"][start + 8:start + 12] = -1   # worker 1's half: 4 classes missing
from kerasmtl.weighting_spec import accepted_arguments, registered_weightings

# Every registered loss weighting and gradient balancer, seeded where it
# draws random numbers (RLW, PCGrad's order, GradVac, GradDrop), plus one
# balancer on the shared representation's gradient (rep_grad=True).
ARGUMENTS = {"Static": {"weights": {"species": 1.0, "size": 0.5}},
             "Uncertainty": {"init_log_variance": 0.3},
             "STCH": {"warmup_epochs": 1}}
WEIGHTINGS = {}
for entry in registered_weightings():
    cls = getattr(mtl.weighting, entry.class_name)
    kwargs = dict(ARGUMENTS.get(entry.class_name, {}))
    if "seed" in accepted_arguments(cls):
        kwargs["seed"] = 3
    WEIGHTINGS[entry.class_name.lower()] = (
        lambda cls=cls, kwargs=kwargs: cls(**kwargs))
WEIGHTINGS["upgrad_rep_grad"] = lambda: mtl.weighting.UPGrad(rep_grad=True)
DETAILED = ("equal", "uncertainty", "pcgrad")   # also evaluate and predict

def build(weighting=None):
    """The same seeded two-task model, built and compiled under `strategy`."""
    with strategy.scope():
        keras.utils.set_random_seed(0)
        inputs = keras.Input((8,))
        shared = keras.layers.Dense(4, activation="relu")(inputs)
        tasks = [mtl.tasks.Classification("species", num_classes=3),
                 mtl.tasks.Regression("size")]
        model = mtl.sharing.hard_sharing(inputs, shared, tasks, weighting=weighting)
        model.compile(optimizer=keras.optimizers.SGD(0.1))
    return model


def run(name):
    model = build(WEIGHTINGS[name]())
    start = model.get_weights()
    history = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    result = {
        "start": [w.tolist() for w in start],
        "weights": [w.tolist() for w in model.get_weights()],
        "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
    }
    if name in DETAILED:
        logs = model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
        prediction = model.predict(x, batch_size=16, verbose=0)
        result["evaluate"] = {k: float(v) for k, v in logs.items()}
        result["predict"] = {k: v.tolist() for k, v in prediction.items()}
    return result



def run_dynamic_sampling():
    """mix(strategy="dynamic") + DynamicSampling: each worker iterates the
    same seeded mixture and keeps its share of every global batch; the
    sampler's weights come from the epoch logs, the same on every worker."""
    from kerasmtl.data import DynamicSampling, mix
    rng = np.random.default_rng(0)
    x_a = rng.normal(size=(48, 8)).astype("float32")
    x_b = rng.normal(size=(16, 8)).astype("float32")
    corpora = {
        "species_corpus": tf.data.Dataset.from_tensor_slices(
            (x_a, {"species": (x_a[:, 0] > 0).astype("int32")})),
        "size_corpus": tf.data.Dataset.from_tensor_slices(
            (x_b, {"size": x_b[:, 1] - x_b[:, 2]})),
    }
    sampling = DynamicSampling({"size": ("loss/size", 1e-6),
                                "species": ("loss/species", 1e-6)})
    train = mix(corpora, strategy="dynamic", sampler=sampling, seed=0)
    model = build()
    start = model.get_weights()
    history = model.fit(train.batch(16), steps_per_epoch=2, epochs=3, verbose=0,
                        callbacks=[sampling])
    return {
        "start": [w.tolist() for w in start],
        "weights": [w.tolist() for w in model.get_weights()],
        "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
        "sampler": [[float(h[n]) for n in sorted(h)] for h in sampling.history],
    }


result = {name: run(name) for name in WEIGHTINGS}
result["dynamic_sampling"] = run_dynamic_sampling()
result["replicas"] = strategy.num_replicas_in_sync
with open(out_path, "w") as f:
    json.dump(result, f)
'''

TIMEOUT_S = 900  # 3 processes x 30 runs on 2 cores: minutes when the machine is busy


def _run_processes(commands: list[tuple[list[str], dict]], timeout: float) -> list[str]:
    """Starts all commands at once, waits at most `timeout` seconds in all,
    kills whatever is left; returns each one's combined output."""
    procs = [
        subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for cmd, env in commands
    ]
    outputs = []
    deadline = time.monotonic() + timeout
    try:
        for proc in procs:
            remaining = max(deadline - time.monotonic(), 1.0)
            try:
                outputs.append(proc.communicate(timeout=remaining)[0])
            except subprocess.TimeoutExpired:
                outputs.append(f"timed out after {timeout} s")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    for proc, output in zip(procs, outputs):
        assert proc.returncode == 0, output[-3000:]
    return outputs


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multi_worker")
    script = tmp / "worker.py"
    script.write_text(WORKER_SCRIPT)
    base_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    base_env.pop("TF_CONFIG", None)
    commands = []
    for index, tf_config in enumerate(local_worker_configs(2)):
        env = {**base_env, "TF_CONFIG": tf_config}
        commands.append(
            ([sys.executable, str(script), "worker", str(tmp / f"worker{index}.json")], env)
        )
    commands.append(([sys.executable, str(script), "single", str(tmp / "single.json")], base_env))
    _run_processes(commands, TIMEOUT_S)
    return {
        name: json.loads((tmp / f"{name}.json").read_text())
        for name in ("worker0", "worker1", "single")
    }


def _max_diff(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(u) - np.asarray(v)))) for u, v in zip(a, b))


# AutoLambda splits each worker's share of the batch in two, so its halves
# are not a single device's (test_auto_lambda.py checks a mirrored step
# against one device given the same halves); it is trained here, not compared.
ALL_WEIGHTINGS = [entry.class_name.lower() for entry in registered_weightings()
                  if entry.class_name != "AutoLambda"]
ALL_WEIGHTINGS.append("upgrad_rep_grad")


@pytest.mark.large
@pytest.mark.parametrize("weighting", ALL_WEIGHTINGS)
def test_two_workers_equal_single_device(results, weighting):
    """Weights and History after 4 steps (2 epochs, so DWA's and STCH's
    epoch-end state and the random methods' draws are used too) equal the
    single-device run; for three weightings, evaluate and predict as well."""
    single = results["single"][weighting]
    assert results["single"]["replicas"] == 1
    assert _max_diff(single["weights"], single["start"]) > 1e-2  # the steps moved
    for worker in ("worker0", "worker1"):
        assert results[worker]["replicas"] == 2
        got = results[worker][weighting]
        assert _max_diff(got["start"], single["start"]) == 0.0
        assert _max_diff(got["weights"], single["weights"]) < 1e-5, worker
        assert set(got["history"]) == set(single["history"])
        assert {"loss/species", "loss/size"} <= set(got["history"])
        for key, values in single["history"].items():
            np.testing.assert_allclose(got["history"][key], values, atol=1e-5, err_msg=key)
        assert set(got.get("evaluate", {})) == set(single.get("evaluate", {}))
        for key, value in single.get("evaluate", {}).items():
            np.testing.assert_allclose(got["evaluate"][key], value, atol=1e-5, err_msg=key)
        for key, value in single.get("predict", {}).items():
            np.testing.assert_allclose(got["predict"][key], value, atol=1e-5, err_msg=key)
    assert ("evaluate" in single) == (weighting in ("equal", "uncertainty", "pcgrad"))


@pytest.mark.large
def test_two_workers_agree_on_auto_lambda(results):
    """Both workers end with the same model and task weights (the meta-step
    uses all-reduced gradients), and the weights moved."""
    worker0, worker1 = (results[w]["autolambda"] for w in ("worker0", "worker1"))
    assert _max_diff(worker0["weights"], worker1["weights"]) == 0.0
    assert _max_diff(worker0["weights"], worker0["start"]) > 1e-2


@pytest.mark.large
def test_two_workers_dynamic_sampling_agree(results):
    """The sampler's weights move the same way on both workers (they come
    from the epoch logs, all-reduced), and so do the model's weights.

    Not compared with the single-device run: tf.distribute rewrites the
    input pipeline for each worker (auto-sharding), and the mixture's seeded
    draws then differ from the one-process stream (measured: epoch-1
    sampler weights 0.551/0.449 on both workers, 0.537/0.463 alone)."""
    single = results["single"]["dynamic_sampling"]
    worker0, worker1 = (results[w]["dynamic_sampling"] for w in ("worker0", "worker1"))
    assert len(worker0["sampler"]) == len(single["sampler"]) == 3
    assert worker0["sampler"][0] != worker0["sampler"][-1]  # the weights moved
    assert worker0["sampler"] == worker1["sampler"]
    assert _max_diff(worker0["weights"], worker1["weights"]) == 0.0
    assert _max_diff(worker0["start"], single["start"]) == 0.0
    assert worker0["history"]["loss"][-1] < worker0["history"]["loss"][0]
    # Each epoch's move follows DynamicSampling's rule from the epoch logs
    # that History holds (all-reduced): targets 1e-6 on both losses,
    # smoothing 0.5, min_weight 0.05; data sets sorted (size, species).
    logs = worker0["history"]
    for epoch in (1, 2):
        shortfall = np.array([logs["loss/size"][epoch], logs["loss/species"][epoch]])
        shortfall = np.maximum(0.0, (shortfall - 1e-6) / 1e-6)
        moved = 0.5 * np.array(worker0["sampler"][epoch - 1]) + 0.5 * shortfall / shortfall.sum()
        np.testing.assert_allclose(worker0["sampler"][epoch], 0.05 + 0.9 * moved, rtol=1e-5)


def _tiny_model():
    task = mtl.tasks.Regression("y")
    x = keras.Input((4,))
    return mtl.MultiTaskModel(x, {"y": task.build_head(x)}, tasks=[task])


def test_parameter_server_strategy_is_refused():
    model = _tiny_model()
    model.compile(optimizer="sgd")
    # A real ParameterServerStrategy needs a running cluster; the check only
    # looks at the type. `_distribute_strategy` is where Keras keeps the
    # strategy a model was made under (private, read by `distribute_strategy`).
    strategy = mock.MagicMock(spec=tf.distribute.experimental.ParameterServerStrategy)
    model._distribute_strategy = strategy
    x, y = np.zeros((4, 4), "float32"), {"y": np.zeros((4,), "float32")}
    for call in (
        lambda: model.fit(x, y, verbose=0),
        lambda: model.evaluate(x, y, verbose=0),
        lambda: model.predict(x, verbose=0),
    ):
        with pytest.raises(ValueError, match="ParameterServerStrategy.*MultiWorkerMirrored"):
            call()


def test_single_process_strategies_are_not_multi_worker():
    assert not spans_workers(tf.distribute.get_strategy())
    assert not spans_workers(tf.distribute.OneDeviceStrategy("/cpu:0"))


@pytest.mark.large
def test_cli_train_on_two_workers_equals_one_process(tmp_path):
    """`kerasmtl train` with TF_CONFIG naming two workers (README, "Training
    on several machines"): worker 0 saves and exports, worker 1 writes
    nothing where it runs, and the saved model equals a one-process run's."""
    configs = local_worker_configs(2)
    base_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    base_env.pop("TF_CONFIG", None)
    argv = [sys.executable, "-m", "kerasmtl", "train", "tabular_mtl_mlp", "--data",
            "synthetic", "--epochs", "2", "--weighting", "gls",
            "--save", "m.keras", "--export-dir", "exported"]
    commands = []
    for name in ("worker0", "worker1", "single"):
        (tmp_path / name).mkdir()
        env = dict(base_env)
        if name != "single":
            env["TF_CONFIG"] = configs[int(name[-1])]
        # Each process runs in its own directory (the relative paths above).
        commands.append((["sh", "-c", f'cd "{tmp_path / name}" && exec "$@"', "sh", *argv],
                         env))
    outputs = _run_processes(commands, TIMEOUT_S)
    assert "exported SavedModel: exported/1" in outputs[0]
    assert sorted(os.listdir(tmp_path / "worker1")) == []
    assert (tmp_path / "worker0" / "exported" / "1" / "saved_model.pb").is_file()
    got, want = (keras.models.load_model(tmp_path / name / "m.keras").get_weights()
                 for name in ("worker0", "single"))
    assert _max_diff(got, want) < 1e-5
    # Both workers print the one-process run's dev figures (4 decimals).
    figures = [_dev_figures(output) for output in outputs]
    assert figures[2] and set(figures[0]) == set(figures[1]) == set(figures[2])
    for key, value in figures[2].items():
        assert abs(figures[0][key] - value) <= 2e-4 and abs(figures[1][key] - value) <= 2e-4


def _dev_figures(output: str) -> dict[str, float]:
    report = output.split("dev set:")[1].split("saved")[0]
    figures = {}
    for line in report.strip().splitlines():
        task, *pairs = line.split()
        for pair in pairs:
            key, value = pair.rstrip(",").split("=")
            figures[f"{task}/{key}"] = float(value)
    return figures


@pytest.mark.parametrize("config, message", [
    ("{not json", "not a cluster description.*e.g. TF_CONFIG="),
    ('{"cluster": {"worker": ["a:1", "b:1"]}}', "not a cluster description"),
    ('{"cluster": {"worker": ["a:1"], "ps": ["b:1"]}, "task": {"type": "worker", '
     '"index": 0}}', r"task types \['ps'\].*MultiWorkerMirroredStrategy only"),
    ('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 2}}',
     "task index 2 is not a worker of its cluster"),
])
def test_bad_tf_config_is_refused_by_the_cli(monkeypatch, capsys, config, message):
    from kerasmtl import cli

    monkeypatch.setenv("TF_CONFIG", config)
    code = cli.main(["train", "tabular_mtl_mlp", "--data", "synthetic", "--epochs", "1"])
    assert code == 2
    assert re.search(message, capsys.readouterr().err)


def test_a_one_worker_config_is_no_cluster_and_a_chief_counts_as_a_worker():
    config = '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}'
    assert cluster_from_tf_config({"TF_CONFIG": config}) is None
    chief = ('{"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, '
             '"task": {"type": "worker", "index": 0}}')
    assert cluster_from_tf_config({"TF_CONFIG": chief}) == (2, 1)
