"""The `tf.data` pipeline that feeds `VisionData` (images with boxes and
masks) to a joint detection + segmentation model.

Elements are `({"image": float32 [B, h, w, 3] in 0..255}, {detection:
{"boxes": float32 [B, M, 4], "classes": int32 [B, M]}, segmentation: int32
[B, h, w]})` with `M = max_boxes` (the vision contract of kerasmtl): padding
rows have class -1 and box 0; an image without a detection label has class -1
and NaN boxes in every row; a missing mask, and mask padding, is -1.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from kerasmtl.autograph import skip_autograph
from kerasmtl.boxes import missing_detection_label, pad_boxes
from kerasmtl.data.vision.augment import (
    VisionAugment,
    finalize_boxes,
    fit_example,
    is_missing,
)
from kerasmtl.data.vision.container import VisionData
from kerasmtl.layers.backbones import SIZE_MULTIPLE


def check_pipeline_args(batch_size, max_boxes, image_size, fit, detection, segmentation):
    """Raises a ValueError for a bad argument shared by `vision_dataset` and
    the tfds loaders of `kerasmtl.data.vision.tfds`."""
    for name, value in (("batch_size", batch_size), ("max_boxes", max_boxes)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(
                f"Invalid value for argument `{name}`. Expected an int >= 1. "
                f"Received: {name}={value!r}"
            )
    if fit not in ("crop", "resize"):
        raise ValueError(
            "Invalid value for argument `fit`. Expected 'crop' or 'resize'. "
            f"Received: fit={fit!r}"
        )
    if image_size is not None:
        if len(image_size) != 2 or any(
            int(s) < 1 or int(s) % SIZE_MULTIPLE for s in image_size
        ):
            raise ValueError(
                "Invalid value for argument `image_size`. Expected None or "
                f"(height, width), both positive multiples of {SIZE_MULTIPLE} (the "
                f"backbone's coarsest stride). Received: image_size={image_size!r}"
            )
    if detection is None and segmentation is None:
        raise ValueError(
            "`detection` and `segmentation` are both None: name at least one task."
        )


def _check_data(data, max_boxes):
    if not isinstance(data, VisionData):
        raise ValueError(
            f"Expected a VisionData. Received: {type(data).__name__}. Build one "
            "with a reader of kerasmtl.data (e.g. read_coco) or VisionData(...)."
        )
    if len(data) == 0:
        raise ValueError("The VisionData is empty; there is nothing to batch.")
    for i, boxes in enumerate(data.boxes):
        if boxes is not None and len(boxes) > max_boxes:
            raise ValueError(
                f"Image {data.ids[i]!r} has {len(boxes)} boxes, more than "
                f"max_boxes={max_boxes} (the largest count in the data is "
                f"{max(len(b) for b in data.boxes if b is not None)}). Raise "
                "`max_boxes` (of the pipeline and of the Detection task)."
            )
    for i, (image, mask) in enumerate(zip(data.images, data.masks)):
        if mask is not None and mask.shape != image.shape[:2]:
            raise ValueError(
                f"The mask of image {data.ids[i]!r} has shape {mask.shape} but the "
                f"image is {image.shape[:2]} (H, W). Give each mask its image's "
                "height and width."
            )


def vision_dataset(
    data,
    *,
    batch_size: int,
    max_boxes: int,
    image_size: tuple[int, int] | None = None,
    fit: str = "crop",
    shuffle: bool = False,
    seed: int | None = None,
    augment: VisionAugment | None = None,
    detection: str | None = "detection",
    segmentation: str | None = "segmentation",
    repeat: bool = False,
) -> tf.data.Dataset:
    """A `tf.data` pipeline of image batches with detection and segmentation
    labels, in the form `MultiTaskModel.fit` takes.

    Each element is `({"image": float32 [B, h, w, 3] in 0..255},
    {detection: {"boxes": float32 [B, max_boxes, 4], "classes": int32
    [B, max_boxes]}, segmentation: int32 [B, h, w]})`. Boxes are padded with
    class -1 and box 0; an image without a detection label has class -1 and
    NaN boxes in every row; a missing mask is all -1, and so is mask padding.

    Sizes: with `image_size=None` images keep their size and each batch is
    padded at the bottom/right (image 0, mask -1, boxes unchanged) to its
    largest height and width rounded up to a multiple of 32: the choice for
    evaluation, where no pixel may be lost. With `image_size=(h, w)` every
    image becomes `h x w`: `fit="crop"` takes a random crop when `shuffle` is
    on (training) and a centred crop otherwise, padding images smaller than
    `(h, w)`; boxes are clipped to the crop and those left without area become
    padding rows. `fit="resize"` resizes (aspect ratio not kept; image
    bilinear, mask nearest). Augmentation, if any, comes before this step.

    Args:
        data: `VisionData`.
        batch_size: int >= 1. The last batch may be smaller.
        max_boxes: int >= 1. Rows of the box labels; an image with more boxes
            is an error (raise it, here and in the `Detection` task).
        image_size: `(height, width)`, multiples of 32, or None. Defaults to
            `None`.
        fit: `"crop"` or `"resize"`, used with `image_size`. Defaults to
            `"crop"`.
        shuffle: bool. Shuffle the images each epoch (and crop at random).
            Defaults to `False`.
        seed: int or None. Seed of the shuffle, the random crops and (unless
            `augment.seed` is set) the augmentation. Defaults to `None`.
        augment: `VisionAugment` or None. Defaults to `None`.
        detection: str or None. Name of the detection task, or None to leave
            the boxes out. Defaults to `"detection"`.
        segmentation: str or None. Name of the segmentation task, or None to
            leave the masks out. Defaults to `"segmentation"`.
        repeat: bool. Repeat forever (pass `steps_per_epoch` to `fit`).
            Defaults to `False`.

    Examples:

    >>> from kerasmtl.data.vision import VisionData
    >>> image = np.zeros((40, 50, 3), "uint8")
    >>> data = VisionData([image, image], [np.array([[1, 2, 11, 12]]), None],
    ...                   [np.array([0]), None], [np.zeros((40, 50), "int32"), None],
    ...                   class_names=["thing"])
    >>> x, y = next(iter(vision_dataset(data, batch_size=2, max_boxes=2)))
    >>> x["image"].shape, y["segmentation"].shape
    (TensorShape([2, 64, 64, 3]), TensorShape([2, 64, 64]))
    >>> y["detection"]["boxes"].numpy()[:, 0].tolist()
    [[1.0, 2.0, 11.0, 12.0], [nan, nan, nan, nan]]
    >>> y["detection"]["classes"].numpy().tolist()
    [[0, -1], [-1, -1]]
    """
    check_pipeline_args(batch_size, max_boxes, image_size, fit, detection, segmentation)
    _check_data(data, max_boxes)
    size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
    random_crop = size is not None and fit == "crop" and shuffle

    def fetch(index):
        i = int(index)
        image = data.images[i]
        if data.boxes[i] is None:
            label = missing_detection_label(max_boxes)
        else:
            label = pad_boxes(data.boxes[i], data.classes[i], max_boxes)
        mask = data.masks[i]
        if mask is None:
            mask = np.full(image.shape[:2], -1, "int32")
        return image, label["boxes"], label["classes"], mask

    @skip_autograph
    def example(index, seed_pair):
        image, boxes, classes, mask = tf.numpy_function(
            fetch, [index], [tf.uint8, tf.float32, tf.int32, tf.int32], stateful=False
        )
        image.set_shape([None, None, 3])
        boxes.set_shape([max_boxes, 4])
        classes.set_shape([max_boxes])
        mask.set_shape([None, None])
        image = tf.cast(image, tf.float32)
        missing = is_missing(boxes)
        return augment_and_fit(
            (image, boxes, classes, mask), missing, seed_pair, augment, size, fit,
            random_crop,
        )

    ds = tf.data.Dataset.range(len(data))
    if shuffle:
        ds = ds.shuffle(len(data), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = zip_seed_pairs(ds, seed, augment).map(
        example, num_parallel_calls=tf.data.AUTOTUNE
    )
    return batch_examples(
        ds, batch_size, max_boxes, size is None, detection, segmentation
    )


def zip_seed_pairs(ds, seed, augment):
    """Pairs each element of `ds` with an int64 `[2]` seed for its random
    steps, drawn anew each epoch from `augment.seed` if set, else `seed`."""
    if augment is not None and augment.seed is not None:
        seed = augment.seed
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    return tf.data.Dataset.zip(ds, seeds.batch(2))


def augment_and_fit(example, missing, seed_pair, augment, size, fit, random_crop):
    """Augments one `(image, boxes, classes, mask)` example (if `augment`),
    fits it to `size` (crop or resize; a random crop when `random_crop`),
    and re-pads its boxes, keeping a missing label missing. `seed_pair`
    seeds both random steps statelessly."""
    image, boxes, classes, mask = example
    seeds = tf.random.experimental.stateless_split(seed_pair, 2)
    if augment is not None:
        # Unfinalised: the rows are cleaned up once, below.
        image, boxes, classes, mask = augment._transform(
            image, boxes, classes, mask, seeds[0]
        )
    image, boxes, classes, mask = fit_example(
        image, boxes, classes, mask, size, fit, seeds[1] if random_crop else None
    )
    boxes, classes = finalize_boxes(boxes, classes, missing)
    return image, boxes, classes, mask


def batch_examples(
    ds: tf.data.Dataset,
    batch_size: int,
    max_boxes: int,
    pad: bool,
    detection: str | None,
    segmentation: str | None,
) -> tf.data.Dataset:
    """Batches `(image, boxes, classes, mask)` examples into the contract's
    `({"image"}, {detection: {"boxes", "classes"}, segmentation: mask})`.

    With `pad`, images of different sizes are padded bottom/right (pixels 0,
    mask -1) to the largest in the batch; otherwise they must share a size.
    """
    if pad:
        ds = ds.padded_batch(
            batch_size,
            padded_shapes=([None, None, 3], [max_boxes, 4], [max_boxes], [None, None]),
            padding_values=(0.0, 0.0, -1, -1),
        )
    else:
        ds = ds.batch(batch_size)

    @skip_autograph
    def to_dicts(image, boxes, classes, mask):
        labels = {}
        if detection is not None:
            labels[detection] = {"boxes": boxes, "classes": classes}
        if segmentation is not None:
            labels[segmentation] = mask
        return {"image": image}, labels

    return ds.map(to_dicts).prefetch(tf.data.AUTOTUNE)
