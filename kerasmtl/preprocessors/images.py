"""The image converter of a SavedModel signature: uint8 images of any size and
channel count in, the model's image input out, and the geometry the tasks need
to map their outputs back to the request's image.

`export_saved_model` uses it for every input served as images; it owns what
used to be export's own preprocessing:

- which inputs are images (`serving_image_inputs`): inputs read by a
  `kerasmtl.layers.ImageRescaling` (padded to its `size_multiple`), rank-4
  uint8 inputs, or the ones named;
- channel conversion (gray and gray+alpha to RGB by repeating gray, RGBA to
  RGB by dropping alpha; to gray by luminance) and zero padding at the bottom
  and right up to the size multiple (`ImageInput.convert`);
- an `ImageGeometry` that tasks with image-shaped outputs or pixel boxes use
  in `Task.serving_outputs` to crop and clip back to the original image.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import tensorflow as tf

from kerasmtl.layers.backbones import ImageRescaling


@dataclass(frozen=True)
class ImageInput:
    """An input served as images: where it is among the model's flat inputs,
    its name, the channels and dtype the model takes, and the size multiple."""

    index: int
    name: str
    channels: int | None
    dtype: str
    multiple: int

    def spec(self, height, width) -> tf.TensorSpec:
        """The signature's spec: uint8 with any channel count (converted)."""
        return tf.TensorSpec((None, height, width, None), tf.uint8, name=self.name)

    def convert(self, images):
        """uint8 request images -> the model's input (channels, padding, dtype)."""
        images = _convert_channels(images, self)
        return tf.cast(_pad_to_multiple(images, self.multiple), self.dtype)


@dataclass(frozen=True)
class ImageGeometry:
    """The request's image size against the padded size the model saw.

    Padding is at the bottom and right, so pixel coordinates are unchanged;
    an image-shaped output of height `h` (the padded height divided by some
    stride) keeps `ceil(image_height * h / padded_height)` rows.

    Examples:

    >>> import tensorflow as tf
    >>> geometry = ImageGeometry(tf.constant([50, 70]), tf.constant([64, 96]))
    >>> geometry.crop(tf.zeros((1, 16, 24, 7))).shape  # stride 4
    TensorShape([1, 13, 18, 7])
    >>> geometry.clip_boxes(tf.constant([[[-5.0, 3.0, 80.0, 60.0]]])).numpy().tolist()
    [[[0.0, 3.0, 70.0, 50.0]]]
    """

    image_size: tf.Tensor  # int32 [2]: height, width of the request's images
    padded_size: tf.Tensor  # int32 [2]: what the model ran on

    def crop(self, outputs):
        """Crops an image-shaped `[batch, h, w, ...]` tensor to the image."""
        shape = tf.shape(outputs)[1:3]
        keep = (self.image_size * shape + self.padded_size - 1) // self.padded_size
        return outputs[:, : keep[0], : keep[1]]

    def clip_boxes(self, boxes):
        """Clips xyxy pixel boxes `[..., 4]` to the image."""
        height, width = tf.unstack(tf.cast(self.image_size, boxes.dtype))
        return tf.clip_by_value(boxes, 0.0, tf.stack([width, height, width, height]))


def serving_image_inputs(model, image_inputs="auto") -> list[ImageInput]:
    """The inputs of `model` to serve as images (see `export_saved_model`)."""
    names = input_names(model)
    if image_inputs is None:
        return []
    multiples = _rescaling_multiples(model)
    if isinstance(image_inputs, str) and image_inputs == "auto":
        chosen = [
            i for i, t in enumerate(model.inputs)
            if i in multiples or (len(t.shape) == 4 and t.dtype == "uint8")
        ]
    else:
        if isinstance(image_inputs, str) or not all(
                isinstance(n, str) for n in image_inputs):
            raise ValueError(
                "Invalid value for argument `image_inputs` of export_saved_model. "
                "Expected 'auto', None or a list of input names from "
                f"{names}. Received: image_inputs={image_inputs!r}"
            )
        unknown = sorted(set(image_inputs) - set(names))
        if unknown:
            raise ValueError(
                f"`image_inputs` names {unknown}, which are not inputs of model "
                f"'{model.name}'; its inputs are {names}."
            )
        chosen = [names.index(n) for n in image_inputs]
    result = []
    for i in chosen:
        tensor = model.inputs[i]
        if len(tensor.shape) != 4:
            raise ValueError(
                f"Input '{names[i]}' of model '{model.name}' has shape "
                f"{tuple(tensor.shape)}; an image input must be (batch, height, "
                "width, channels)."
            )
        result.append(ImageInput(i, names[i], tensor.shape[-1], str(tensor.dtype),
                                 multiples.get(i, 1)))
    return result


def input_names(model) -> list[str]:
    """The names callers use for `model`'s flat inputs: a dict-input model's
    keys, any other model's `keras.Input` names."""
    if isinstance(model.input, dict):
        return [str(p[0]) for p, _ in keras.tree.flatten_with_path(model.input)]
    return [t.name for t in model.inputs]


def _rescaling_multiples(model) -> dict[int, int]:
    """`{input index: size multiple}` for inputs read by an ImageRescaling."""
    # Keras has no public API for "which input feeds this layer": this reads
    # the functional graph's node records (`_keras_history`, `_inbound_nodes`).
    # Guarded by tests/test_vision_export.py (padding to 32 of the zoo model).
    index = {id(t._keras_history.operation): i for i, t in enumerate(model.inputs)}
    found = {}
    for layer in model.layers:
        if not isinstance(layer, ImageRescaling):
            continue
        for node in layer._inbound_nodes:
            for tensor in node.input_tensors:
                i = index.get(id(tensor._keras_history.operation))
                if i is not None:
                    found[i] = max(found.get(i, 1), layer.size_multiple)
    return found


def _convert_channels(images, image: ImageInput):
    channels = tf.shape(images)[-1]
    target = image.channels
    if target not in (1, 3):  # no conversion defined: the count must match
        return images if target is None else tf.ensure_shape(
            images, (None, None, None, target))
    check = tf.debugging.Assert(
        tf.logical_and(channels >= 1, channels <= 4),
        [f"Input '{image.name}' takes images with 1 (gray), 2 (gray+alpha), 3 (RGB) "
         "or 4 (RGBA) channels; received", channels])
    with tf.control_dependencies([check]):
        images = tf.identity(images)
    if target == 3:
        images = tf.cond(channels < 3,
                         lambda: tf.tile(images[..., :1], [1, 1, 1, 3]),
                         lambda: images[..., :3])
    else:
        images = tf.cond(
            channels < 3, lambda: images[..., :1],
            lambda: tf.cast(tf.round(tf.image.rgb_to_grayscale(
                tf.cast(images[..., :3], tf.float32))), images.dtype))
    return tf.ensure_shape(images, (None, None, None, target))


def _pad_to_multiple(images, multiple: int):
    if multiple == 1:
        return images
    size = tf.shape(images)[1:3]
    pad = (multiple - size % multiple) % multiple
    return tf.pad(images, [[0, 0], [0, pad[0]], [0, pad[1]], [0, 0]])
