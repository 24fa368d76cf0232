"""Detection + segmentation data sets from TensorFlow Datasets: PASCAL VOC,
COCO and Oxford-IIIT Pet, as `tf.data` pipelines.

Each loader returns `(dataset, info)`. The dataset yields batches in the form
of `kerasmtl.data.vision.pipeline.vision_dataset`: `({"image": float32 [B, h, w, 3] in
0..255}, {detection: {"boxes": float32 [B, M, 4], "classes": int32 [B, M]},
segmentation: int32 [B, h, w]})`, boxes xyxy in pixels of the returned image
(tfds stores them as `[ymin, xmin, ymax, xmax]` relative to the image), padded
to `M = max_boxes` rows with class -1 and box 0. `info` is `{"class_names":
[...], "mask_class_names": [...]}` for building the tasks.

What each tfds config has (tensorflow-datasets 4.9):

| loader / config          | boxes                      | masks                              |
|--------------------------|----------------------------|------------------------------------|
| `voc/2007`, `voc/2012`   | 20 classes, `is_difficult` | none: missing (all -1)             |
| `coco/2014`, `coco/2017` | 80 classes, `is_crowd`     | none: missing (all -1)             |
| `coco/2017_panoptic`     | the 80 "thing" classes     | 133 classes, from the panoptic PNG |
| `oxford_iiit_pet`        | head box, species or breed | trimap: pet, background, ignored   |

Splits without annotations (`voc/2012` and COCO `test*`, pet images without
a head box) give missing detection labels (NaN boxes, classes -1). A mask is
`class index + 1` on object pixels and `0` for background; `-1` is ignored.

Pipeline arguments (keywords of every loader, as `vision_dataset`'s):
`batch_size=8`; `max_boxes=100` (more than VOC and COCO images have);
`image_size=(320, 320)`, multiples of 32, or None to keep the sizes and
pad each batch to a multiple of 32 (image 0, mask -1); `fit="resize"` (aspect
ratio not kept; image bilinear, mask nearest) or `"crop"` (random when
shuffling, else centred; smaller images padded); `shuffle=False` (True or a
buffer size; also shuffles the files); `seed=None` (shuffle, crops and
augmentation); `augment=None` (a `VisionAugment`, applied before the size is
fitted); `detection="detection"` and `segmentation="segmentation"` (task
names; None leaves those labels out); `data_dir=None`; `download=False`.

Bad input surfaces when the batch is read, as `tf.errors.InvalidArgumentError`
(graph code cannot raise ValueError): more boxes than `max_boxes` (raise it),
or a mask whose size differs from its image. Boxes with zero size are dropped
and reported on stderr, image by image. Nothing is downloaded unless
`download=True`; tests use `tfds.testing.mock_data`.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from kerasmtl.autograph import skip_autograph
from kerasmtl.data.vision.pipeline import (
    augment_and_fit,
    batch_examples,
    check_pipeline_args,
    zip_seed_pairs,
)

# Number of "thing" classes of COCO panoptic; they come first in its labels.
_COCO_PANOPTIC_THINGS = 80


def load_tfds_voc(
    split: str, year: str = "2007", *, skip_difficult: bool = False, **kwargs
) -> tuple[tf.data.Dataset, dict]:
    """PASCAL VOC detection (tfds `voc/<year>`); tfds has no VOC masks, so the
    segmentation labels are missing (all -1). tfds divides VOC's 1-based box
    corners by the image size, so boxes may be one pixel right/below those of
    `read_voc`, which converts them to pixel edges.

    Args:
        split: str. `"train"`, `"validation"`, `"test"` or a slice.
        year: str. `"2007"` or `"2012"` (whose test split has no labels).
            Defaults to `"2007"`.
        skip_difficult: bool. Leave out objects marked difficult (they become
            background for the heat map). Defaults to `False`.
        **kwargs: pipeline arguments (module docstring).

    Returns:
        `(dataset, {"class_names": [...], "mask_class_names": [...]})`.
    """
    if str(year) not in ("2007", "2012"):
        raise ValueError(
            f"Invalid value for argument `year`. Expected '2007' or '2012'. Received: year={year!r}"
        )
    labelled = not (str(year) == "2012" and split.startswith("test"))

    def convert(example):
        objects = example["objects"]
        keep = tf.ones_like(objects["label"], tf.bool)
        if skip_difficult:
            keep = tf.logical_not(objects["is_difficult"])
        image = example["image"]
        boxes = _pixel_boxes(tf.boolean_mask(objects["bbox"], keep), image)
        classes = tf.boolean_mask(objects["label"], keep)
        return image, boxes, classes, _missing_mask(image), tf.constant(not labelled)

    return _load(
        f"voc/{year}",
        split,
        convert,
        label_feature=("objects", "label"),
        file_feature="image/filename",
        **kwargs,
    )


def load_tfds_coco(
    split: str, config: str = "2017", *, skip_crowd: bool = True, **kwargs
) -> tuple[tf.data.Dataset, dict]:
    """COCO detection (tfds `coco/<config>`), with semantic masks for the
    `2017_panoptic` config only.

    With `2017_panoptic` the mask comes from the panoptic PNG (segment id
    `R + 256 G + 256^2 B` looked up in `panoptic_objects`): `label + 1` for
    the 133 thing and stuff classes, `-1` for unlabelled (void) pixels, so
    mask class 0 is unused. Boxes are kept for the 80 thing classes only.

    Args:
        split: str. `"train"`, `"validation"`, `"test"` (no labels) or a slice.
        config: str. `"2017"`, `"2014"` or `"2017_panoptic"`. Defaults to
            `"2017"`.
        skip_crowd: bool. Leave crowd boxes out (COCO evaluation ignores
            them). Defaults to `True`.
        **kwargs: pipeline arguments (module docstring).

    Returns:
        `(dataset, {"class_names": [...], "mask_class_names": [...]})`.
    """
    if config not in ("2014", "2017", "2017_panoptic"):
        raise ValueError(
            "Invalid value for argument `config`. Expected '2014', '2017' or "
            f"'2017_panoptic'. Received: config={config!r}"
        )
    panoptic = config == "2017_panoptic"
    key = "panoptic_objects" if panoptic else "objects"
    labelled = not split.startswith("test")

    def convert(example):
        objects, image = example[key], example["image"]
        keep = tf.ones_like(objects["label"], tf.bool)
        if skip_crowd:
            keep = tf.logical_not(objects["is_crowd"])
        if panoptic:
            keep &= objects["label"] < _COCO_PANOPTIC_THINGS
        boxes = _pixel_boxes(tf.boolean_mask(objects["bbox"], keep), image)
        classes = tf.boolean_mask(objects["label"], keep)
        mask = _missing_mask(image)
        if panoptic:
            mask = _panoptic_to_semantic(
                example["panoptic_image"], objects["id"], objects["label"]
            )
        return image, boxes, classes, mask, tf.constant(not labelled)

    return _load(
        f"coco/{config}",
        split,
        convert,
        label_feature=(key, "label"),
        file_feature="image/filename",
        num_classes=_COCO_PANOPTIC_THINGS if panoptic else None,
        mask_names="all" if panoptic else None,
        **kwargs,
    )


def load_tfds_oxford_iiit_pet(
    split: str, *, classes: str = "species", mask_classes: str = "pet", **kwargs
) -> tuple[tf.data.Dataset, dict]:
    """Oxford-IIIT Pet (tfds `oxford_iiit_pet`): the head box and the trimap.

    The trimap's values are, per the data set's README, 1 foreground (pet),
    2 background, 3 not classified (the uncertain band along the outline):
    they become the pet's class, `0` and `-1` (ignored). Images without a head
    annotation (tfds stores an all-zero box: the test split) have a missing
    detection label.

    Args:
        split: str. `"train"`, `"test"` or a slice.
        classes: str. Class of the head box: `"species"` (cat, dog) or
            `"breed"` (37 breeds). Defaults to `"species"`.
        mask_classes: str. `"pet"`: pet pixels are `1` (mask classes
            background, pet); `"classes"`: they are the box class + 1.
            Defaults to `"pet"`.
        **kwargs: pipeline arguments (module docstring).

    Returns:
        `(dataset, {"class_names": [...], "mask_class_names": [...]})`.
    """
    if classes not in ("species", "breed") or mask_classes not in ("pet", "classes"):
        raise ValueError(
            "Invalid value for argument `classes` or `mask_classes`. Expected "
            "classes in ('species', 'breed') and mask_classes in ('pet', "
            f"'classes'). Received: classes={classes!r}, mask_classes={mask_classes!r}"
        )
    feature = "species" if classes == "species" else "label"

    def convert(example):
        image, box = example["image"], example["head_bbox"]
        label = tf.cast(example[feature], tf.int32)
        trimap = tf.cast(example["segmentation_mask"][..., 0], tf.int32)
        pet = label + 1 if mask_classes == "classes" else tf.constant(1)
        mask = tf.gather(tf.stack([-1, pet, 0, -1]), tf.clip_by_value(trimap, 0, 3))
        missing = tf.reduce_all(tf.equal(box, 0.0))
        has_box = tf.logical_not(missing)[None]
        boxes = tf.boolean_mask(_pixel_boxes(box[None], image), has_box)
        return image, boxes, tf.boolean_mask(label[None], has_box), mask, missing

    return _load(
        "oxford_iiit_pet",
        split,
        convert,
        label_feature=(feature,),
        file_feature="file_name",
        mask_names=["pet"] if mask_classes == "pet" else None,
        **kwargs,
    )


def _load(
    name,
    split,
    convert,
    *,
    label_feature,
    file_feature,
    num_classes=None,
    mask_names=None,
    batch_size=8,
    max_boxes=100,
    image_size=(320, 320),
    fit="resize",
    shuffle=False,
    seed=None,
    augment=None,
    detection="detection",
    segmentation="segmentation",
    data_dir=None,
    download=False,
):
    """Loads tfds `name`, maps each example through `convert` (returning
    `(image, boxes xyxy px, classes, mask, missing)`) and batches as
    `vision_dataset`. `label_feature` is the path of the `ClassLabel` whose
    names are the classes (the first `num_classes`); `mask_names` the mask
    classes after background (None: the class names; "all": every name)."""
    import tensorflow_datasets as tfds

    check_pipeline_args(batch_size, max_boxes, image_size, fit, detection, segmentation)
    ds, info = tfds.load(
        name,
        split=split,
        data_dir=data_dir,
        download=download,
        with_info=True,
        shuffle_files=bool(shuffle),
    )
    label = info.features
    for key in label_feature:
        label = label[key]
    names = list(label.names)
    class_names = names[:num_classes]
    if mask_names is None or mask_names == "all":
        mask_names = class_names if mask_names is None else names
    size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
    random_crop = size is not None and fit == "crop" and bool(shuffle)

    @skip_autograph  # no Python control flow on tensors; traces ~5x faster
    def example(raw, seed_pair):
        image, boxes, classes, mask, missing = convert(raw)
        where = raw[file_feature]
        same = tf.reduce_all(tf.equal(tf.shape(mask), tf.shape(image)[:2]))
        shapes = [tf.shape(mask), "image:", tf.shape(image), "file:", where]
        message = f"{name}: the mask and image sizes differ; mask:"
        check = tf.debugging.Assert(same, [message, *shapes], summarize=4)
        with tf.control_dependencies([check]):
            mask = tf.identity(mask)
        boxes, classes = _pad(boxes, tf.cast(classes, tf.int32), max_boxes, name, where)
        image = tf.cast(image, tf.float32)
        return augment_and_fit(
            (image, boxes, classes, mask), missing, seed_pair, augment, size, fit,
            random_crop,
        )

    if shuffle:
        ds = ds.shuffle(1024 if shuffle is True else int(shuffle), seed=seed)
    ds = zip_seed_pairs(ds, seed, augment).map(
        example, num_parallel_calls=tf.data.AUTOTUNE
    )
    ds = batch_examples(
        ds, batch_size, max_boxes, size is None, detection, segmentation
    )
    return ds, {
        "class_names": class_names,
        "mask_class_names": ["background", *mask_names],
    }


def _pixel_boxes(boxes, image):
    """tfds' relative `[ymin, xmin, ymax, xmax]` to xyxy pixels."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    ymin, xmin, ymax, xmax = tf.unstack(tf.reshape(boxes, [-1, 4]), axis=-1)
    return tf.stack(
        [xmin * shape[1], ymin * shape[0], xmax * shape[1], ymax * shape[0]], axis=-1
    )


