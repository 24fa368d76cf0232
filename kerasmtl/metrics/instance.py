"""Instance segmentation in numpy: instance masks from boxes and a foreground
mask, and the Kaggle Data Science Bowl 2018 (nuclei) score.

A detection + semantic segmentation model has no mask head; its instances are
its boxes cut out of its foreground (`instance_masks_from_boxes`). The DSB-2018
metric then scores them against the true instances (`dsb2018_score` for one
image, `mean_dsb2018_score` for a data set):

```
score(image) = mean over t in 0.50, 0.55, ..., 0.95 of TP(t) / (TP(t) + FP(t) + FN(t))
```

where a predicted and a true object match at t when their IoU is *above* t
(strictly, as the competition states), each object matching at most one
other. With disjoint instances on either side (as here: t >= 0.5) a match is
unique; for overlapping ones the pairs are matched greedily by decreasing IoU.
An image with neither true nor predicted objects scores 1 (nothing to find,
nothing wrongly found); one with only one of the two scores 0. Instances with
no pixel are not objects and are left out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DSB2018_THRESHOLDS = np.linspace(0.5, 0.95, 10)


def instance_masks_from_boxes(boxes, foreground, scores=None, *, overlap: str = "score",
                              grow: float = 0.0) -> np.ndarray:
    """Instance masks `[N, H, W]` bool: each box's pixels that are foreground.

    A pixel belongs to a box when its centre `(col + 0.5, row + 0.5)` lies in
    `[x_min, x_max) x [y_min, y_max)` (boxes are xyxy in absolute pixels;
    parts outside the image are cut off). A pixel inside several boxes goes
    to one of them, so the instances are disjoint: with `overlap="score"` to
    the highest-scoring box; with `overlap="centre"` to the box whose centre
    is nearest in units of the box's half-size (`((x - cx) / (w / 2))^2 +
    ((y - cy) / (h / 2))^2`, the box's own size, before `grow`), then the
    higher score. Ties, and `scores=None`, favour the earlier box. A box over
    background only gets an empty mask. Strip padding rows (class -1) before
    calling.

    `grow` enlarges each box's footprint by `grow` times its width (height)
    on the left and right (top and bottom): boxes from a detector are often
    a little tight, and the foreground, not the box, then decides the
    outline. With `overlap="centre"` the neighbours of touching objects
    split the pixels between them by distance instead of the better score
    taking the whole overlap.

    Args:
        boxes: array `[N, 4]` of xyxy boxes in pixels.
        foreground: array `[H, W]`: bool, or a class map / scores where values
            `> 0` are foreground (0 = background, -1 = unknown both count as
            background).
        scores: optional array `[N]` of box scores. Defaults to `None`.
        overlap: `"score"` or `"centre"`: which box a pixel in several boxes
            goes to. Defaults to `"score"`.
        grow: float >= 0. Footprint growth per side, as a share of the box's
            size. Defaults to `0.0`.

    Examples:

    >>> fg = np.ones((4, 6), bool)
    >>> masks = instance_masks_from_boxes([[0, 0, 4, 4], [2, 0, 6, 2]], fg,
    ...                                   scores=[0.5, 0.9])
    >>> masks.astype(int)
    array([[[1, 1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 0, 0]],
    <BLANKLINE>
           [[0, 0, 1, 1, 1, 1],
            [0, 0, 1, 1, 1, 1],
            [0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0]]])
    """
    check_instance_rule(overlap, grow, "instance_masks_from_boxes")
    foreground = np.asarray(foreground)
    if foreground.ndim != 2:
        raise ValueError(
            "instance_masks_from_boxes: `foreground` has shape "
            f"{foreground.shape}; expected [H, W] (one image, no channel axis)."
        )
    foreground = foreground if foreground.dtype == bool else foreground > 0
    height, width = foreground.shape
    boxes = np.asarray(boxes, np.float64)
    boxes = boxes.reshape(0, 4) if boxes.size == 0 else boxes
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(
            f"instance_masks_from_boxes: `boxes` has shape {boxes.shape}; expected "
            "[N, 4] xyxy boxes in pixels."
        )
    if not np.all(np.isfinite(boxes)):
        raise ValueError(
            "instance_masks_from_boxes: `boxes` contains NaN or infinite values; "
            "strip padding and missing rows first."
        )
    n = boxes.shape[0]
    if scores is None:
        order = np.arange(n)
    else:
        scores = np.asarray(scores, np.float64).reshape(-1)
        if scores.shape[0] != n:
            raise ValueError(
                f"instance_masks_from_boxes: {n} boxes but {scores.shape[0]} scores."
            )
        order = np.argsort(-scores, kind="stable")
    # float32 like the serving graph's `instance_id_map`, which this mirrors
    # pixel for pixel.
    boxes32 = boxes.astype(np.float32)
    size = boxes32[:, 2:] - boxes32[:, :2]
    footprint = boxes32 + np.float32(grow) * np.concatenate([-size, size], axis=1)
    # Pixel index range [start, stop) of each box: centres inside the box.
    cols = np.clip(np.ceil(footprint[:, [0, 2]] - 0.5), 0, width).astype(int)
    rows = np.clip(np.ceil(footprint[:, [1, 3]] - 0.5), 0, height).astype(int)
    owner = np.full((height, width), -1)
    distance = np.full((height, width), np.inf)
    centre = (boxes32[:, :2] + boxes32[:, 2:]) * np.float32(0.5)
    half = np.maximum(size * np.float32(0.5), np.float32(1e-6))
    for i in order[::-1]:  # the best box is written last and wins
        window = (slice(rows[i, 0], rows[i, 1]), slice(cols[i, 0], cols[i, 1]))
        if overlap == "score":
            owner[window] = i
            continue
        y, x = np.mgrid[window].astype(np.float32) + np.float32(0.5)
        dx, dy = (x - centre[i, 0]) / half[i, 0], (y - centre[i, 1]) / half[i, 1]
        d = dx * dx + dy * dy
        closer = d <= distance[window]  # equal: the better box, written later
        owner[window][closer] = i
        distance[window][closer] = d[closer]
    owner[~foreground] = -1
    return owner[None] == np.arange(n)[:, None, None]


INSTANCE_OVERLAPS = ("score", "centre")


def check_instance_rule(overlap, grow, caller: str) -> None:
    """Raises a clear error for an unknown `overlap` or a bad `grow`."""
    if overlap not in INSTANCE_OVERLAPS:
        raise ValueError(
            f"{caller}: `overlap` must be one of {INSTANCE_OVERLAPS}. Received: "
            f"overlap={overlap!r}"
        )
    if (isinstance(grow, bool) or not isinstance(grow, (int, float, np.floating))
            or not np.isfinite(grow) or grow < 0):
        raise ValueError(
            f"{caller}: `grow` must be a finite number >= 0 (a share of each box's "
            f"size added on each side). Received: grow={grow!r}"
        )


def _as_instances(masks, name: str) -> np.ndarray:
    masks = np.asarray(masks)
    if masks.ndim == 2:  # a label image: 0 background, each id > 0 an object
        ids = np.unique(masks[masks > 0])
        masks = masks[None] == ids[:, None, None]
    if masks.ndim != 3:
        raise ValueError(
            f"dsb2018_score: `{name}` has shape {masks.shape}; expected instance "
            "masks [N, H, W] or a label image [H, W] (0 = background)."
        )
    masks = masks.astype(bool)
    return masks[masks.any(axis=(1, 2))]


def instance_iou(true_masks, pred_masks) -> np.ndarray:
    """IoU matrix `[num_true, num_pred]` between instance masks (or label
    images), leaving out instances with no pixel."""
    true = _as_instances(true_masks, "true_masks")
    pred = _as_instances(pred_masks, "pred_masks")
    if true.shape[1:] != pred.shape[1:]:
        raise ValueError(
            f"dsb2018_score: true masks are {true.shape[1:]} (H, W) but predicted "
            f"masks are {pred.shape[1:]}; predict at the image's size."
        )
    pixels = int(np.prod(true.shape[1:]))
    t = true.reshape(true.shape[0], pixels).astype(np.float64)
    p = pred.reshape(pred.shape[0], pixels).astype(np.float64)
    inter = t @ p.T
    union = t.sum(1)[:, None] + p.sum(1)[None, :] - inter
    return inter / np.maximum(union, 1.0)


def _match_count(iou: np.ndarray, threshold: float) -> int:
    """Greedy one-to-one matching of pairs with IoU > threshold."""
    rows, cols = np.nonzero(iou > threshold)
    order = np.argsort(-iou[rows, cols], kind="stable")
    used_t, used_p, count = set(), set(), 0
    for r, c in zip(rows[order], cols[order]):
        if r not in used_t and c not in used_p:
            used_t.add(r)
            used_p.add(c)
            count += 1
    return count


def dsb2018_score(true_masks, pred_masks, thresholds=DSB2018_THRESHOLDS) -> float:
    """The Kaggle DSB-2018 score of one image (see the module docstring).

    Args:
        true_masks: bool array `[G, H, W]` of true instances, or a label
            image `[H, W]` (0 = background, each id > 0 one object).
        pred_masks: the predicted instances, same forms.
        thresholds: IoU thresholds. Defaults to 0.50:0.05:0.95.

    Examples:

    Two true nuclei of 4 pixels. The first prediction covers nucleus 1 with
    3 of its pixels (IoU 3/4); the second covers nucleus 2 and 4 more pixels
    (IoU 4/8 = 0.5, never above a threshold); the third is a false positive.
    At t = 0.50..0.70 (5 thresholds): TP 1, FP 2, FN 1 -> 1/4; at t >= 0.75:
    TP 0, FP 3, FN 2 -> 0. Score = 5 * 0.25 / 10:

    >>> true = np.zeros((4, 8), int)
    >>> true[0:2, 0:2] = 1
    >>> true[0:2, 4:6] = 2
    >>> pred = np.zeros((4, 8), int)
    >>> pred[0:2, 0:2] = 1
    >>> pred[1, 1] = 0
    >>> pred[0:4, 4:6] = 2
    >>> pred[3, 0] = 3
    >>> dsb2018_score(true, pred)
    0.125
    """
    thresholds = np.asarray(thresholds, np.float64).reshape(-1)
    iou = instance_iou(true_masks, pred_masks)
    num_true, num_pred = iou.shape
    if num_true + num_pred == 0:
        return 1.0
    values = []
    for t in thresholds:
        tp = _match_count(iou, t)
        values.append(tp / (num_true + num_pred - tp))  # TP + FP + FN
    return float(np.mean(values))


def mean_dsb2018_score(
    true_masks: Sequence, pred_masks: Sequence, thresholds=DSB2018_THRESHOLDS
) -> float:
    """Mean over images of `dsb2018_score` (the competition's leaderboard
    score): `true_masks` and `pred_masks` are lists with one entry per image.

    Examples:

    >>> empty = np.zeros((2, 2), int)
    >>> mean_dsb2018_score([empty, empty + 1], [empty, empty])  # (1 + 0) / 2
    0.5
    """
    if len(true_masks) != len(pred_masks):
        raise ValueError(
            f"mean_dsb2018_score: {len(true_masks)} images of true masks but "
            f"{len(pred_masks)} of predicted masks; give one entry per image."
        )
    if not len(true_masks):
        raise ValueError("mean_dsb2018_score: no image to score.")
    return float(
        np.mean(
            [dsb2018_score(t, p, thresholds) for t, p in zip(true_masks, pred_masks)]
        )
    )
