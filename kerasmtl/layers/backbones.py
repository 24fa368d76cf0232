"""Image trunks: a backbone and an FPN-lite neck down to one stride-4 map.

`image_trunk(image)` builds, on a Keras image input of 0..255 pixels:

- `ImageRescaling`: casts to float, checks that height and width are
  multiples of the backbone's coarsest stride (32) and rescales the pixels;
- a backbone with feature maps at strides 4, 8, 16 and 32: `"resnet_lite"`, a
  small ResNet (He et al., "Deep Residual Learning for Image Recognition",
  CVPR 2016) of basic blocks, or `"mobilenet_v2"`, `keras.applications.MobileNetV2`
  (Sandler et al., CVPR 2018) without pretrained weights;
- an FPN-lite neck (Lin et al., "Feature Pyramid Networks for Object
  Detection", CVPR 2017): 1x1 lateral convolutions to `fpn_channels`, a
  top-down path of nearest upsampling and addition, and one 3x3 smoothing
  convolution on the finest level only, since the heads read only that map.

Detection (CenterNet-style) and segmentation heads both read the stride-4 map;
`stride2_decoder` adds a U-Net-style step to stride 2 (the backbone's stride-2
activation as the skip) for a segmentation head that keeps small objects' edges.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

STRIDE = 4  # the stride of the trunk's output map
SIZE_MULTIPLE = 32  # the coarsest backbone stride: image sizes must divide by it
# Keras' default 0.99 leaves the moving statistics far behind the weights in
# short CPU trainings (a few hundred steps): on synthetic shapes, after 190
# steps, inference-mode mIoU was 0.06 where training-mode batch statistics gave 0.21.
BN_MOMENTUM = 0.9
BACKBONES = ("resnet_lite", "mobilenet_v2")
# MobileNetV2 layers whose outputs are at strides 2, 4, 8, 16, 32.
_MOBILENET_TAPS = (
    "Conv1_relu", "block_3_expand_relu", "block_6_expand_relu", "block_13_expand_relu", "out_relu",
)


@keras.saving.register_keras_serializable(package="kerasmtl")
class ImageRescaling(keras.layers.Layer):
    """Casts images to float, checks their size and rescales their pixels.

    `output = cast(image, float) * scale + offset`. An image whose height or
    width is not a multiple of `size_multiple` raises a ValueError when the
    size is known while tracing (fit, evaluate, predict on arrays); with
    unknown sizes, a TensorFlow assertion fails at run time with the same
    message. `kerasmtl.export` finds this layer behind an input and gives the
    SavedModel an image signature (uint8, any size, padded to the multiple).

    Args:
        scale: float. Multiplier of the pixels. Defaults to `1/255` (0..255
            pixels to 0..1).
        offset: float. Added after scaling. Defaults to `0.0`.
        size_multiple: int. Height and width must be multiples of it (the
            coarsest stride of the backbone). Defaults to `32`.
        standardize: bool. Then subtract each image's mean and divide by its
            standard deviation (over height, width and channels, floored at
            `1e-3` of the rescaled range), after rescaling: images of very
            different brightness and contrast (dim fluorescence, bright
            brightfield) reach the backbone on one scale. Padding pixels (0)
            count in the statistics. Defaults to `False`.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Examples:

    >>> import numpy as np
    >>> layer = ImageRescaling(size_multiple=2, name="rescale")
    >>> float(layer(np.full((1, 2, 2, 3), 255, "uint8")).numpy().max())
    1.0
    >>> try:
    ...     layer(np.zeros((1, 3, 2, 3), "uint8"))
    ... except ValueError as error:
    ...     print("height x width 3 x 2; both must be multiples of 2" in str(error))
    True
    """

    def __init__(self, scale: float = 1.0 / 255.0, offset: float = 0.0,
                 size_multiple: int = SIZE_MULTIPLE, standardize: bool = False,
                 **kwargs):
        super().__init__(**kwargs)
        if isinstance(size_multiple, bool) or not isinstance(size_multiple, int) or (
                size_multiple < 1):
            raise ValueError(
                "Invalid value for argument `size_multiple`. Expected an int >= 1. "
                f"Received: size_multiple={size_multiple!r}"
            )
        self.scale = float(scale)
        self.offset = float(offset)
        self.size_multiple = size_multiple
        self.standardize = bool(standardize)

    def call(self, images):
        height, width = images.shape[1], images.shape[2]
        if height is not None and width is not None:
            if height % self.size_multiple or width % self.size_multiple:
                raise ValueError(self._size_message(f"{height} x {width}"))
        elif keras.backend.backend() == "tensorflow":
            images = _assert_divisible(images, self.size_multiple,
                                       self._size_message("shown after this message"))
        images = ops.cast(images, self.compute_dtype)
        images = images * ops.cast(self.scale, self.compute_dtype) + ops.cast(
            self.offset, self.compute_dtype)
        if not self.standardize:
            return images
        # Statistics in float32 even under mixed precision (sums of many pixels).
        x = ops.cast(images, "float32")
        mean = ops.mean(x, axis=(1, 2, 3), keepdims=True)
        std = ops.sqrt(ops.mean(ops.square(x - mean), axis=(1, 2, 3), keepdims=True))
        floor = 1e-3 * 255.0 * abs(self.scale)
        return ops.cast((x - mean) / ops.maximum(std, floor), self.compute_dtype)

    def _size_message(self, size: str) -> str:
        return (
            f"Layer '{self.name}' received images of height x width {size}; "
            f"both must be multiples of {self.size_multiple} (the backbone's "
            "coarsest stride). Pad or resize the images (e.g. "
            "`kerasmtl.data.vision_dataset(image_size=...)`); the exported "
            "SavedModel pads any size itself."
        )

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "offset": self.offset,
                "size_multiple": self.size_multiple, "standardize": self.standardize}


def _assert_divisible(images, multiple: int, message: str):
    import tensorflow as tf  # the check needs a graph assertion: TF only

    shape = tf.shape(images)
    ok = tf.logical_and(tf.equal(shape[1] % multiple, 0), tf.equal(shape[2] % multiple, 0))
    check = tf.debugging.Assert(ok, [message, shape[1], shape[2]])
    with tf.control_dependencies([check]):
        return tf.identity(images)


def image_trunk(
    image_input,
    *,
    backbone: str = "resnet_lite",
    widths: Sequence[int] = (32, 64, 128, 256),
    blocks: Sequence[int] = (1, 1, 1, 1),
    fpn_channels: int = 64,
    alpha: float = 0.35,
    standardize: bool = False,
    return_stride2: bool = False,
    name: str = "trunk",
):
    """The shared stride-4 feature map of an image (backbone + FPN-lite neck).

    Args:
        image_input: Keras tensor `(batch, H, W, 3)` of 0..255 pixels (uint8
            or float), H and W multiples of 32.
        backbone: `"resnet_lite"` or `"mobilenet_v2"`. Defaults to
            `"resnet_lite"`.
        widths: 4 ints. Channels of the ResNet stages at strides 4, 8, 16, 32
            (ignored by MobileNetV2). Defaults to `(32, 64, 128, 256)`.
        blocks: 4 ints. Residual blocks per ResNet stage. Defaults to
            `(1, 1, 1, 1)`.
        fpn_channels: int. Channels of the neck and of the output map.
            Defaults to `64`.
        alpha: float. MobileNetV2 width multiplier (ignored by ResNet).
            Defaults to `0.35`, its smallest published width.
        standardize: bool. Standardize each image (zero mean, unit standard
            deviation) before the backbone: `ImageRescaling(standardize=True)`.
            Defaults to `False`.
        return_stride2: bool. Also return the backbone's stride-2 activation
            (the ResNet stem, MobileNetV2's first convolution), the skip
            connection of `stride2_decoder`. Defaults to `False`.
        name: str. Prefix of the trunk's layer names. Defaults to `"trunk"`.

    Returns:
        A Keras tensor `(batch, H/4, W/4, fpn_channels)`; with
        `return_stride2`, the pair `(that map, the stride-2 activation)`.

    Examples:

    >>> import keras
    >>> image = keras.Input((64, 64, 3), name="image")
    >>> image_trunk(image, widths=(4, 8, 8, 8), fpn_channels=8).shape
    (None, 16, 16, 8)
    """
    if backbone not in BACKBONES:
        raise ValueError(
            f"Invalid value for argument `backbone`. Expected one of {BACKBONES}. "
            f"Received: backbone={backbone!r}"
        )
    for arg, value in (("widths", widths), ("blocks", blocks)):
        if len(value) != 4 or not all(isinstance(v, int) and v > 0 for v in value):
            raise ValueError(
                f"Invalid value for argument `{arg}`. Expected 4 positive ints, one "
                f"per stage at strides 4, 8, 16, 32. Received: {arg}={value!r}"
            )
    if not isinstance(fpn_channels, int) or fpn_channels < 1:
        raise ValueError(
            "Invalid value for argument `fpn_channels`. Expected a positive int. "
            f"Received: fpn_channels={fpn_channels!r}"
        )
    if backbone == "resnet_lite":
        x = ImageRescaling(standardize=standardize, name=f"{name}_rescaling")(image_input)
        stem, *features = _resnet_lite(x, widths, blocks, name)
    else:
        # MobileNetV2 expects pixels in [-1, 1].
        x = ImageRescaling(scale=1.0 / 127.5, offset=-1.0, standardize=standardize,
                           name=f"{name}_rescaling")(image_input)
        stem, *features = _mobilenet_v2(x, alpha, name)
    output = _fpn_lite(features, fpn_channels, name)
    return (output, stem) if return_stride2 else output


def stride2_decoder(features, skip, channels: int = 32, name: str = "decoder"):
    """A U-Net-style step from the trunk's stride-4 map up to stride 2.

    Nearest-neighbour 2x upsampling of `features`, concatenated with the backbone's
    stride-2 activation `skip` (`image_trunk(..., return_stride2=True)`), then
    a 3x3 convolution + BatchNorm + ReLU (Ronneberger et al., "U-Net",
    MICCAI 2015). A segmentation head on it upsamples by 2, not 4: small
    objects (nuclei of a few pixels) keep their edges.

    Args:
        features: Keras tensor `(batch, H/4, W/4, C)`.
        skip: Keras tensor `(batch, H/2, W/2, C2)`.
        channels: int. Output channels. Defaults to `32`.
        name: str. Prefix of the layer names. Defaults to `"decoder"`.

    Returns:
        A Keras tensor `(batch, H/2, W/2, channels)`.

    Examples:

    >>> import keras
    >>> image = keras.Input((64, 64, 3), name="image")
    >>> features, skip = image_trunk(image, widths=(4, 8, 8, 8), fpn_channels=8,
    ...                              return_stride2=True)
    >>> stride2_decoder(features, skip, channels=8).shape
    (None, 32, 32, 8)
    """
    if not isinstance(channels, int) or channels < 1:
        raise ValueError(
            "Invalid value for argument `channels`. Expected a positive int. "
            f"Received: channels={channels!r}"
        )
    # Nearest, as the FPN's top-down path: Keras' bilinear resize cannot be
    # traced on unknown image sizes without AutoGraph; the 3x3 fuse smooths.
    up = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"{name}_up")(features)
    x = keras.layers.Concatenate(name=f"{name}_concat")([up, skip])
    return _conv_bn(x, channels, 3, 1, f"{name}_fuse")


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, relu: bool = True):
    x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same",
                            use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _basic_block(x, filters: int, stride: int, name: str):
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(x, filters, 1, stride, f"{name}_shortcut", relu=False)
    x = _conv_bn(x, filters, 3, stride, f"{name}_a")
    x = _conv_bn(x, filters, 3, 1, f"{name}_b", relu=False)
    x = keras.layers.Add(name=f"{name}_add")([x, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(x)


def _resnet_lite(x, widths, blocks, name: str) -> list:
    # Stem at stride 2; each stage halves the size again (strides 4 ... 32).
    # Returns the maps at strides 2, 4, 8, 16, 32.
    x = _conv_bn(x, max(widths[0] // 2, 1), 3, 2, f"{name}_stem")
    features = [x]
    for stage, (filters, count) in enumerate(zip(widths, blocks)):
        for block in range(count):
            x = _basic_block(x, filters, 2 if block == 0 else 1,
                             f"{name}_stage{stage + 1}_block{block + 1}")
        features.append(x)
    return features


def _mobilenet_v2(x, alpha: float, name: str) -> list:
    base = keras.applications.MobileNetV2(
        input_shape=(None, None, 3), alpha=alpha, include_top=False, weights=None)
    taps = keras.Model(base.input, [base.get_layer(t).output for t in _MOBILENET_TAPS],
                       name=f"{name}_mobilenet_v2")
    return list(taps(x))


def _fpn_lite(features: list, channels: int, name: str):
    laterals = [
        keras.layers.Conv2D(channels, 1, name=f"{name}_fpn_lateral{i + 2}")(f)
        for i, f in enumerate(features)
    ]
    x = laterals[-1]
    for level in range(len(laterals) - 2, -1, -1):
        up = keras.layers.UpSampling2D(2, interpolation="nearest",
                                       name=f"{name}_fpn_up{level + 2}")(x)
        x = keras.layers.Add(name=f"{name}_fpn_merge{level + 2}")([laterals[level], up])
    return _conv_bn(x, channels, 3, 1, f"{name}_fpn_smooth")
