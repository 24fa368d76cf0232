"""Test-time flip averaging: a model's outputs averaged over flipped copies of
its image inputs, each flipped back by its task (`Task.flip_back`).

A `MultiTaskModel` built with `test_time_flips=2` (the image and its mirror
image) or `4` (also upside down, and both) averages its outputs over the
flips in `predict` and in its exported SavedModel: segmentation logits and
CenterNet heat maps, sizes and offsets (mirrored) are averaged cell by cell,
image-level outputs as they are. Training, `evaluate` and calling the model
(`model(x)`) take one pass. For images without an up or a left (microscopy,
aerial views) 4 flips suit; natural photographs have an up, so 2. The cost
is one forward pass per flip.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from kerasmtl.preprocessors.images import serving_image_inputs

# (horizontal, vertical) flips of each setting; the first is the image as is.
FLIPS = {
    1: ((False, False),),
    2: ((False, False), (True, False)),
    4: ((False, False), (True, False), (False, True), (True, True)),
}


def check_test_time_flips(value) -> int:
    if isinstance(value, bool) or value not in FLIPS:
        raise ValueError(
            "Invalid value for argument `test_time_flips`. Expected 1 (no "
            "averaging), 2 (the image and its mirror image) or 4 (also upside "
            f"down, and both). Received: test_time_flips={value!r}"
        )
    return int(value)


def flip_images(images, horizontal: bool, vertical: bool):
    """Flips a `[batch, height, width, channels]` tensor (its own inverse)."""
    axes = [axis for axis, on in ((1, vertical), (2, horizontal)) if on]
    return tf.reverse(images, axes) if axes else images


def flip_averaged_outputs(model, inputs, image_indexes: Sequence[int]) -> dict:
    """`model(inputs, training=False)`, averaged over the model's
    `test_time_flips` flips of the flat inputs at `image_indexes`, each
    task's output flipped back by `task.flip_back` before the mean. One pass
    when the model has 1 flip or no image inputs are given.

    Args:
        model: a `MultiTaskModel`.
        inputs: its inputs, structured as `model.input`.
        image_indexes: positions among the flat inputs of the images to flip
            (`[batch, height, width, channels]`, sizes the model takes).

    Returns:
        `{task name: output}`.
    """
    flips = FLIPS[model.test_time_flips] if image_indexes else FLIPS[1]
    if len(flips) == 1:
        return model(inputs, training=False)
    flat = keras.tree.flatten(inputs)
    totals = None
    for horizontal, vertical in flips:
        flipped = [flip_images(x, horizontal, vertical) if i in image_indexes else x
                   for i, x in enumerate(flat)]
        outputs = model(keras.tree.pack_sequence_as(inputs, flipped), training=False)
        outputs = {task.name: task.flip_back(outputs[task.name], horizontal, vertical)
                   for task in model.tasks}
        totals = outputs if totals is None else {
            name: totals[name] + value for name, value in outputs.items()}
    return {name: value / float(len(flips)) for name, value in totals.items()}


class FlipAveragingMixin:
    """`predict` of a `MultiTaskModel` with `test_time_flips` > 1: the mean
    over flips of the image inputs, as its exported signature serves it."""

    def predict_step(self, data):
        if self.test_time_flips == 1:
            return super().predict_step(data)
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        images = [image.index for image in serving_image_inputs(self)]
        return flip_averaged_outputs(self, x, images)
