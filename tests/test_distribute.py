"""MultiTaskModel under tf.distribute.MirroredStrategy (2 logical CPU devices).

One SGD step on two replicas must equal the single-device step on the same
global batch, also when the shards hold different numbers of known labels.
Runs in a subprocess: logical devices must be set before TensorFlow starts.
"""

import pytest

from harness import run_mirrored_script

SCRIPT = """
y["tags"][8:, :3] = -1      # replica 1's shard knows fewer tag elements
weightings = {
    "equal": mtl.weighting.Equal,
    "uncertainty": lambda: mtl.weighting.Uncertainty(init_log_variance=0.3),
    "static": lambda: mtl.weighting.Static({"species": 1.0, "size": 2.0, "tags": 0.5}),
}
out = {name: single_and_mirrored(make) for name, make in weightings.items()}
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def results():
    return run_mirrored_script(SCRIPT)


@pytest.mark.parametrize("weighting", ["equal", "uncertainty", "static"])
def test_mirrored_step_equals_single_device_step(results, weighting):
    result = results[weighting]
    assert result["max_step"] > 1e-3  # the step moved the weights
    assert result["max_weight_diff"] < 1e-5, result
    assert {"loss", "loss/species", "loss/size", "loss/tags"} <= set(result["loss_single"])
    for key, value in result["loss_single"].items():
        assert abs(result["loss_dist"][key] - value) < 1e-5, (key, result)
