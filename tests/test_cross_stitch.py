"""Cross-stitch networks: the unit by hand, identity init = independent towers,
training with missing labels, round trip and bad input."""

import keras
import numpy as np
import pytest

import kerasmtl as mtl
from harness import assert_finite_logs, run_model_saving_test
from kerasmtl.data import synthetic_tabular
from kerasmtl.layers.cross_stitch_unit import CrossStitch


def tower():
    return [keras.layers.Dense(4, activation="relu"), keras.layers.Dense(3)]


def two_tasks():
    return [mtl.tasks.Classification("species", 3), mtl.tasks.Regression("size")]


def test_unit_by_hand_per_layer_and_per_channel():
    a = np.array([[1.0, 2.0]], "float32")
    b = np.array([[3.0, 5.0]], "float32")
    unit = CrossStitch(self_weight=0.9)
    out_a, out_b = unit([a, b])
    np.testing.assert_allclose(out_a, [[0.9 * 1 + 0.1 * 3, 0.9 * 2 + 0.1 * 5]], rtol=1e-6)
    np.testing.assert_allclose(out_b, [[0.1 * 1 + 0.9 * 3, 0.1 * 2 + 0.9 * 5]], rtol=1e-6)
    three = CrossStitch(self_weight=0.5)
    three.build([(None, 2)] * 3)
    np.testing.assert_allclose(three.alpha.numpy().sum(1), 1.0)  # alpha_D = 0.25
    np.testing.assert_allclose(three.alpha.numpy()[0], [0.5, 0.25, 0.25])
    per_channel = CrossStitch(per_channel=True)
    per_channel.build([(None, 2), (None, 2)])
    # channel 0 swaps the towers, channel 1 keeps them
    per_channel.alpha.assign(np.array([[[0, 1], [1, 0]], [[1, 0], [0, 1]]], "float32"))
    out_a, out_b = per_channel([a, b])
    np.testing.assert_allclose(out_a, [[3.0, 2.0]])
    np.testing.assert_allclose(out_b, [[1.0, 5.0]])


def test_identity_init_is_independent_towers():
    x_data = np.random.default_rng(0).normal(size=(4, 8)).astype("float32")
    towers = {"species": tower(), "size": tower()}
    model = mtl.sharing.cross_stitch(
        keras.Input((8,)), towers, two_tasks(), self_weight=1.0
    )
    expected = {k: np.asarray(v) for k, v in model(x_data).items()}
    by_hand = x_data
    for layer in towers["species"]:
        by_hand = layer(by_hand)
    by_hand = model.get_layer("species")(by_hand)
    np.testing.assert_allclose(expected["species"], by_hand, atol=1e-6)
    for layer in towers["size"]:  # the other tower cannot change this task
        layer.set_weights([w * 0 + 7.0 for w in layer.get_weights()])
    got = {k: np.asarray(v) for k, v in model(x_data).items()}
    np.testing.assert_allclose(got["species"], expected["species"], atol=1e-6)
    assert not np.allclose(got["size"], expected["size"])


def test_trains_with_missing_labels_and_round_trips(tmp_path):
    x, y = synthetic_tabular(32, seed=0)
    y = {"species": y["species"], "size": y["size"]}
    model = mtl.sharing.cross_stitch(
        keras.Input((8,), name="features"), tower, two_tasks(), stitch_after=[0, 1],
        per_channel=True,
    )
    model.compile(optimizer=keras.optimizers.Adam(0.05), run_eagerly=True)
    alpha = model.get_layer("cross_stitch_0").alpha.numpy().copy()
    assert_finite_logs(model.fit(x, y, batch_size=16, epochs=1, verbose=0))
    assert not np.allclose(model.get_layer("cross_stitch_0").alpha.numpy(), alpha)
    loaded = run_model_saving_test(model, x[:4], tmp_path, atol=1e-5)
    assert loaded.get_layer("cross_stitch_1").per_channel


def test_bad_input():
    x, tasks = keras.Input((8,)), two_tasks()
    with pytest.raises(ValueError, match=r"indices in \[0, 1\].*stitch_after=\[2\]"):
        mtl.sharing.cross_stitch(x, tower, tasks, stitch_after=[2])
    with pytest.raises(ValueError, match=r"stitch_after=\[-1\]"):
        mtl.sharing.cross_stitch(x, tower, tasks, stitch_after=[-1])
    with pytest.raises(ValueError, match=r"`self_weight`.*self_weight=1.5"):
        mtl.sharing.cross_stitch(x, tower, tasks, self_weight=1.5)
    with pytest.raises(ValueError, match="at least two tasks"):
        mtl.sharing.cross_stitch(x, tower, tasks[:1])
    with pytest.raises(ValueError, match="'species' has 2 layers.*'size' has 1"):
        mtl.sharing.cross_stitch(x, [tower(), tower()[:1]], tasks)
    shared = tower()
    with pytest.raises(ValueError, match="reuses a layer of another tower"):
        mtl.sharing.cross_stitch(x, [shared, shared], tasks)
    widths = iter([4, 5])
    with pytest.raises(ValueError, match=r"tower 0 gives \(None, 4\), tower 1 gives"):
        mtl.sharing.cross_stitch(
            x, lambda: [keras.layers.Dense(next(widths))], tasks, stitch_after=[0]
        )
    with pytest.raises(ValueError, match="one tower per task"):
        mtl.sharing.cross_stitch(x, {"species": tower()}, tasks)
    with pytest.raises(ValueError, match="task 'size' must be a non-empty list"):
        mtl.sharing.cross_stitch(x, {"species": tower(), "size": "dense"}, tasks)
    named = [[keras.layers.Dense(2, name="size")], [keras.layers.Dense(2)]]
    with pytest.raises(ValueError, match="task 'size' has the same name as a layer"):
        mtl.sharing.cross_stitch(x, named, tasks)


def test_towers_as_a_function_of_the_inputs_get_a_clear_error():
    x, tasks = keras.Input((8,)), two_tasks()

    def tower_fn(inputs):  # the form soft_sharing takes
        return keras.layers.Dense(4)(inputs)

    with pytest.raises(ValueError, match=r"`towers` takes an argument.*lambda: \["):
        mtl.sharing.cross_stitch(x, tower_fn, tasks)
    # A factory of one layer is a tower of depth 1.
    model = mtl.sharing.cross_stitch(x, lambda: keras.layers.Dense(4), tasks)
    assert model.get_layer("cross_stitch_0").alpha.shape == (2, 2)
