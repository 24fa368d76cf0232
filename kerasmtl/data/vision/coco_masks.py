"""COCO segmentations as pixel masks: compressed and uncompressed RLE, and
polygons, decoded with numpy (no pycocotools needed).

Polygons are filled by the pixel-centre rule (a pixel is inside when its
centre is); this agrees with pycocotools up to a few boundary pixels (it snaps
vertices to a 1/5-pixel grid). `kerasmtl.data.vision.coco` re-exports these functions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def decode_rle_string(text: str | bytes) -> list[int]:
    """Decodes COCO's compressed RLE string into run lengths.

    Each count is stored in 5-bit groups, least significant first, as the
    characters `chr(48 + group)` with bit 0x20 set on all but the last group
    and 0x10 of the last one the sign; from the third count on, each is stored
    as the difference to the count two before.

    Examples:

    >>> decode_rle_string("414")  # a 3x3 mask with only its centre set
    [4, 1, 4]
    >>> decode_rle_string("0:1O")  # the fourth count is stored as 9 - 10
    [0, 10, 1, 9]
    """
    data = text.encode("ascii") if isinstance(text, str) else bytes(text)
    counts, p = [], 0
    while p < len(data):
        value, shift, more = 0, 0, True
        while more:
            if p >= len(data):
                raise ValueError(f"RLE string {data[:40]!r} ends inside a count.")
            group = data[p] - 48
            if not 0 <= group < 64:
                raise ValueError(
                    f"RLE string has character {chr(data[p])!r} outside '0'..'o'."
                )
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            p, shift = p + 1, shift + 5
            if not more and group & 0x10:
                value |= -1 << shift  # negative: sign-extend
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def rle_to_mask(rle: dict, height: int, width: int, where: str = "RLE") -> np.ndarray:
    """Decodes a COCO RLE (`{"size": [h, w], "counts": list or str}`) to a
    bool `[h, w]` mask. Runs alternate 0s and 1s (0s first) in column-major
    order."""
    size = rle.get("size")
    if size is None or [int(s) for s in size] != [height, width]:
        raise ValueError(
            f"{where}: RLE size {size} differs from the image size "
            f"[{height}, {width}] ([height, width])."
        )
    counts = rle.get("counts")
    if isinstance(counts, (str, bytes)):
        try:
            counts = decode_rle_string(counts)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
    counts = np.asarray(counts if counts is not None else [], dtype="int64")
    if counts.ndim != 1 or (counts < 0).any() or counts.sum() != height * width:
        raise ValueError(
            f"{where}: RLE counts must be non-negative and sum to height * width "
            f"= {height * width}; they sum to {int(counts.sum())}."
        )
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts).reshape(width, height).T


def polygons_to_mask(
    polygons: Sequence[Sequence[float]], height: int, width: int, where: str = "polygon"
) -> np.ndarray:
    """Fills COCO polygons (`[[x0, y0, x1, y1, ...], ...]`, pixel-edge
    coordinates) into a bool `[height, width]` mask: their union, each by the
    even-odd rule at pixel centres.

    Examples:

    >>> polygons_to_mask([[1, 1, 3, 1, 3, 2, 1, 2]], 3, 4).astype(int).tolist()
    [[0, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    """
    mask = np.zeros((height, width), bool)
    for k, polygon in enumerate(polygons):
        try:
            xy = np.asarray(polygon, dtype="float64")
        except (TypeError, ValueError):
            xy = np.zeros(1)
        if xy.ndim != 1 or len(xy) % 2 or len(xy) < 2 or not np.isfinite(xy).all():
            raise ValueError(
                f"{where}: polygon {k} is malformed; expected a flat list of an "
                f"even number of finite coordinates [x0, y0, x1, y1, ...]. "
                f"Received: {str(polygon)[:80]}"
            )
        mask |= _fill_polygon(xy.reshape(-1, 2), height, width)
    return mask


def _fill_polygon(xy, height, width):
    x0, y0 = xy[:, 0], xy[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    centres = np.arange(height)[:, None] + 0.5
    # An edge crosses a row when exactly one end is at or above its centre.
    rows, edges = np.nonzero((y0 <= centres) != (y1 <= centres))
    t = (rows + 0.5 - y0[edges]) / (y1[edges] - y0[edges])
    x = x0[edges] + t * (x1[edges] - x0[edges])
    # Pixels whose centre lies right of the crossing toggle inside/outside.
    start = np.clip(np.floor(x - 0.5).astype("int64") + 1, 0, width)
    toggles = np.zeros((height, width + 1), "int32")
    np.add.at(toggles, (rows, start), 1)
    return np.cumsum(toggles[:, :width], axis=1) % 2 == 1


def segmentation_to_mask(segmentation, height: int, width: int, where: str):
    """An annotation's `segmentation` (polygons or RLE) as a bool `[h, w]`
    mask, or None if it has none (missing or empty)."""
    if segmentation is None or (isinstance(segmentation, list) and not segmentation):
        return None
    if isinstance(segmentation, dict):
        return rle_to_mask(segmentation, height, width, where)
    if isinstance(segmentation, list):
        return polygons_to_mask(segmentation, height, width, where)
    raise ValueError(
        f"{where}: `segmentation` is a {type(segmentation).__name__}; expected a "
        "list of polygons or an RLE dict with `size` and `counts`."
    )
