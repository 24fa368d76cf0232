"""Tests for `kerasmtl.layers.backbones`: the image trunk's shapes, the
rescaling layer's numbers and size checks, and argument errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasmtl.layers.backbones import ImageRescaling, image_trunk, stride2_decoder

TINY = {"widths": (4, 4, 8, 8), "fpn_channels": 4}


def test_resnet_trunk_is_one_stride_4_map():
    image = keras.Input((None, None, 3), name="image")
    features = image_trunk(image, **TINY)
    model = keras.Model(image, features)
    out = model(np.zeros((2, 64, 96, 3), "float32"))
    assert tuple(out.shape) == (2, 16, 24, 4)
    # The backbone's stages sit at strides 4, 8, 16, 32 (64x96 input).
    for stage, (height, width, channels) in enumerate(
            [(16, 24, 4), (8, 12, 4), (4, 6, 8), (2, 3, 8)], start=1):
        layer = model.get_layer(f"trunk_stage{stage}_block1_out")
        assert tuple(layer.output.shape[-1:]) == (channels,)
        sub = keras.Model(image, layer.output)
        assert tuple(sub(np.zeros((1, 64, 96, 3))).shape) == (1, height, width, channels)


def test_mobilenet_trunk_shape():
    image = keras.Input((64, 64, 3), name="image")
    features = image_trunk(image, backbone="mobilenet_v2", fpn_channels=4)
    assert tuple(features.shape) == (None, 16, 16, 4)
    rescaling = [layer for layer in keras.Model(image, features).layers
                 if isinstance(layer, ImageRescaling)]
    assert len(rescaling) == 1 and rescaling[0].offset == -1.0  # MobileNet's [-1, 1]


@pytest.mark.parametrize("backbone", ["resnet_lite", "mobilenet_v2"])
def test_stride2_skip_and_decoder(backbone):
    image = keras.Input((None, None, 3), name="image")
    features, skip = image_trunk(image, backbone=backbone, return_stride2=True, **TINY)
    decoded = stride2_decoder(features, skip, channels=6)
    model = keras.Model(image, [features, skip, decoded])
    out = model(np.zeros((1, 64, 96, 3), "float32"))
    assert tuple(out[0].shape) == (1, 16, 24, 4)
    assert tuple(out[1].shape[:3]) == (1, 32, 48)
    assert tuple(out[2].shape) == (1, 32, 48, 6)
    with pytest.raises(ValueError, match=r"`channels`. Expected a positive int. "
                       r"Received: channels=0"):
        stride2_decoder(features, skip, channels=0)


def test_rescaling_numbers_and_config():
    layer = ImageRescaling(scale=1 / 127.5, offset=-1.0, size_multiple=2, name="r")
    image = np.array([0, 127, 255, 51], "uint8").reshape(1, 2, 2, 1)
    # 0 -> -1; 127 -> 127/127.5 - 1 = -0.00392; 255 -> 1; 51 -> -0.6.
    np.testing.assert_allclose(
        layer(image).numpy().ravel(), [-1.0, -0.0039216, 1.0, -0.6], atol=1e-6)
    clone = ImageRescaling.from_config(layer.get_config())
    assert (clone.scale, clone.offset, clone.size_multiple) == (layer.scale, -1.0, 2)


def test_rescaling_rejects_sizes_not_divisible():
    layer = ImageRescaling(name="rescaling")
    with pytest.raises(ValueError, match=r"height x width 50 x 64; both must be "
                       r"multiples of 32.*Pad or resize"):
        layer(np.zeros((1, 50, 64, 3), "float32"))
    # Unknown sizes in a graph: a run-time assertion with the same advice.
    fn = tf.function(layer, input_signature=[tf.TensorSpec((None, None, None, 3))])
    with pytest.raises(tf.errors.InvalidArgumentError, match="multiples of 32"):
        fn(tf.zeros((1, 64, 40, 3)))
    assert tuple(fn(tf.zeros((1, 64, 32, 3))).shape) == (1, 64, 32, 3)


@pytest.mark.parametrize("kwargs, match", [
    ({"backbone": "vgg"}, r"Expected one of \('resnet_lite', 'mobilenet_v2'\)"),
    ({"widths": (4, 8)}, r"Expected 4 positive ints.*widths=\(4, 8\)"),
    ({"blocks": (1, 0, 1, 1)}, r"blocks=\(1, 0, 1, 1\)"),
    ({"fpn_channels": 0}, r"fpn_channels=0"),
])
def test_trunk_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        image_trunk(keras.Input((None, None, 3)), **kwargs)


def test_rescaling_argument_error():
    with pytest.raises(ValueError, match=r"size_multiple=0"):
        ImageRescaling(size_multiple=0)


def test_standardize_gives_each_image_zero_mean_and_unit_variance():
    rng = np.random.default_rng(0)
    dim = rng.integers(0, 40, (1, 32, 32, 3)).astype("float32")
    bright = (dim * 4 + 60).astype("float32")  # same picture, other stain scale
    layer = ImageRescaling(standardize=True)
    out = layer(np.concatenate([dim, bright])).numpy()
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(1, 2, 3)), 1, atol=1e-4)
    np.testing.assert_allclose(out[0], out[1], atol=1e-4)
    # A flat image is not divided by zero.
    assert np.isfinite(layer(np.full((1, 32, 32, 3), 7, "uint8")).numpy()).all()
    assert ImageRescaling.from_config(layer.get_config()).standardize is True
