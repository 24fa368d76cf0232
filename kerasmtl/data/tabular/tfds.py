"""Multi-label image data sets from TensorFlow Datasets: CelebA attributes and
PASCAL VOC image-level labels.

Both return batched `tf.data` pipelines of `({"image": float32 [B, h, w, 3]
in [0, 1]}, {task_name: int32 [B, L]})`. The data must already be prepared
in the tfds data directory (`tfds build celeb_a`, `tfds build voc/2007`):
nothing is downloaded unless `download=True` is passed.

Feature names are those of tensorflow-datasets 4.9: `celeb_a` has `image`
(218x178x3 JPEG) and `attributes`, a dict of 40 bools; `voc/<year>` has
`image` and `objects` (a sequence with `label` in 0..19 and `is_difficult`).
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

# The 40 CelebA attribute names in tfds' order (`celeb_a` ATTR_HEADINGS).
CELEB_A_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald",
    "Bangs", "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry",
    "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses",
    "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male",
    "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face",
    "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks", "Sideburns",
    "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)
# The 20 VOC classes in tfds' ClassLabel order (`voc` _VOC_LABELS).
VOC_LABELS = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
    "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


def _resize(image, image_size):
    image = tf.image.convert_image_dtype(image, tf.float32)
    if image_size is not None:
        image = tf.image.resize(image, image_size)
    return tf.clip_by_value(image, 0.0, 1.0)


def _check_image_size(image_size, allow_none: bool):
    if image_size is None and allow_none:
        return None
    if image_size is None or len(image_size) != 2 or min(image_size) < 1:
        raise ValueError(
            "Invalid value for argument `image_size`. Expected (height, width) of "
            f"positive ints{' or None' if allow_none else ''}. "
            f"Received: image_size={image_size!r}"
        )
    return int(image_size[0]), int(image_size[1])


def _batch(ds, batch_size, shuffle, seed):
    if shuffle:
        ds = ds.shuffle(shuffle if shuffle is not True else 1024, seed=seed)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def load_celeb_a_attributes(
    split: str,
    image_size: tuple[int, int] | None = None,
    attributes: Sequence[str] | None = None,
    batch_size: int = 32,
    task_name: str = "attributes",
    shuffle: bool | int = False,
    seed: int | None = None,
    data_dir: str | None = None,
    download: bool = False,
) -> tf.data.Dataset:
    """CelebA face images with their binary attributes as multi-label labels.

    Args:
        split: str. A tfds split: `"train"`, `"validation"`, `"test"` or a
            slice such as `"train[:10%]"`.
        image_size: `(height, width)` or None. Resize to this (bilinear, aspect
            ratio not kept); `None` keeps the native 218x178. Defaults to `None`.
        attributes: sequence of str or None. The attributes to use, in label
            order; `None` means all 40 of `CELEB_A_ATTRIBUTES`. Defaults to
            `None`.
        batch_size: int. Defaults to `32`.
        task_name: str. Key of the labels. Defaults to `"attributes"`.
        shuffle: bool or int. Shuffle examples (an int sets the buffer size,
            `True` means 1024). Defaults to `False`.
        seed: int or None. Shuffle seed. Defaults to `None`.
        data_dir: str or None. The tfds data directory. Defaults to `None`
            (tfds' default).
        download: bool. Let tfds download and prepare the data if it is not
            there. Defaults to `False`.

    Returns:
        A `tf.data.Dataset` of `({"image": float32 [B, h, w, 3]},
        {task_name: int32 [B, len(attributes)]})`, labels 1 or 0.
    """
    import tensorflow_datasets as tfds

    image_size = _check_image_size(image_size, allow_none=True)
    names = list(CELEB_A_ATTRIBUTES if attributes is None else attributes)
    unknown = [a for a in names if a not in CELEB_A_ATTRIBUTES]
    if unknown or not names:
        raise ValueError(
            f"Invalid value for argument `attributes`: {unknown or 'empty'} not "
            f"CelebA attributes. Choose from {list(CELEB_A_ATTRIBUTES)}."
        )

    def convert(example):
        labels = tf.stack([tf.cast(example["attributes"][a], tf.int32) for a in names])
        return {"image": _resize(example["image"], image_size)}, {task_name: labels}

    ds = tfds.load("celeb_a", split=split, data_dir=data_dir, download=download)
    ds = ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)
    return _batch(ds, batch_size, shuffle, seed)


def load_voc_image_labels(
    split: str,
    year: str = "2007",
    image_size: tuple[int, int] = (224, 224),
    batch_size: int = 32,
    task_name: str = "labels",
    difficult_as_unknown: bool = False,
    shuffle: bool | int = False,
    seed: int | None = None,
    data_dir: str | None = None,
    download: bool = False,
) -> tf.data.Dataset:
    """PASCAL VOC images with multi-hot labels of the 20 object classes.

    A class is present (1) when at least one object of the image has it
    (`objects/label`), absent (0) otherwise.

    Args:
        split: str. A tfds split: `"train"`, `"validation"`, `"test"` or a slice.
        year: str. `"2007"` or `"2012"` (the tfds config). Defaults to `"2007"`.
        image_size: `(height, width)`. VOC images differ in size, so they are
            resized (bilinear, aspect ratio not kept) to batch them. Defaults
            to `(224, 224)`.
        batch_size: int. Defaults to `32`.
        task_name: str. Key of the labels. Defaults to `"labels"`.
        difficult_as_unknown: bool. Mark a class whose only objects in the
            image are "difficult" as unknown (-1) rather than present, as the
            VOC classification benchmark ignores them. Defaults to `False`.
        shuffle: bool or int. Shuffle examples (an int sets the buffer size,
            `True` means 1024). Defaults to `False`.
        seed: int or None. Shuffle seed. Defaults to `None`.
        data_dir: str or None. The tfds data directory. Defaults to `None`.
        download: bool. Let tfds download and prepare the data. Defaults to
            `False`.

    Returns:
        A `tf.data.Dataset` of `({"image": float32 [B, h, w, 3]},
        {task_name: int32 [B, 20]})`, classes in `VOC_LABELS` order.
    """
    import tensorflow_datasets as tfds

    if str(year) not in ("2007", "2012"):
        raise ValueError(
            f"Invalid value for argument `year`. Expected '2007' or '2012'. Received: year={year!r}"
        )
    image_size = _check_image_size(image_size, allow_none=False)
    num_classes = len(VOC_LABELS)

    def multi_hot(ids):
        ids = tf.cast(ids, tf.int32)
        hits = tf.math.unsorted_segment_max(tf.ones_like(ids), ids, num_classes)
        return tf.maximum(hits, 0)  # empty segments come back as the int minimum

    def convert(example):
        objects = example["objects"]
        present = multi_hot(objects["label"])
        if difficult_as_unknown:
            easy = tf.boolean_mask(objects["label"], tf.logical_not(objects["is_difficult"]))
            # Present only through difficult objects: unknown.
            present = present - 2 * (present * (1 - multi_hot(easy)))
        image = _resize(example["image"], image_size)
        return {"image": image}, {task_name: present}

    ds = tfds.load(f"voc/{year}", split=split, data_dir=data_dir, download=download)
    ds = ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)
    return _batch(ds, batch_size, shuffle, seed)
