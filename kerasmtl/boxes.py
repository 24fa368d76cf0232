"""Bounding-box utilities shared by data readers, the detection task and metrics.

One box format everywhere in kerasmtl: Keras' `"xyxy"`
(`keras.utils.bounding_boxes`), `[x_min, y_min, x_max, y_max]` in absolute
pixel coordinates of the (possibly resized) image, float32. A detection label
is a dict padded to `max_boxes` rows, as in keras-hub:

```
{"boxes": float32 [M, 4], "classes": int32 [M]}    (batched: [B, M, 4], [B, M])
```

Padding rows have class `-1` and box `0`; an image with no objects is all
padding. An image *without* a detection label has `NaN` in every box and `-1`
in every class (`missing_detection_label`), the generic "missing" rule.

Functions take numpy arrays (or lists) and return numpy arrays; given tensors
(`convert_format`, `clip_boxes`, `box_iou`) they use `keras.ops` and work in
graphs and `tf.data` pipelines.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
from keras import ops

FORMATS = ("xyxy", "yxyx", "xywh", "center_xywh", "center_yxhw")


def convert_format(boxes, source: str, target: str, height=None, width=None):
    """Converts boxes between formats, as `keras.utils.bounding_boxes`.

    Formats (last axis of size 4): `"xyxy"` (x_min, y_min, x_max, y_max),
    `"yxyx"`, `"xywh"` (x_min, y_min, width, height), `"center_xywh"`
    (center x, center y, width, height), `"center_yxhw"`, each absolute
    (pixels) or, with a `"rel_"` prefix, relative to the image size (then
    `height` and `width` are needed).

    Args:
        boxes: array or tensor `[..., 4]`.
        source: str. The format of `boxes`.
        target: str. The format to return.
        height: number or None. Image height, for relative formats.
        width: number or None. Image width, for relative formats.

    Returns:
        The boxes in `target` format: a numpy float32 array for numpy input,
        else a tensor.

    Examples:

    >>> convert_format([[10, 20, 30, 60]], "xyxy", "center_xywh").tolist()
    [[20.0, 40.0, 20.0, 40.0]]
    >>> convert_format([[0.5, 0.5, 1.0, 1.0]], "rel_xyxy", "xyxy", 64, 32).tolist()
    [[16.0, 32.0, 32.0, 64.0]]
    """
    xp = _namespace(boxes)
    boxes = _as_float(boxes)
    if boxes.shape[-1] != 4:
        raise ValueError(
            f"Boxes must have a last axis of size 4, got shape {tuple(boxes.shape)}."
        )
    x1, y1, x2, y2 = _to_xyxy(boxes, _check_format(source), height, width)
    target_format = _check_format(target)
    if target_format.startswith("rel_"):
        _check_size(target_format, height, width)
        x1, x2 = x1 / float(width), x2 / float(width)
        y1, y2 = y1 / float(height), y2 / float(height)
    kind = target_format.removeprefix("rel_")
    columns = {
        "xyxy": (x1, y1, x2, y2),
        "yxyx": (y1, x1, y2, x2),
        "xywh": (x1, y1, x2 - x1, y2 - y1),
        "center_xywh": ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1),
        "center_yxhw": ((y1 + y2) / 2, (x1 + x2) / 2, y2 - y1, x2 - x1),
    }[kind]
    return xp.stack(columns, axis=-1)


def clip_boxes(boxes, height, width):
    """Clips xyxy boxes to the image `[0, width] x [0, height]`.

    NaN coordinates (missing labels) stay NaN.

    Examples:

    >>> clip_boxes([[-5.0, 10.0, 40.0, 70.0]], height=64, width=32).tolist()
    [[0.0, 10.0, 32.0, 64.0]]
    """
    xp = _namespace(boxes)
    boxes = _as_float(boxes)
    x1, y1, x2, y2 = (boxes[..., i] for i in range(4))
    return xp.stack(
        [xp.clip(x1, 0.0, width), xp.clip(y1, 0.0, height),
         xp.clip(x2, 0.0, width), xp.clip(y2, 0.0, height)], axis=-1,
    )


def box_iou(boxes1, boxes2):
    """Pairwise intersection over union of xyxy boxes.

    Formula:
    ```
    iou[i, j] = area(b1_i ∩ b2_j) / area(b1_i ∪ b2_j)   (0 if the union is empty)
    ```

    Args:
        boxes1: array or tensor `[..., N, 4]`.
        boxes2: array or tensor `[..., M, 4]`.

    Returns:
        `[..., N, M]` IoUs.

    Examples:

    >>> # overlap 5x10 = 50, union 100 + 100 - 50 = 150
    >>> print(np.round(box_iou([[0, 0, 10, 10]], [[5, 0, 15, 10]]), 4))
    [[0.3333]]
    """
    xp = _namespace(boxes1, boxes2)
    a = _as_float(boxes1)[..., :, None, :]
    b = _as_float(boxes2)[..., None, :, :]
    low = xp.maximum(a[..., :2], b[..., :2])
    high = xp.minimum(a[..., 2:], b[..., 2:])
    inter_wh = xp.maximum(high - low, 0.0)
    inter = inter_wh[..., 0] * inter_wh[..., 1]
    union = _area(a, xp) + _area(b, xp) - inter
    if xp is np:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return ops.divide_no_nan(inter, union)


def validate_boxes(
    boxes,
    classes,
    height: int,
    width: int,
    *,
    num_classes: int | None = None,
    source: str = "image",
    warn: bool = True,
):
    """Checks one image's boxes, clips them to the image and drops empty ones.

    Boxes outside the image are clipped to it. Boxes with zero or negative
    width or height after clipping are dropped, with a warning that counts
    them (never silently). Non-finite coordinates, wrong shapes and class ids
    outside `[0, num_classes)` raise.

    Args:
        boxes: array `[N, 4]`, xyxy pixels.
        classes: array `[N]` of int class ids.
        height: int. Image height in pixels.
        width: int. Image width in pixels.
        num_classes: int or None. If given, class ids must lie in
            `[0, num_classes)`. Defaults to `None`.
        source: str. Names the image in messages (a file name, an id).
            Defaults to `"image"`.
        warn: bool. Whether dropping boxes warns. Defaults to `True`.

    Returns:
        `(boxes, classes)`: float32 `[K, 4]` and int32 `[K]`, `K <= N`.

    Examples:

    >>> boxes, classes = validate_boxes(
    ...     [[-4, 2, 10, 12], [5, 5, 5, 9]], [1, 0], height=8, width=8, warn=False)
    >>> boxes.tolist(), classes.tolist()
    ([[0.0, 2.0, 8.0, 8.0]], [1])
    """
    boxes = np.asarray(boxes, "float32")
    classes = np.asarray(classes)
    if boxes.size == 0 and classes.size == 0:
        return np.zeros((0, 4), "float32"), np.zeros((0,), "int32")
    if boxes.ndim != 2 or boxes.shape[1] != 4 or classes.shape != boxes.shape[:1]:
        raise ValueError(
            f"Boxes of {source} have shape {boxes.shape} and classes shape "
            f"{classes.shape}; expected [N, 4] xyxy boxes and [N] class ids."
        )
    if not np.all(np.isfinite(boxes)):
        raise ValueError(
            f"Boxes of {source} contain {int((~np.isfinite(boxes)).any(-1).sum())} "
            "non-finite box(es) (NaN or inf). Fix the annotation; an image without "
            "a detection label gets kerasmtl.boxes.missing_detection_label()."
        )
    if classes.dtype.kind == "f" and not np.all(classes == np.round(classes)):
        raise ValueError(f"Class ids of {source} are not integers: {classes.tolist()}.")
    classes = classes.astype("int32")
    high = num_classes if num_classes is not None else np.iinfo("int32").max
    bad = (classes < 0) | (classes >= high)
    if bad.any():
        allowed = "be >= 0" if num_classes is None else f"lie in [0, {num_classes})"
        raise ValueError(
            f"Class ids of {source} must {allowed}; found "
            f"{np.unique(classes[bad])[:10].tolist()}. Encode classes with the "
            "data set's class list (0-based); drop or relabel the others."
        )
    boxes = clip_boxes(boxes, height, width)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    dropped = int((~keep).sum())
    if dropped and warn:
        warnings.warn(
            f"{source}: dropped {dropped} of {len(keep)} box(es) with zero or "
            f"negative size after clipping to the {width}x{height} image.",
            stacklevel=2,
        )
    return boxes[keep], classes[keep]


def pad_boxes(boxes, classes, max_boxes: int, source: str = "image") -> dict:
    """Pads one image's boxes and classes to `max_boxes` rows.

    Padding rows have class `-1` and box `0`.

    Args:
        boxes: array `[N, 4]`.
        classes: array `[N]`.
        max_boxes: int. Rows of the padded label.
        source: str. Names the image in the error. Defaults to `"image"`.

    Returns:
        `{"boxes": float32 [max_boxes, 4], "classes": int32 [max_boxes]}`.

    Examples:

    >>> label = pad_boxes([[1, 2, 3, 4]], [2], max_boxes=2)
    >>> label["boxes"].tolist(), label["classes"].tolist()
    ([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]], [2, -1])
    """
    boxes = np.asarray(boxes, "float32").reshape(-1, 4)
    classes = np.asarray(classes, "int32").reshape(-1)
    if len(boxes) != len(classes):
        raise ValueError(
            f"{source} has {len(boxes)} boxes but {len(classes)} classes; give one "
            "class id per box."
        )
    if len(boxes) > max_boxes:
        raise ValueError(
            f"{source} has {len(boxes)} boxes, more than max_boxes={max_boxes}. "
            f"Raise max_boxes (to at least {len(boxes)}) in the data pipeline and "
            "the Detection task."
        )
    padded = {
        "boxes": np.zeros((max_boxes, 4), "float32"),
        "classes": np.full((max_boxes,), -1, "int32"),
    }
    padded["boxes"][: len(boxes)] = boxes
    padded["classes"][: len(classes)] = classes
    return padded


def missing_detection_label(max_boxes: int) -> dict:
    """One image's label when it has no detection annotation (masked loss).

    Every box is NaN and every class `-1`. Not the same as an image with no
    objects (all padding, boxes `0`), which trains the heat map as background.

    Examples:

    >>> label = missing_detection_label(2)
    >>> label["classes"].tolist(), bool(np.isnan(label["boxes"]).all())
    ([-1, -1], True)
    """
    return {
        "boxes": np.full((max_boxes, 4), np.nan, "float32"),
        "classes": np.full((max_boxes,), -1, "int32"),
    }


def _check_format(name: str) -> str:
    if not isinstance(name, str) or name.removeprefix("rel_") not in FORMATS:
        raise ValueError(
            f"Unknown box format {name!r}. Expected one of {list(FORMATS)}, "
            "optionally prefixed with 'rel_' (relative to the image size)."
        )
    return name


def _check_size(name, height, width):
    if height is None or width is None:
        raise ValueError(
            f"Box format {name!r} is relative to the image size: pass `height` and "
            "`width`."
        )


def _to_xyxy(boxes, source, height, width):
    kind = source.removeprefix("rel_")
    a, b, c, d = (boxes[..., i] for i in range(4))
    if kind == "xyxy":
        x1, y1, x2, y2 = a, b, c, d
    elif kind == "yxyx":
        x1, y1, x2, y2 = b, a, d, c
    elif kind == "xywh":
        x1, y1, x2, y2 = a, b, a + c, b + d
    elif kind == "center_xywh":
        x1, y1, x2, y2 = a - c / 2, b - d / 2, a + c / 2, b + d / 2
    else:  # center_yxhw
        x1, y1, x2, y2 = b - d / 2, a - c / 2, b + d / 2, a + c / 2
    if source.startswith("rel_"):
        _check_size(source, height, width)
        x1, x2 = x1 * float(width), x2 * float(width)
        y1, y2 = y1 * float(height), y2 * float(height)
    return x1, y1, x2, y2


def _area(boxes, xp):
    return xp.maximum(boxes[..., 2] - boxes[..., 0], 0.0) * xp.maximum(
        boxes[..., 3] - boxes[..., 1], 0.0
    )


def _namespace(*values):
    tensor = any(isinstance(v, keras.KerasTensor) or ops.is_tensor(v) for v in values)
    return ops if tensor else np


def _as_float(boxes):
    if _namespace(boxes) is np:
        return np.asarray(boxes, "float32")
    return ops.cast(boxes, "float32")
