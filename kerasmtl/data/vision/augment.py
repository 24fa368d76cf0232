"""Random image augmentation that keeps boxes and masks consistent with the
image, as TensorFlow graph ops (runs inside `tf.data` maps).

One example is `(image, boxes, classes, mask)`: image `[H, W, C]` (any
numeric dtype, 0..255), boxes float32 `[M, 4]` xyxy pixels, classes int32
`[M]` (-1 = padding row), mask int32 `[H, W]` (a semantic class map, or an
instance-id map; -1 = ignore). Geometry follows the pixel-edge convention of
`kerasmtl.data.vision.container`: a flip maps `x` to `W - x`, so a tight box stays
tight. Randomness is stateless (`tf.random.stateless_*`): the same seed gives
the same augmentation.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from kerasmtl.layers.backbones import SIZE_MULTIPLE

# Independent random streams split from one augmentation's seed (seeds[0..6]).
_NUM_DRAWS = 7


def finalize_boxes(boxes, classes, missing):
    """Turns rows without area (or with class -1) into padding rows (class -1,
    box 0), moves them to the end, and restores a missing label (all NaN)."""
    valid = (classes >= 0) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes = tf.where(valid[:, None], boxes, tf.zeros_like(boxes))
    classes = tf.where(valid, classes, -tf.ones_like(classes))
    order = tf.argsort(tf.cast(~valid, tf.int32), stable=True)
    boxes, classes = tf.gather(boxes, order), tf.gather(classes, order)
    boxes = tf.where(missing, tf.fill(tf.shape(boxes), np.float32("nan")), boxes)
    classes = tf.where(missing, -tf.ones_like(classes), classes)
    return boxes, classes


def is_missing(boxes):
    """True when `boxes` is a missing detection label (NaN rows)."""
    return tf.reduce_any(tf.math.is_nan(boxes))


def crop_example(image, boxes, classes, mask, offset, size):
    """Crops `size = (h, w)` at `offset = (y, x)`; an image smaller than `size`
    is first padded at the bottom/right (image 0, mask -1). Boxes are shifted
    and clipped to the crop."""
    height, width = size
    shape = tf.shape(image)
    pad_h = tf.maximum(height - shape[0], 0)
    pad_w = tf.maximum(width - shape[1], 0)
    image = tf.pad(image, [[0, pad_h], [0, pad_w], [0, 0]])
    mask = tf.pad(mask, [[0, pad_h], [0, pad_w]], constant_values=-1)
    y, x = offset[0], offset[1]
    image = image[y : y + height, x : x + width]
    mask = mask[y : y + height, x : x + width]
    shift = tf.cast(tf.stack([x, y, x, y]), boxes.dtype)
    limit = tf.constant([width, height, width, height], boxes.dtype)
    boxes = tf.clip_by_value(boxes - shift, 0.0, limit)
    return image, boxes, classes, mask


def random_crop_offset(image, size, seed):
    """A uniform `(y, x)` offset of a `size` crop (0 where the image is smaller)."""
    shape = tf.shape(image)
    limit = tf.maximum(shape[:2] - tf.constant(size, tf.int32), 0) + 1
    draw = tf.random.stateless_uniform([2], seed, 0, 2**30, dtype=tf.int32)
    return draw % limit


def center_crop_offset(image, size):
    """The offset of a centred `size` crop (0 where the image is smaller)."""
    return tf.maximum(tf.shape(image)[:2] - tf.constant(size, tf.int32), 0) // 2


def resize_example(image, boxes, classes, mask, size):
    """Resizes to `size = (h, w)` (image bilinear, mask nearest neighbour)."""
    shape = tf.cast(tf.shape(image)[:2], boxes.dtype)
    image = tf.image.resize(tf.cast(image, tf.float32), size)
    mask = tf.image.resize(mask[..., None], size, method="nearest")[..., 0]
    new = tf.cast(tf.stack(size), boxes.dtype)
    factor = tf.stack([new[1] / shape[1], new[0] / shape[0]])
    return image, boxes * tf.tile(factor, [2]), classes, mask


def pad_to_multiple(image, boxes, classes, mask, multiple):
    """Pads the bottom/right up to the next multiple of `multiple` (image 0,
    mask -1); boxes are unchanged."""
    shape = tf.shape(image)
    pad = (-shape[:2]) % multiple
    image = tf.pad(image, [[0, pad[0]], [0, pad[1]], [0, 0]])
    mask = tf.pad(mask, [[0, pad[0]], [0, pad[1]]], constant_values=-1)
    return image, boxes, classes, mask


def fit_example(image, boxes, classes, mask, size, fit="crop", seed=None):
    """Brings one example to its output size (the last step of a pipeline).

    `size=None` pads the bottom/right to a multiple of `SIZE_MULTIPLE` (32, the
    backbone's coarsest stride); else `fit="resize"` resizes to `size` and `fit="crop"`
    crops `size` at random (with `seed`) or centred (`seed=None`), padding
    images smaller than `size`.
    """
    if size is None:
        return pad_to_multiple(image, boxes, classes, mask, SIZE_MULTIPLE)
    if fit == "resize":
        return resize_example(image, boxes, classes, mask, size)
    offset = (
        center_crop_offset(image, size)
        if seed is None
        else random_crop_offset(image, size, seed)
    )
    return crop_example(image, boxes, classes, mask, offset, size)


def _flip_horizontal(image, boxes, mask, apply):
    width = tf.cast(tf.shape(image)[1], boxes.dtype)
    x0, y0, x1, y1 = tf.unstack(boxes, axis=-1)
    flipped = tf.stack([width - x1, y0, width - x0, y1], axis=-1)
    return (
        tf.where(apply, image[:, ::-1], image),
        tf.where(apply, flipped, boxes),
        tf.where(apply, mask[:, ::-1], mask),
    )


def _flip_vertical(image, boxes, mask, apply):
    height = tf.cast(tf.shape(image)[0], boxes.dtype)
    x0, y0, x1, y1 = tf.unstack(boxes, axis=-1)
    flipped = tf.stack([x0, height - y1, x1, height - y0], axis=-1)
    return (
        tf.where(apply, image[::-1], image),
        tf.where(apply, flipped, boxes),
        tf.where(apply, mask[::-1], mask),
    )


def _rotate90(image, boxes, mask, turns):
    # Counter-clockwise `turns` times, as tf.image.rot90: one turn moves the
    # point (x, y) to (y, W - x).
    shape = tf.cast(tf.shape(image), boxes.dtype)
    height, width = shape[0], shape[1]
    x0, y0, x1, y1 = tf.unstack(boxes, axis=-1)
    options = tf.stack([
        tf.stack([x0, y0, x1, y1], axis=-1),
        tf.stack([y0, width - x1, y1, width - x0], axis=-1),
        tf.stack([width - x1, height - y1, width - x0, height - y0], axis=-1),
        tf.stack([height - y1, x0, height - y0, x1], axis=-1),
    ])
    image = tf.image.rot90(image, turns)
    mask = tf.image.rot90(mask[..., None], turns)[..., 0]
    return image, tf.gather(options, turns), mask


def _check_pair(name, value, low):
    if value is None:
        return None
    if len(value) != 2 or not low < value[0] <= value[1]:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected None or a pair "
            f"(low, high) with {low} < low <= high. Received: {name}={value!r}"
        )
    return float(value[0]), float(value[1])


class VisionAugment:
    """Random flips, 90-degree rotations, rescaling, crops, brightness and
    contrast of an image with its boxes and mask.

    Applied in this order: brightness/contrast, flips, rotation, scale, crop.
    Photometric changes are the same for every channel (a single brightness
    offset, contrast around the mean of all pixels and channels), so a
    grayscale image (R = G = B) stays grayscale. Masks are resized with nearest
    neighbour; crops pad with image 0 and mask -1 where the image is smaller
    than `crop_size`. Boxes are transformed with the image and clipped to it;
    rows left without area become padding rows (class -1, box 0) and move to
    the end; a missing label (NaN boxes) stays missing. The image comes out as
    float32 in 0..255.

    Flips and rotations keep a tight box tight; rescaling keeps it tight to
    about a pixel. A crop only clips boxes: the side of a non-rectangular
    object cut by the crop (a triangle's corner) can be looser than its
    visible pixels, as with any box-only crop.

    Args:
        flip_horizontal: bool. Mirror left-right with probability 0.5.
            Defaults to `True`.
        flip_vertical: bool. Mirror top-bottom with probability 0.5. Defaults
            to `False`.
        rotate90: bool. Rotate by 0, 90, 180 or 270 degrees (uniformly).
            Defaults to `False`.
        scale: `(low, high)` or None. Resize by a factor drawn uniformly in
            this range. Defaults to `(0.8, 1.25)`.
        crop_size: `(height, width)` or None. Take a random crop of this size.
            Defaults to `None`.
        brightness: float in [0, 1]. Add `delta * 255`, `delta` uniform in
            `[-brightness, brightness]`. Defaults to `0.0`.
        contrast: float in [0, 1]. Scale the deviation from the mean by a
            factor uniform in `[1 - contrast, 1 + contrast]`. Defaults to
            `0.0`.
        seed: int or None. Seed of the augmentations drawn when `__call__`
            gets no `seed` (and of `vision_dataset`'s per-example seeds).
            Defaults to `None` (not reproducible).

    Examples:

    >>> augment = VisionAugment(flip_horizontal=False, rotate90=True, scale=None)
    >>> image = np.zeros((4, 6, 3), "uint8")
    >>> mask = np.zeros((4, 6), "int32")
    >>> boxes = np.array([[0, 0, 2, 1], [0, 0, 0, 0]], "float32")
    >>> out = augment(image, boxes, np.array([0, -1]), mask, seed=(0, 0))
    >>> # This seed turns by 270 degrees: (x, y) -> (H - y, x).
    >>> out[0].shape, out[1].numpy().tolist(), out[2].numpy().tolist()
    (TensorShape([6, 4, 3]), [[3.0, 0.0, 4.0, 2.0], [0.0, 0.0, 0.0, 0.0]], [0, -1])
    """

    def __init__(
        self,
        flip_horizontal: bool = True,
        flip_vertical: bool = False,
        rotate90: bool = False,
        scale: tuple[float, float] | None = (0.8, 1.25),
        crop_size: tuple[int, int] | None = None,
        brightness: float = 0.0,
        contrast: float = 0.0,
        seed: int | None = None,
    ):
        for name, value in (("brightness", brightness), ("contrast", contrast)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(
                    f"Invalid value for argument `{name}`. Expected a float in "
                    f"[0, 1]. Received: {name}={value!r}"
                )
        if crop_size is not None and (len(crop_size) != 2 or min(crop_size) < 1):
            raise ValueError(
                "Invalid value for argument `crop_size`. Expected None or "
                f"(height, width) of positive ints. Received: crop_size={crop_size!r}"
            )
        self.flip_horizontal = bool(flip_horizontal)
        self.flip_vertical = bool(flip_vertical)
        self.rotate90 = bool(rotate90)
        self.scale = _check_pair("scale", scale, 0.0)
        self.crop_size = None if crop_size is None else tuple(int(s) for s in crop_size)
        self.brightness = float(brightness)
        self.contrast = float(contrast)
        self.seed = seed
        self._generator = None

    def get_config(self) -> dict:
        return {
            "flip_horizontal": self.flip_horizontal,
            "flip_vertical": self.flip_vertical,
            "rotate90": self.rotate90,
            "scale": self.scale,
            "crop_size": self.crop_size,
            "brightness": self.brightness,
            "contrast": self.contrast,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config: dict) -> VisionAugment:
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"VisionAugment({args})"

    def _next_seed(self):
        if self._generator is None:
            self._generator = (
                tf.random.Generator.from_non_deterministic_state()
                if self.seed is None
                else tf.random.Generator.from_seed(self.seed)
            )
        return self._generator.make_seeds(1)[:, 0]

    def __call__(self, image, boxes, classes, mask, seed=None):
        """Augments one example; `seed` is a pair of ints (or int tensor `[2]`).

        Returns `(image float32, boxes, classes, mask)`.
        """
        boxes = tf.convert_to_tensor(boxes, tf.float32)
        missing = is_missing(boxes)
        image, boxes, classes, mask = self._transform(image, boxes, classes, mask, seed)
        boxes, classes = finalize_boxes(boxes, classes, missing)
        return image, boxes, classes, mask

    def _transform(self, image, boxes, classes, mask, seed=None):
        """`__call__` without the final `finalize_boxes` (rows left without
        area stay where they are): for pipelines that finalise once, last."""
        image = tf.cast(tf.convert_to_tensor(image), tf.float32)
        boxes = tf.convert_to_tensor(boxes, tf.float32)
        classes = tf.convert_to_tensor(classes, tf.int32)
        mask = tf.convert_to_tensor(mask, tf.int32)
        seed = self._next_seed() if seed is None else seed
        seeds = tf.random.experimental.stateless_split(
            tf.cast(seed, tf.int64), _NUM_DRAWS
        )

        def coin(i):
            return tf.random.stateless_uniform([], seeds[i]) < 0.5

        if self.brightness:
            delta = tf.random.stateless_uniform(
                [], seeds[0], -self.brightness, self.brightness
            )
            image = image + 255.0 * delta
        if self.contrast:
            factor = tf.random.stateless_uniform(
                [], seeds[1], max(0.0, 1.0 - self.contrast), 1.0 + self.contrast
            )
            mean = tf.reduce_mean(image)
            image = (image - mean) * factor + mean
        image = tf.clip_by_value(image, 0.0, 255.0)

        # Selections with tf.where rather than tf.cond: a smaller graph that
        # traces faster, for the price of computing an unused flip.
        if self.flip_horizontal:
            image, boxes, mask = _flip_horizontal(image, boxes, mask, coin(2))
        if self.flip_vertical:
            image, boxes, mask = _flip_vertical(image, boxes, mask, coin(3))
        if self.rotate90:
            turns = tf.random.stateless_uniform([], seeds[4], 0, 4, dtype=tf.int32)
            image, boxes, mask = _rotate90(image, boxes, mask, turns)
        if self.scale is not None:
            factor = tf.random.stateless_uniform([], seeds[5], *self.scale)
            shape = tf.cast(tf.shape(image)[:2], tf.float32)
            size = tf.maximum(tf.cast(tf.round(shape * factor), tf.int32), 1)
            image, boxes, classes, mask = resize_example(
                image, boxes, classes, mask, tf.unstack(size)
            )
            image = tf.clip_by_value(image, 0.0, 255.0)
        if self.crop_size is not None:
            offset = random_crop_offset(image, self.crop_size, seeds[6])
            image, boxes, classes, mask = crop_example(
                image, boxes, classes, mask, offset, self.crop_size
            )
        return image, boxes, classes, mask
