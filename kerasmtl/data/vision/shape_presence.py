"""Synthetic multi-label images: which of five shapes an image shows.

`synthetic_shape_images` draws coloured shapes (a square outline, a filled
disk, a triangle, a horizontal and a vertical bar) on noise; label `j` is 1
when `SHAPE_NAMES[j]` is drawn, anywhere, in any colour and size. The
multi-label zoo CNN (`zoo.multilabel.multilabel_cnn`) trains on it. For
boxes and masks of shapes, see `kerasmtl.data.vision.synthetic`.
Numpy only and deterministic by `seed`.
"""

from __future__ import annotations

import numpy as np

SHAPE_NAMES = ("square", "disk", "triangle", "horizontal_line", "vertical_line")


def synthetic_shape_images(
    n: int, image_size: tuple[int, int] = (32, 32), seed: int = 0,
    presence: float = 0.4,
) -> tuple[np.ndarray, np.ndarray]:
    """Images of coloured shapes on noise; label `j` is 1 when shape
    `SHAPE_NAMES[j]` is drawn (anywhere, any colour, any size).

    Args:
        n: int. Number of images.
        image_size: `(height, width)`, each at least 16. Defaults to `(32, 32)`.
        seed: int. Defaults to `0`.
        presence: float in (0, 1). Probability of each shape. Defaults to `0.4`.

    Returns:
        `(images, labels)`: float32 `(n, h, w, 3)` in [0, 1], int32 `(n, 5)`.

    Examples:

    >>> images, labels = synthetic_shape_images(3, (16, 16), seed=1)
    >>> images.shape, labels.shape, float(images.min()) >= 0.0
    ((3, 16, 16, 3), (3, 5), True)
    """
    height, width = int(image_size[0]), int(image_size[1])
    if min(height, width) < 16:
        raise ValueError(
            "Invalid value for argument `image_size`. Expected (height, width), "
            f"each at least 16. Received: image_size={image_size!r}"
        )
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, len(SHAPE_NAMES))) < presence).astype("int32")
    images = 0.15 * rng.random((n, height, width, 3))
    rows, cols = np.mgrid[0:height, 0:width]
    smallest = min(height, width)
    for i in range(n):
        for j in np.flatnonzero(labels[i]):
            size = int(rng.integers(smallest // 4, smallest // 2 + 1))
            top = int(rng.integers(0, height - size + 1))
            left = int(rng.integers(0, width - size + 1))
            r, c = rows - top, cols - left
            inside = (r >= 0) & (r < size) & (c >= 0) & (c < size)
            thick = max(1, size // 6)
            mid = size // 2
            shape = SHAPE_NAMES[j]
            if shape == "square":  # an outline: distinct from the filled disk
                mask = inside & ((r < thick) | (r >= size - thick)
                                 | (c < thick) | (c >= size - thick))
            elif shape == "disk":
                mask = (r - mid) ** 2 + (c - mid) ** 2 <= (size / 2) ** 2
            elif shape == "triangle":
                mask = inside & (c <= r)
            elif shape == "horizontal_line":
                mask = inside & (np.abs(r - mid) < thick)
            else:
                mask = inside & (np.abs(c - mid) < thick)
            images[i][mask] = rng.uniform(0.5, 1.0, size=3)
    return images.astype("float32"), labels
