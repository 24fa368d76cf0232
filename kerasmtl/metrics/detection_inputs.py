"""The inputs of `kerasmtl.metrics.detection`: ground truth and detections,
batched (dicts of `[B, ...]` arrays: labels, or a model's post-processed
outputs) or per image, turned into one clean dict per image (padding rows
and missing labels dropped, shapes checked, errors naming the image).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from kerasmtl.layers.detection_decoding import detection_output_names


def _prediction_keys(prefix: str) -> tuple[str, str, str, str]:
    names = detection_output_names(prefix)
    # The pixel xyxy boxes, not the OD API's normalised `<prefix>_boxes`.
    return (names["boxes_xyxy"], names["scores"], names["classes"],
            names["num_detections"])


def _unbatch(batch: Mapping, keys: Sequence[str], count_key: str | None, what: str):
    """Splits a padded batch dict into one dict per image, keys renamed to
    boxes / classes (/ scores)."""
    arrays = [np.asarray(batch[k]) for k in keys]
    if arrays[0].ndim != 3 or arrays[0].shape[-1] != 4:
        raise ValueError(
            f"{what}: `{keys[0]}` has shape {arrays[0].shape}; expected a padded "
            "batch [B, M, 4] of xyxy boxes (or pass a list with one dict per image)."
        )
    counts = None
    if count_key is not None and count_key in batch:
        counts = np.asarray(batch[count_key]).reshape(-1)
    names = ("boxes", "classes", "scores")[: len(keys)]
    images = []
    for i in range(arrays[0].shape[0]):
        n = arrays[0].shape[1] if counts is None else int(counts[i])
        images.append({name: a[i][:n] for name, a in zip(names, arrays)})
    return images


def as_images(data, kind: str, prefix: str) -> list[dict]:
    what = f"coco_map: {kind}"
    if isinstance(data, Mapping):
        if kind == "ground_truth":
            return _unbatch(data, ("boxes", "classes"), None, what)
        boxes, scores, classes, count = _prediction_keys(prefix)
        if boxes in data:
            return _unbatch(data, (boxes, classes, scores), count, what)
        if "boxes" in data:
            return _unbatch(
                data, ("boxes", "classes", "scores"), "num_detections", what
            )
        raise ValueError(
            f"{what}: a dict of padded arrays needs `{boxes}`, `{scores}`, "
            f"`{classes}` (and `{count}`), or `boxes`, `scores`, `classes`. "
            f"Received keys {sorted(data)}."
        )
    if isinstance(data, (str, bytes)) or not isinstance(data, Sequence):
        raise ValueError(
            f"{what}: expected a list with one dict per image, or a dict of padded "
            f"arrays. Received: {type(data).__name__}."
        )
    return list(data)


def clean_image(image, index: int, kind: str) -> dict | None:
    """Returns the image's valid rows as float64 / int64 arrays, or None for a
    missing label."""
    where = f"coco_map: {kind} of image {index}"
    fields = ("boxes", "classes") + (("scores",) if kind == "detections" else ())
    if not isinstance(image, Mapping) or any(f not in image for f in fields):
        raise ValueError(f"{where} must be a dict with keys {list(fields)}.")
    boxes = np.asarray(image["boxes"], np.float64).reshape(-1, 4)
    classes = np.asarray(image["classes"]).reshape(-1)
    n = boxes.shape[0]
    if classes.shape[0] != n:
        raise ValueError(
            f"{where}: {n} boxes but {classes.shape[0]} classes; give one class per "
            "box (-1 for padding rows)."
        )
    scores = None
    if kind == "detections":
        scores = np.asarray(image["scores"], np.float64).reshape(-1)
        if scores.shape[0] != n:
            raise ValueError(f"{where}: {n} boxes but {scores.shape[0]} scores.")
    keep = classes >= 0
    if kind == "ground_truth" and n and np.isnan(boxes).all():
        return None  # a missing label: the image is not annotated
    if not np.all(np.isfinite(boxes[keep])) or (
        scores is not None and not np.all(np.isfinite(scores[keep]))
    ):
        raise ValueError(
            f"{where} has NaN or infinite boxes or scores in rows with a class; "
            "only a missing label (every box NaN, classes -1) may hold NaN."
        )
    out = {"boxes": boxes[keep], "classes": classes[keep].astype(np.int64)}
    if scores is not None:
        out["scores"] = scores[keep]
    return out
