"""MultiTaskModel under tf.distribute.MirroredStrategy (2 logical CPU devices).

One SGD step on two replicas must equal the single-device step on the same
global batch, also when the shards hold different numbers of known labels.
Runs in a subprocess: logical devices must be set before TensorFlow starts.
"""

import json
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np
    import kerasmtl as mtl
    from kerasmtl.data import synthetic_tabular, synthetic_tabular_tasks

    x, y = synthetic_tabular(16, missing_rate=0.2, seed=0)
    y["size"][:8] = np.nan      # replica 0's shard has no size label at all
    y["tags"][8:, :3] = -1      # replica 1's shard knows fewer tag elements
    weightings = {
        "equal": mtl.weighting.Equal,
        "uncertainty": lambda: mtl.weighting.Uncertainty(init_log_variance=0.3),
        "static": lambda: mtl.weighting.Static({"species": 1.0, "size": 2.0, "tags": 0.5}),
    }

    def build(make):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((8,))
        shared = keras.layers.Dense(4, activation="relu")(inputs)
        return mtl.sharing.hard_sharing(
            inputs, shared, synthetic_tabular_tasks(), weighting=make())

    out = {}
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    for name, make in weightings.items():
        single = build(make)
        single.compile(optimizer=keras.optimizers.SGD(0.5))
        start = single.get_weights()
        logs_single = single.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0).history
        with strategy.scope():
            dist = build(make)
            dist.set_weights(start)
            dist.compile(optimizer=keras.optimizers.SGD(0.5))
        logs_dist = dist.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0).history
        out[name] = {
            "max_weight_diff": max(
                float(np.max(np.abs(a - b)))
                for a, b in zip(single.get_weights(), dist.get_weights())),
            "max_step": max(
                float(np.max(np.abs(a - b)))
                for a, b in zip(single.get_weights(), start)),
            "loss_single": {k: v[0] for k, v in logs_single.items() if k.startswith("loss")},
            "loss_dist": {k: v[0] for k, v in logs_dist.items() if k.startswith("loss")},
        }
    print("RESULT " + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.parametrize("weighting", ["equal", "uncertainty", "static"])
def test_mirrored_step_equals_single_device_step(results, weighting):
    result = results[weighting]
    assert result["max_step"] > 1e-3  # the step moved the weights
    assert result["max_weight_diff"] < 1e-5, result
    for key, value in result["loss_single"].items():
        assert abs(result["loss_dist"][key] - value) < 1e-5, (key, result)
