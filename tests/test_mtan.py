"""MTAN: the attention module, maps in [0, 1] with the feature maps' shapes,
training with missing labels, round trip and bad input."""

import keras
import numpy as np
import pytest

import kerasmtl as mtl
from harness import assert_finite_logs, run_model_saving_test
from kerasmtl.layers.task_attention import TaskAttention


def blocks():
    return [
        keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="block_0"),
        keras.Sequential(
            [keras.layers.Conv2D(6, 3, padding="same", activation="relu"),
             keras.layers.MaxPooling2D(2)],
            name="block_1",
        ),
    ]


def two_tasks():
    return [mtl.tasks.Classification("species", 3), mtl.tasks.Regression("size")]


def test_attention_module_masks_the_shared_map():
    shared = np.random.default_rng(0).normal(size=(2, 4, 4, 3)).astype("float32")
    previous = np.ones((2, 8, 8, 5), "float32")
    module = TaskAttention(hidden_channels=2)
    attended, mask = module([shared, previous])
    mask = np.asarray(mask)
    assert mask.shape == shared.shape and np.all((mask >= 0) & (mask <= 1))
    np.testing.assert_allclose(attended, shared * mask, rtol=1e-6)
    # With the last 1x1 conv zeroed, the mask is sigmoid(0) = 0.5 everywhere.
    kernel, bias = module.mask_conv_2.get_weights()
    module.mask_conv_2.set_weights([np.zeros_like(kernel), np.zeros_like(bias)])
    attended, mask = module([shared, previous])
    np.testing.assert_allclose(mask, 0.5)
    np.testing.assert_allclose(attended, 0.5 * shared, rtol=1e-6)
    # The 8x8 map is pooled by 2 before it is concatenated with the 4x4 one.
    assert module.previous_pool.pool_size == (2, 2)
    assert module.mask_conv_1.kernel.shape == (1, 1, 6, 2)
    with pytest.raises(ValueError, match=r"integer multiple"):
        TaskAttention()([shared, np.ones((2, 6, 6, 3), "float32")])
    with pytest.raises(ValueError, match=r"`hidden_channels`.*hidden_channels=0"):
        TaskAttention(hidden_channels=0)


def test_trains_with_missing_labels_round_trips_and_exposes_maps(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 8, 8, 3)).astype("float32")
    y = {
        "species": np.array([0, -1, 2, 1, -1, 0, 1, 2]),
        "size": np.array([0.5, 1.0, np.nan, -1.0, 0.0, np.nan, 2.0, 1.0]),
    }
    model = mtl.sharing.mtan(keras.Input((8, 8, 3), name="image"), blocks(), two_tasks())
    model.compile(optimizer=keras.optimizers.Adam(0.01), run_eagerly=True)
    assert_finite_logs(model.fit(x, y, batch_size=4, epochs=1, verbose=0))
    maps = mtl.sharing.attention_maps(model, x[:3])
    assert sorted(maps) == ["size", "species"]
    for task_maps in maps.values():
        assert [m.shape for m in task_maps] == [(3, 8, 8, 4), (3, 4, 4, 6)]
        assert all(np.all((m >= 0) & (m <= 1)) for m in task_maps)
    assert not np.allclose(maps["species"][1], maps["size"][1])
    run_model_saving_test(model, x[:4], tmp_path, atol=1e-5)


def test_bad_input():
    tasks = two_tasks()
    with pytest.raises(ValueError, match=r"image features.*\(None, 8\).*`features=`"):
        mtl.sharing.mtan(keras.Input((8,)), blocks(), tasks)
    image = keras.Input((8, 8, 3))
    flat = [keras.layers.Conv2D(2, 3), keras.layers.Flatten()]
    with pytest.raises(ValueError, match="shared block 1.*must output an image"):
        mtl.sharing.mtan(image, flat, tasks)
    with pytest.raises(ValueError, match="non-empty list"):
        mtl.sharing.mtan(image, [], tasks)
    with pytest.raises(ValueError, match=r"`pooling`.*pooling='sum'"):
        mtl.sharing.mtan(image, blocks(), tasks, pooling="sum")
    named = [keras.layers.Conv2D(2, 3, name="species")]
    with pytest.raises(ValueError, match="task 'species' has the same name as a layer"):
        mtl.sharing.mtan(image, named, tasks)
    x = keras.Input((4,))
    with pytest.raises(ValueError, match="no task attention layers.*mtan"):
        mtl.sharing.attention_maps(
            mtl.sharing.hard_sharing(x, x, [mtl.tasks.Regression("a")]), np.ones((1, 4))
        )


def test_blocks_from_a_factory_or_a_function_of_the_inputs():
    image, tasks = keras.Input((8, 8, 3)), two_tasks()
    model = mtl.sharing.mtan(image, blocks, tasks)  # a factory: called once
    assert tuple(model.get_layer("size_attention_1").output[1].shape) == (None, 4, 4, 6)

    def features_fn(inputs):
        return keras.layers.Conv2D(4, 3, padding="same")(inputs)

    with pytest.raises(ValueError, match="`shared_blocks` takes an argument.*lambda: "):
        mtl.sharing.mtan(image, features_fn, tasks)
