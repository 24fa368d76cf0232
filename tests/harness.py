"""Shared test harness, in the spirit of keras' `run_layer_test` and keras-hub's
`run_model_saving_test`: each component test states its inputs and expected
numbers; the harness does the round trips every component must survive."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import textwrap

import keras
import numpy as np

import kerasmtl as mtl


def run_weighting_test(
    weighting: mtl.weighting.LossWeighting,
    losses: dict[str, float],
    expected_total: float,
    expected_weights: dict[str, float] | None = None,
    present: dict[str, float] | None = None,
    training: bool = False,
    atol: float = 1e-5,
):
    """Checks a weighting layer's output and weights by hand-computed values,
    then its config round trip (a fresh layer from config gives the same total
    when its variables are copied over)."""
    total = float(weighting(losses, present, training=training))
    np.testing.assert_allclose(total, expected_total, atol=atol)
    if expected_weights is not None:
        got = weighting.current_weights()
        for name, value in expected_weights.items():
            np.testing.assert_allclose(got[name], value, atol=atol, err_msg=name)
    config = keras.saving.serialize_keras_object(weighting)
    clone = keras.saving.deserialize_keras_object(config)
    assert type(clone) is type(weighting)
    assert as_json(clone.get_config()) == as_json(weighting.get_config())
    if not clone.built:
        clone.build({n: () for n in weighting.task_names})
    assert clone.task_names == weighting.task_names
    for src, dst in zip(weighting.weights, clone.weights):
        dst.assign(src)
    if not training:
        np.testing.assert_allclose(
            float(clone(losses, present, training=False)), total, atol=atol
        )
    return total


def run_model_saving_test(model: keras.Model, x, tmp_path, atol: float = 1e-6):
    """Saves `model` to `.keras`, loads it and checks config and predictions."""
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(model)
    assert as_json(loaded.get_config()) == as_json(model.get_config())
    expected, got = model.predict(x, verbose=0), loaded.predict(x, verbose=0)
    assert set(expected) == set(got)
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], atol=atol, err_msg=key)
    return loaded


def contract_model(units: int = 32) -> mtl.MultiTaskModel:
    """The foundation issue's contract model: three kinds of task on one trunk,
    uncertainty weighting."""
    tasks = [
        mtl.tasks.Classification("species", num_classes=3),
        mtl.tasks.Regression("size"),
        mtl.tasks.MultiLabel("tags", num_labels=5),
    ]
    inputs = keras.Input((8,), name="features")
    shared = keras.layers.Dense(units, activation="relu")(inputs)
    return mtl.sharing.hard_sharing(
        inputs, shared, tasks, weighting=mtl.weighting.Uncertainty()
    )


def tiny_model(tasks, weighting=None, num_features: int = 8, units: int = 8):
    """A hard-sharing model with a one-layer trunk, for component tests."""
    inputs = keras.Input((num_features,), name="features")
    shared = keras.layers.Dense(units, activation="relu", name="trunk")(inputs)
    return mtl.sharing.hard_sharing(inputs, shared, tasks, weighting=weighting)


def assert_finite_logs(history_or_logs):
    logs = getattr(history_or_logs, "history", history_or_logs)
    for key, values in logs.items():
        values = np.atleast_1d(np.asarray(values, dtype=float))
        assert np.all(np.isfinite(values)), f"{key} is not finite: {values}"


def as_json(config):
    """Configs compare equal after a `.keras` round trip only as JSON (tuples
    become lists there)."""
    return json.loads(json.dumps(config, default=str))


# The prelude of the MirroredStrategy scripts: two logical CPU devices, the
# synthetic tabular data (replica 0's shard has no `size` label), and
# `single_and_mirrored(make)`: one SGD step on the 16 examples on one device
# and on two replicas from the same start, compared.
MIRRORED_PRELUDE = textwrap.dedent(
    """
    import json, os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np
    import kerasmtl as mtl
    from kerasmtl.data import synthetic_tabular
    from kerasmtl.tasks import synthetic_tabular_tasks

    x, y = synthetic_tabular(16, missing_rate=0.2, seed=0)
    y["size"][:8] = np.nan      # replica 0's shard has no size label at all
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])

    def build(make):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((8,))
        shared = keras.layers.Dense(4, activation="relu")(inputs)
        return mtl.sharing.hard_sharing(
            inputs, shared, synthetic_tabular_tasks(), weighting=make())

    def max_diff(a, b):
        return max(float(np.max(np.abs(u - v))) for u, v in zip(a, b))

    def single_and_mirrored(make):
        def fit(model):
            logs = model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
            return {k: v[0] for k, v in logs.history.items() if k.startswith("loss")}

        single = build(make)
        single.compile(optimizer=keras.optimizers.SGD(0.5))
        start = single.get_weights()
        loss_single = fit(single)
        with strategy.scope():
            dist = build(make)
            dist.set_weights(start)
            dist.compile(optimizer=keras.optimizers.SGD(0.5))
        loss_dist = fit(dist)
        return {
            "max_weight_diff": max_diff(single.get_weights(), dist.get_weights()),
            "max_step": max_diff(single.get_weights(), start),
            "loss_single": loss_single,
            "loss_dist": loss_dist,
        }
    """
)


def run_mirrored_script(body: str, timeout: int = 600) -> dict:
    """Runs `MIRRORED_PRELUDE` then `body` in a fresh Python (logical devices
    must be set before TensorFlow starts); returns the dict that `body` prints
    as `RESULT <json>`."""
    script = MIRRORED_PRELUDE + textwrap.dedent(body)
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT ") :])


@contextlib.contextmanager
def running_uvicorn(config):
    """Runs a `uvicorn.Config`'s app in a thread on a free loopback port;
    yields its URL and stops it afterwards."""
    import socket
    import threading
    import time

    import uvicorn

    # IPPROTO_TCP, not socket()'s 0: asyncio sets TCP_NODELAY only on sockets
    # that say TCP, and without it each answer waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def running_server(app):
    """`app` served by plain uvicorn (no connection guard), as a context
    manager yielding its URL."""
    import uvicorn

    return running_uvicorn(uvicorn.Config(app, log_level="warning", access_log=False))
