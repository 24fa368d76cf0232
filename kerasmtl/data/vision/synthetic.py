"""Synthetic shapes for joint detection and segmentation (no download).

Each image holds a few circles, squares and (apex-up) triangles of random
colours and sizes on a textured background: a random base colour with
sinusoidal stripes (random direction, period and strength) plus pixel noise
over the whole image, shapes included. Labels:

- detection: the tight box of each object's *visible* pixels, in the
  pixel-edge xyxy convention of `kerasmtl.data.vision.container` (pixels in columns
  `c0..c1` give `x_min = c0`, `x_max = c1 + 1`), class id = position of the
  shape in `classes` (0-based);
- segmentation: semantic class map with **0 = background and `k + 1` for
  detection class `k`** (`mask_class_names = ["background", *classes]`);
- instance masks: an instance-id map (object `k` of the box list has id
  `k + 1`).

Occlusion: objects are drawn in order, a later one over earlier ones, and the
boxes are recomputed from the pixels left visible, so a box always tightly
encloses its object's pixels in the instance map. A new object may not hide
more than half of the still-visible pixels of an earlier one: it is placed
elsewhere, or left out after 10 tries (so an image can have fewer objects
than drawn). Objects always lie fully inside the image.

Numpy only and deterministic by `seed`; 1000 images of 64x64 take well under a
second.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kerasmtl.data.vision.container import VisionData

SHAPE_CLASSES = ("circle", "square", "triangle")
# Placements tried before an object that would hide too much is left out.
_PLACEMENT_TRIES = 10
# Smallest colour distance (sum over RGB) between a shape and its background,
# so every shape stands out from the texture.
_MIN_CONTRAST = 120


def _footprint(kind: str, size: int) -> np.ndarray:
    """bool `[size, size]`: the pixels whose centres lie inside the shape."""
    y = (np.arange(size) + 0.5)[:, None]
    x = y.T
    if kind == "circle":
        r = size / 2
        return (x - r) ** 2 + (y - r) ** 2 <= r**2
    if kind == "square":
        return np.ones((size, size), bool)
    # Apex at the top centre, base along the bottom edge.
    return np.abs(x - size / 2) * 2 <= y


def _stripes(rng, num_images, height, width):
    """A function giving image `i`'s stripes, float32 `[H, W, 1]`."""
    angle, period, strength, offset = (
        rng.uniform(low, high, size=num_images).astype("float32")
        for low, high in ((0, np.pi), (4, 16), (10, 35), (0, 2 * np.pi))
    )
    y, x = np.mgrid[0:height, 0:width].astype("float32")

    def stripes(i):
        phase = (2 * np.pi / period[i]) * (x * np.cos(angle[i]) + y * np.sin(angle[i]))
        return (strength[i] * np.sin(phase + offset[i]))[..., None]

    return stripes