def _missing_mask(image):
    return tf.fill(tf.shape(image)[:2], -1)


def _pad(boxes, classes, max_boxes, name, where):
    """Drops zero-size boxes (reported on stderr), checks the count and pads
    to `max_boxes` rows (class -1, box 0)."""
    valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    dropped = tf.reduce_sum(tf.cast(~valid, tf.int32))
    with tf.control_dependencies(
        [
            tf.cond(
                dropped > 0,
                lambda: tf.print(
                    tf.strings.join(
                        [
                            f"kerasmtl: {name}: ",
                            where,
                            ": dropped ",
                            tf.strings.as_string(dropped),
                            " box(es) with zero or negative size.",
                        ]
                    )
                ),
                lambda: tf.no_op(),
            )
        ]
    ):
        boxes, classes = tf.boolean_mask(boxes, valid), tf.boolean_mask(classes, valid)
    count = tf.shape(classes)[0]
    check = tf.debugging.Assert(
        count <= max_boxes,
        [
            f"{name}: image",
            where,
            "has",
            count,
            f"boxes, more than max_boxes="
            f"{max_boxes}. Raise `max_boxes` (of the pipeline and the Detection task).",
        ],
    )
    with tf.control_dependencies([check]):
        count = tf.identity(count)
    padding = tf.maximum(max_boxes - count, 0)
    boxes = tf.pad(boxes, [[0, padding], [0, 0]])[:max_boxes]
    classes = tf.pad(classes, [[0, padding]], constant_values=-1)[:max_boxes]
    return tf.ensure_shape(boxes, [max_boxes, 4]), tf.ensure_shape(classes, [max_boxes])


def _panoptic_to_semantic(panoptic_image, segment_ids, labels):
    """Semantic map `label + 1` from a COCO panoptic PNG; unknown ids (void) -1."""
    rgb = tf.cast(panoptic_image, tf.int32)
    ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
    order = tf.argsort(segment_ids)
    # A sentinel keeps `searchsorted` in range when there are no segments.
    known = tf.concat(
        [tf.cast(tf.gather(segment_ids, order), tf.int32), [np.iinfo("int32").max]], 0
    )
    values = tf.concat([tf.cast(tf.gather(labels, order), tf.int32) + 1, [-1]], 0)
    position = tf.searchsorted(known, tf.reshape(ids, [-1]))
    found = tf.gather(known, position) == tf.reshape(ids, [-1])
    semantic = tf.where(found, tf.gather(values, position), -1)
    return tf.reshape(semantic, tf.shape(ids))
