"""COCO mean average precision for object detection, in numpy.

`coco_map(ground_truth, detections)` scores a whole data set as pycocotools'
`COCOeval` does in bbox mode (it agrees with it to 1e-3 in the tests), and
`DetectionEvaluator` accumulates batches of labels and post-processed model
outputs and calls it.

The COCO definition, step by step:

- Per image and class, detections are sorted by score (ties keep their input
  order) and only the `max_detections` best are kept (per image *and class*,
  as `COCOeval` does).
- At each IoU threshold t, detections are matched greedily in score order:
  each takes the still unmatched ground-truth box of its class with the
  highest IoU >= t (on ties, the later box), preferring boxes inside the area
  range; a detection matched to a box outside the area range, or unmatched
  and itself outside it, is ignored.
- Per class, all images' detections are sorted by score; precision is made
  monotone (the running maximum from the right) and read at the 101 recall
  levels 0, 0.01, ..., 1 (0 beyond the highest recall reached); AP is their
  mean. A class with no ground-truth box in the data set has no AP and is left
  out of the means, as `COCOeval` does (its detections count nowhere).
- `map` is the mean AP over classes and the thresholds 0.50:0.05:0.95;
  `map_50` and `map_75` use one threshold. With no ground-truth box at all,
  every mean is NaN (`COCOeval` prints -1).

Boxes are `xyxy` in absolute pixels (the kerasmtl box format); a box's area
is `(x2 - x1) * (y2 - y1)`, COCO's `w * h` with no `+1`. Crowd boxes are not
supported. Padding rows (class `-1`) are skipped. An image whose label is
*missing* (boxes NaN, `kerasmtl.boxes.missing_detection_label`) is left out
with its detections: it is unannotated, not empty. Turning batches or
per-image dicts into clean per-image arrays is `detection_inputs`' job.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from kerasmtl.metrics.detection_inputs import as_images, clean_image

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_LEVELS = np.linspace(0.0, 1.0, 101)
ALL_AREAS = (0.0, 1e10)  # COCO's "all": [0, 1e5 ** 2]
COCO_AREA_RANGES = {
    "small": (0.0, 32.0**2),
    "medium": (32.0**2, 96.0**2),
    "large": (96.0**2, 1e10),
}


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix `[len(a), len(b)]` of xyxy boxes (COCO's, without +1).

    Not `kerasmtl.boxes.box_iou`, which computes in float32: matches compare
    IoUs with thresholds, and `COCOeval` computes them in float64."""
    low = np.maximum(a[:, None, :2], b[None, :, :2])
    high = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(high - low, 0, None), axis=-1)
    union = _area(a)[:, None] + _area(b)[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _area(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


# -- matching and AP ------------------------------------------------------------------


def _match_image(gt_boxes, dt_boxes, area_range, thresholds):
    """COCOeval.evaluateImg for one image, one class, one area range. `dt_boxes`
    come sorted by score. Returns `(dt_matched [T, D], dt_ignored [T, D],
    num_gt_counted)`."""
    lo, hi = area_range
    gt_ignored = (_area(gt_boxes) < lo) | (_area(gt_boxes) > hi)
    order = np.argsort(gt_ignored, kind="mergesort")  # counted boxes first
    gt_boxes, gt_ignored = gt_boxes[order], gt_ignored[order]
    ious = _box_iou(dt_boxes, gt_boxes)
    num_t, num_d, num_g = len(thresholds), len(dt_boxes), len(gt_boxes)
    matched = np.zeros((num_t, num_d), bool)
    ignored = np.zeros((num_t, num_d), bool)
    for t, threshold in enumerate(thresholds):
        taken = np.zeros(num_g, bool)
        for d in range(num_d):
            best = -1
            for group in (~gt_ignored, gt_ignored):  # a counted box wins first
                ok = group & ~taken & (ious[d] >= min(threshold, 1 - 1e-10))
                if ok.any():
                    candidates = np.flatnonzero(ok)
                    values = ious[d, candidates]
                    # The last of the best: COCOeval replaces on equal IoU.
                    best = candidates[len(values) - 1 - np.argmax(values[::-1])]
                    break
            if best >= 0:
                taken[best] = True
                matched[t, d] = True
                ignored[t, d] = gt_ignored[best]
    dt_outside = (_area(dt_boxes) < lo) | (_area(dt_boxes) > hi)
    ignored |= ~matched & dt_outside[None, :]
    return matched, ignored, int((~gt_ignored).sum())


def _average_precision(scores, matched, ignored, num_gt):
    """COCOeval.accumulate for one class: `(ap [T], recall [T])` from the
    concatenated per-image matches (scores sorted stably, descending)."""
    order = np.argsort(-scores, kind="mergesort")
    matched, ignored = matched[:, order], ignored[:, order]
    tps = np.cumsum(matched & ~ignored, axis=1, dtype=np.float64)
    fps = np.cumsum(~matched & ~ignored, axis=1, dtype=np.float64)
    ap = np.zeros(len(matched))
    recall = np.zeros(len(matched))
    for t in range(len(matched)):
        tp, fp = tps[t], fps[t]
        if not len(tp):
            continue
        rc = tp / num_gt
        pr = tp / (tp + fp + np.spacing(1))
        recall[t] = rc[-1]
        pr = np.maximum.accumulate(pr[::-1])[::-1]
        index = np.searchsorted(rc, RECALL_LEVELS, side="left")
        ap[t] = np.sum(pr[index[index < len(pr)]]) / len(RECALL_LEVELS)
    return ap, recall


def coco_map(
    ground_truth,
    detections,
    *,
    iou_thresholds=IOU_THRESHOLDS,
    max_detections: int = 100,
    area_ranges: Mapping[str, tuple[float, float]] | None = None,
    prefix: str = "detection",
) -> dict:
    """COCO mAP of `detections` against `ground_truth` over a data set.

    Args:
        ground_truth: a list with one dict per image, `{"boxes": [N, 4] xyxy
            pixels, "classes": [N]}` (rows of class -1 are padding), or the
            padded batch `{"boxes": [B, M, 4], "classes": [B, M]}` of a
            `Detection` label.
        detections: a list with one dict per image, `{"boxes", "scores",
            "classes"}`, or the padded arrays of `Detection.postprocess`
            (`<prefix>_boxes_xyxy`, `<prefix>_scores`, `<prefix>_classes` and
            `num_detections` / `<prefix>_num_detections`).
        iou_thresholds: 1-D array of IoU thresholds. Defaults to COCO's
            0.50:0.05:0.95; `map_50` / `map_75` need 0.5 / 0.75 among them.
        max_detections: int. Detections kept per image and class. Defaults
            to `100`.
        area_ranges: dict of name -> (min_area, max_area) in pixels², or None.
            Each adds `map_<name>` (e.g. `COCO_AREA_RANGES`: small, medium,
            large). Defaults to `None`.
        prefix: str. The `Detection` task's name, for padded detections.
            Defaults to `"detection"`.

    Returns:
        A dict: `map` (AP@[.50:.95]), `map_50`, `map_75`, `mar` (recall with
        `max_detections`, averaged over thresholds and classes), `map_<area>`
        per area range, `per_class` ({class id: AP@[.50:.95]}) and
        `per_class_50` ({class id: AP@.50}), for classes with a ground-truth
        box.

    Examples:

    One box of class 0; the first detection overlaps it with IoU 0.72, so it
    is a true positive (precision 1 at recall 1) at the 5 thresholds
    0.50..0.70 and misses at the other 5; the second is a false positive
    ranked after it. AP = 5 / 10:

    >>> gt = [{"boxes": [[0, 0, 10, 10]], "classes": [0]}]
    >>> dt = [{"boxes": [[0, 0, 10, 7.2], [50, 50, 60, 60]],
    ...        "scores": [0.9, 0.8], "classes": [0, 0]}]
    >>> result = coco_map(gt, dt)
    >>> [round(result[k], 4) for k in ("map", "map_50", "map_75")]
    [0.5, 1.0, 0.0]

    (COCO's precision is `tp / (tp + fp + eps)`, hence the rounding.)
    """
    thresholds = np.asarray(iou_thresholds, np.float64).reshape(-1)
    if thresholds.size == 0 or np.any((thresholds <= 0) | (thresholds > 1)):
        raise ValueError(
            "coco_map: `iou_thresholds` must be a non-empty list of values in "
            f"(0, 1]. Received: {iou_thresholds!r}"
        )
    if (
        isinstance(max_detections, bool)
        or not isinstance(max_detections, (int, np.integer))
        or max_detections < 1
    ):
        raise ValueError(
            "coco_map: invalid value for argument `max_detections`. Expected an "
            f"int >= 1. Received: max_detections={max_detections!r}"
        )
    gt_images = as_images(ground_truth, "ground_truth", prefix)
    dt_images = as_images(detections, "detections", prefix)
    if len(gt_images) != len(dt_images):
        raise ValueError(
            f"coco_map: {len(gt_images)} images of ground truth but "
            f"{len(dt_images)} of detections; give one entry per image to both."
        )
    gts, dts = [], []
    for i, (gt, dt) in enumerate(zip(gt_images, dt_images)):
        gt = clean_image(gt, i, "ground_truth")
        dt = clean_image(dt, i, "detections")
        if gt is not None:  # a missing label leaves the image out
            gts.append(gt)
            dts.append(dt)
    ranges = {
        "": ALL_AREAS,
        **{f"_{k}": tuple(v) for k, v in (area_ranges or {}).items()},
    }
    classes = sorted({int(c) for gt in gts for c in gt["classes"]})
    ap = {key: {} for key in ranges}  # {range: {class: ap [T]}}
    recall = {}
    for c in classes:
        per_image = []
        for gt, dt in zip(gts, dts):
            g = gt["boxes"][gt["classes"] == c]
            in_class = dt["classes"] == c
            order = np.argsort(-dt["scores"][in_class], kind="mergesort")[
                :max_detections
            ]
            per_image.append(
                (g, dt["boxes"][in_class][order], dt["scores"][in_class][order])
            )
        for key, area_range in ranges.items():
            scores, matched, ignored, num_gt = [], [], [], 0
            for g, d, s in per_image:
                if not len(g) and not len(d):
                    continue
                m, ig, n = _match_image(g, d, area_range, thresholds)
                scores.append(s)
                matched.append(m)
                ignored.append(ig)
                num_gt += n
            if num_gt == 0:
                continue  # no box of this class in the range: no AP
            ap[key][c], rc = _average_precision(
                np.concatenate(scores),
                np.concatenate(matched, 1),
                np.concatenate(ignored, 1),
                num_gt,
            )
            if key == "":
                recall[c] = rc
    result = {
        "map": _mean(ap[""].values()),
        "map_50": _at(ap[""], thresholds, 0.5),
        "map_75": _at(ap[""], thresholds, 0.75),
        "mar": _mean(recall.values()),
    }
    for key in ranges:
        if key:
            result[f"map{key}"] = _mean(ap[key].values())
    result["per_class"] = {c: float(np.mean(v)) for c, v in ap[""].items()}
    result["per_class_50"] = {c: _at({c: v}, thresholds, 0.5) for c, v in ap[""].items()}
    return result


def _mean(values) -> float:
    values = list(values)
    return float(np.mean(np.stack(values))) if values else float("nan")


def _at(ap: dict, thresholds, value: float) -> float:
    index = np.flatnonzero(np.isclose(thresholds, value))
    if not index.size or not ap:
        return float("nan")
    return float(np.mean([v[index[0]] for v in ap.values()]))


class DetectionEvaluator:
    """Accumulates batches of detection labels and predictions; `result()`
    is `coco_map` over everything seen.

    Args:
        prefix: str. The `Detection` task's name: the key of its labels in a
            label dict and the prefix of its post-processed outputs. Defaults
            to `"detection"`.
        keys: sequence of str or None. The entries of `coco_map`'s result
            that `result()` returns, as floats. Defaults to `None`: all of
            them, as `coco_map` returns them.
        **kwargs: arguments of `coco_map` (`iou_thresholds`, `max_detections`,
            `area_ranges`).

    Examples:

    >>> evaluator = DetectionEvaluator()
    >>> labels = {"boxes": np.array([[[0, 0, 10, 10], [0, 0, 0, 0]]], "float32"),
    ...           "classes": np.array([[1, -1]])}
    >>> predictions = {"detection_boxes_xyxy": np.array([[[0, 0, 10, 10]]], "float32"),
    ...                "detection_scores": np.array([[0.9]], "float32"),
    ...                "detection_classes": np.array([[1]]),
    ...                "num_detections": np.array([1])}
    >>> evaluator.update(labels, predictions)
    >>> round(evaluator.result()["map"], 4)
    1.0
    """

    def __init__(self, prefix: str = "detection", keys=None, **kwargs):
        self.prefix = prefix
        self.keys = None if keys is None else tuple(keys)
        self.kwargs = kwargs
        coco_map([], [], **kwargs)  # checks the arguments now
        self.reset()

    def reset(self) -> None:
        self._ground_truth: list[dict] = []
        self._detections: list[dict] = []

    def update(self, labels, predictions) -> None:
        """Adds one batch. `labels`: a padded label dict (or a dict of labels
        keyed by task name, holding `prefix`), or a list of per-image dicts;
        `predictions`: `Detection.postprocess` outputs (or
        `MultiTaskModel.postprocess`'s dict), or a list of per-image dicts."""
        if isinstance(labels, Mapping) and self.prefix in labels:
            labels = labels[self.prefix]
        if isinstance(labels, Mapping):
            labels = {k: np.asarray(v) for k, v in labels.items()}
        if isinstance(predictions, Mapping):
            predictions = {k: np.asarray(v) for k, v in predictions.items()}
        ground_truth = as_images(labels, "ground_truth", self.prefix)
        detections = as_images(predictions, "detections", self.prefix)
        if len(ground_truth) != len(detections):
            raise ValueError(
                f"DetectionEvaluator.update: {len(ground_truth)} labelled images but "
                f"{len(detections)} predicted; pass the same batch to both."
            )
        self._ground_truth.extend(ground_truth)
        self._detections.extend(detections)

    def result(self) -> dict:
        result = coco_map(
            self._ground_truth, self._detections, prefix=self.prefix, **self.kwargs
        )
        if self.keys is None:
            return result
        return {key: float(result[key]) for key in self.keys}