def synthetic_shapes(
    num_images: int,
    *,
    image_size: int | tuple[int, int] = 64,
    max_objects: int = 4,
    min_objects: int = 1,
    classes: Sequence[str] = SHAPE_CLASSES,
    seed: int = 0,
    texture: bool = True,
    min_size: int = 8,
    max_size: int | None = None,
) -> VisionData:
    """Images of random shapes with boxes, semantic and instance masks.

    Args:
        num_images: int. Number of images.
        image_size: int or `(height, width)`. Defaults to `64`.
        max_objects: int. Most objects drawn per image. Defaults to `4`.
        min_objects: int. Fewest objects drawn per image (0 allows images with
            no objects). Defaults to `1`.
        classes: sequence of str, a subset of `"circle"`, `"square"`,
            `"triangle"` in any order; class id `k` is `classes[k]`. Defaults
            to all three.
        seed: int. The same arguments give the same images. Defaults to `0`.
        texture: bool. Stripes and noise on the background (and noise on the
            shapes); `False` gives flat colours. Defaults to `True`.
        min_size: int. Smallest side of a shape's square frame, in pixels.
            Defaults to `8`.
        max_size: int or None. Largest side; `None` means half the smaller
            image side. Defaults to `None`.

    Returns:
        A `VisionData` with `class_names = list(classes)`, masks with
        `0 = background` and `k + 1` for class `k`, and instance maps.

    Examples:

    >>> data = synthetic_shapes(2, image_size=32, seed=1)
    >>> data.images[0].shape, data.masks[0].shape, data.mask_class_names
    ((32, 32, 3), (32, 32), ['background', 'circle', 'square', 'triangle'])
    >>> boxes, classes, mask = data.boxes[0], data.classes[0], data.masks[0]
    >>> x0, y0, x1, y1 = boxes[0].astype(int)
    >>> bool((data.instance_masks[0][y0:y1, x0:x1] == 1).any())
    True
    >>> bool((mask[data.instance_masks[0] == 1] == classes[0] + 1).all())
    True
    """
    height, width = (
        (int(image_size), int(image_size))
        if np.ndim(image_size) == 0
        else (int(image_size[0]), int(image_size[1]))
    )
    classes = [str(c) for c in classes]
    unknown = sorted(set(classes) - set(SHAPE_CLASSES))
    if not classes or unknown or len(set(classes)) != len(classes):
        raise ValueError(
            "Invalid value for argument `classes`. Expected distinct names from "
            f"{list(SHAPE_CLASSES)}. Received: classes={classes!r}"
        )
    # The default is never below `min_size`; an explicit `max_size` is checked.
    max_size = (
        max(min(height, width) // 2, min_size) if max_size is None else int(max_size)
    )
    if not 1 <= min_size <= max_size <= min(height, width):
        raise ValueError(
            "Invalid shape sizes: expected 1 <= min_size <= max_size <= the "
            f"smaller image side ({min(height, width)}). Received: "
            f"min_size={min_size}, max_size={max_size}."
        )
    if not 0 <= min_objects <= max_objects:
        raise ValueError(
            "Invalid value for arguments `min_objects`/`max_objects`. Expected "
            f"0 <= min_objects <= max_objects. Received: min_objects={min_objects}, "
            f"max_objects={max_objects}"
        )
    rng = np.random.default_rng(seed)
    bases = rng.integers(0, 256, size=(num_images, 3))
    stripes = _stripes(rng, num_images, height, width) if texture else None
    # Every random draw up front (one numpy call each, not one per object).
    counts = rng.integers(min_objects, max_objects + 1, size=num_images).tolist()
    kinds = rng.integers(len(classes), size=(num_images, max_objects)).tolist()
    sizes = rng.integers(min_size, max_size + 1, size=(num_images, max_objects))
    spots = rng.random((num_images, max_objects, _PLACEMENT_TRIES, 2))
    spots = (spots * (np.array([height, width]) - sizes[..., None, None] + 1))
    spots = spots.astype(int).tolist()
    colours = rng.integers(0, 256, size=(num_images, max_objects + 1, 3))
    dull = np.abs(colours - bases[:, None]).sum(-1, keepdims=True) < _MIN_CONTRAST
    # A colour too close to the background becomes one 128 away on each channel.
    colours = np.where(dull, (bases[:, None] + 128) % 256, colours).astype("float32")
    sizes = sizes.tolist()
    footprints = {}
    images, boxes, labels, masks, instance_maps = [], [], [], [], []
    for i in range(num_images):
        instances = np.zeros((height, width), "int32")
        # visible[k]: pixels of id k still visible; background may be covered.
        visible = np.zeros(max_objects + 1, "int64")
        visible[0] = height * width * 2
        frames, drawn = [], []
        for j in range(counts[i]):
            key = (classes[kinds[i][j]], sizes[i][j])
            if key not in footprints:
                footprints[key] = _footprint(*key)
            foot, size = footprints[key], sizes[i][j]
            for y0, x0 in spots[i][j]:
                window = instances[y0 : y0 + size, x0 : x0 + size]
                hidden = np.bincount(window[foot], minlength=max_objects + 1)
                if (2 * hidden <= visible).all():
                    break
            else:
                continue
            window[foot] = len(frames) + 1
            visible -= hidden
            visible[len(frames) + 1] = foot.sum()
            frames.append((y0, x0, size))
            drawn.append(kinds[i][j])
        image_boxes = np.zeros((len(frames), 4), "float32")
        for k, (y0, x0, size) in enumerate(frames):
            own = instances[y0 : y0 + size, x0 : x0 + size] == k + 1
            rows, cols = np.flatnonzero(own.any(1)), np.flatnonzero(own.any(0))
            image_boxes[k] = (x0 + cols[0], y0 + rows[0], x0 + cols[-1] + 1,
                              y0 + rows[-1] + 1)
        drawn = np.asarray(drawn, "int32")
        # Images are made one at a time: small arrays stay in the CPU cache.
        colours[i][0] = bases[i]
        image = colours[i][instances]
        if texture:
            image += stripes(i) * (instances == 0)[..., None]
            image += rng.integers(-10, 11, size=image.shape, dtype="int8")
        images.append(np.clip(np.round(image), 0, 255).astype("uint8"))
        boxes.append(image_boxes)
        labels.append(drawn)
        masks.append(np.concatenate([[0], drawn + 1]).astype("int32")[instances])
        instance_maps.append(instances)
    return VisionData(
        images, boxes, labels, masks, class_names=classes,
        instance_masks=instance_maps,
        ids=[f"shapes_{seed}_{i}" for i in range(num_images)],
        metadata={"source": "synthetic_shapes", "seed": seed, "texture": texture},
    )
