"""Semantic segmentation metrics: per-pixel confusion matrix, per-class IoU and
mean IoU, as numpy functions and as a Keras metric (`MaskedMeanIoU`).

Conventions:

- `y_true` is an int class map `[..., H, W]` (a trailing axis of size one is
  accepted). Pixels equal to `-1` (missing) or to `ignore_class` (e.g. VOC's
  255 "void") are left out of every count. `ignore_class` only removes
  *pixels*: a known pixel predicted as `ignore_class` still counts against
  its true class, as in `keras.metrics.MeanIoU` and mmsegmentation.
- `y_pred` is either a class map of the same shape or per-pixel scores
  `[..., H, W, num_classes]` (logits or probabilities; the argmax is taken).
- IoU of class c = `tp / (tp + fp + fn)` over all pixels seen. A class absent
  from both the known labels and the predictions has no IoU (its union is
  empty) and is left out of the mean, as in `keras.metrics.MeanIoU`; with no
  class to average the mean IoU is 0.0.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops


def _check_num_classes(num_classes, where: str) -> int:
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, (int, np.integer))
        or num_classes < 1
    ):
        raise ValueError(
            f"{where}: invalid value for argument `num_classes`. Expected an int "
            f">= 1. Received: num_classes={num_classes!r}"
        )
    return int(num_classes)


def _check_ignore_class(ignore_class, where: str):
    if ignore_class is None:
        return None
    if isinstance(ignore_class, bool) or not isinstance(
        ignore_class, (int, np.integer)
    ):
        raise ValueError(
            f"{where}: invalid value for argument `ignore_class`. Expected an int "
            f"(e.g. 255) or None. Received: ignore_class={ignore_class!r}"
        )
    return int(ignore_class)


def confusion_matrix(
    y_true, y_pred, num_classes: int, ignore_class=None, sample_weight=None
) -> np.ndarray:
    """Pixel confusion matrix `[num_classes, num_classes]` (rows: true class,
    columns: predicted class), float64, leaving out pixels labelled -1 or
    `ignore_class`.

    Args:
        y_true: int array `[..., H, W]` (or `[..., H, W, 1]`).
        y_pred: int class map of the same shape, or scores `[..., H, W,
            num_classes]`.
        num_classes: int. Number of classes.
        ignore_class: int or None. Label value to leave out. Defaults to `None`.
        sample_weight: optional array broadcastable to `y_true` (e.g. one
            weight per image `[B, 1, 1]`). Defaults to `None`.

    Examples:

    >>> confusion_matrix([[0, 0, 1, -1]], [[0, 1, 1, 1]], num_classes=2)
    array([[1., 1.],
           [0., 1.]])
    """
    where = "confusion_matrix"
    num_classes = _check_num_classes(num_classes, where)
    ignore_class = _check_ignore_class(ignore_class, where)
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_pred.ndim == y_true.ndim + 1 or (
        y_pred.ndim == y_true.ndim
        and y_true.shape[-1:] == (1,)
        and y_pred.shape[-1:] == (num_classes,)
        and num_classes > 1
    ):
        y_pred = np.argmax(y_pred, axis=-1)
    if y_true.ndim == y_pred.ndim + 1 and y_true.shape[-1:] == (1,):
        y_true = y_true[..., 0]
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"{where}: `y_true` has shape {y_true.shape} and the predicted class "
            f"map has shape {y_pred.shape}. Expected the same [..., H, W] (scores "
            f"may add a last axis of {num_classes} classes); resize the mask to "
            "the image."
        )
    if y_true.dtype.kind == "f" and np.isnan(y_true).any():
        raise ValueError(
            f"{where}: `y_true` contains NaN; mark missing pixels with -1."
        )
    known = y_true >= 0
    if ignore_class is not None:
        known &= y_true != ignore_class
    bad_true = known & (y_true >= num_classes)
    bad_pred = (y_pred < 0) | (y_pred >= num_classes)
    if bad_true.any() or bad_pred.any():
        values = np.unique(np.concatenate([y_true[bad_true], y_pred[bad_pred]]))
        raise ValueError(
            f"{where}: class ids must lie in [0, {num_classes}) (labels may also be "
            f"-1 or ignore_class={ignore_class}); found {values[:5].tolist()}."
        )
    weights = (
        np.ones(y_true.shape)
        if sample_weight is None
        else np.broadcast_to(np.asarray(sample_weight, np.float64), y_true.shape)
    )
    index = y_true[known].astype(np.int64) * num_classes + y_pred[known].astype(
        np.int64
    )
    counts = np.bincount(index, weights=weights[known], minlength=num_classes**2)
    return counts.reshape(num_classes, num_classes).astype(np.float64)


def iou_from_confusion(matrix) -> np.ndarray:
    """Per-class IoU `tp / (tp + fp + fn)` from a confusion matrix; NaN for a
    class absent from both labels and predictions.

    Examples:

    >>> iou_from_confusion(np.array([[1.0, 1.0], [0.0, 1.0]])).tolist()
    [0.5, 0.5]
    """
    matrix = np.asarray(matrix, np.float64)
    tp = np.diag(matrix)
    union = matrix.sum(0) + matrix.sum(1) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)


def mean_iou(
    y_true, y_pred, num_classes: int, ignore_class=None, sample_weight=None
) -> float:
    """Mean over classes of the pixel IoU, leaving out pixels labelled -1 or
    `ignore_class` and classes absent from both labels and predictions.

    Arguments as `confusion_matrix`. Equal to `keras.metrics.MeanIoU` on the
    same pixels.

    Examples:

    Class 0: tp=1, fp=0, fn=1 -> 1/2; class 1: tp=1, fp=1, fn=0 -> 1/2; class 2
    never occurs and is left out; the -1 pixel is skipped:

    >>> mean_iou([[0, 0, 1, -1]], [[0, 1, 1, 2]], num_classes=3)
    0.5
    """
    iou = iou_from_confusion(
        confusion_matrix(y_true, y_pred, num_classes, ignore_class, sample_weight)
    )
    present = ~np.isnan(iou)
    return float(iou[present].mean()) if present.any() else 0.0


class SegmentationEvaluator:
    """Accumulates a confusion matrix over batches; `result()` is the data
    set's mean IoU and pixel accuracy over known pixels (the data-set-level
    evaluator of a `Segmentation` task).

    Args:
        name: str. The task's name: the key of its labels in a label dict and
            of its class map in `MultiTaskModel.postprocess`'s outputs.
        num_classes: int. Number of classes.
        ignore_class: int or None. Label value to leave out. Defaults to `None`.

    Examples:

    >>> evaluator = SegmentationEvaluator("seg", num_classes=2)
    >>> evaluator.update({"seg": np.array([[0, 1, 1, -1]])},
    ...                  {"seg": np.array([[0, 1, 0, 1]])})
    >>> {k: round(v, 4) for k, v in evaluator.result().items()}
    {'mean_iou': 0.5, 'pixel_accuracy': 0.6667}
    """

    def __init__(self, name: str, num_classes: int, ignore_class=None):
        self.name = name
        self.num_classes = _check_num_classes(num_classes, "SegmentationEvaluator")
        self.ignore_class = ignore_class
        self.reset()

    def reset(self) -> None:
        self.matrix = np.zeros((self.num_classes, self.num_classes))

    def update(self, labels, predictions) -> None:
        """Adds one batch: `labels` (the class map, or a dict holding it under
        `name`) and `predictions` (`MultiTaskModel.postprocess`'s dict, or the
        class map)."""
        if isinstance(labels, dict):
            labels = labels[self.name]
        if isinstance(predictions, dict):
            predictions = predictions[self.name]
        self.matrix += confusion_matrix(np.asarray(labels), np.asarray(predictions),
                                        self.num_classes, self.ignore_class)

    def result(self) -> dict[str, float]:
        iou = iou_from_confusion(self.matrix)
        return {
            "mean_iou": float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0,
            "pixel_accuracy": float(np.trace(self.matrix) / max(self.matrix.sum(), 1.0)),
        }


@keras.saving.register_keras_serializable(package="kerasmtl")
class MaskedMeanIoU(keras.metrics.Metric):
    """Streaming mean IoU for semantic segmentation that masks unknown pixels.

    Like `keras.metrics.MeanIoU(num_classes, ignore_class=...,
    sparse_y_pred=False)`, but pixels labelled `-1` are masked as well as
    `ignore_class`, the confusion matrix is float (Keras' is int, which
    truncates float sample weights), and `y_pred` may be scores (argmax taken)
    or a class map. Equal to `mean_iou` on all the pixels seen.

    Labels out of `[0, num_classes)` that are neither -1 nor `ignore_class`
    cannot raise inside a graph; they are left out (the `Segmentation` task
    rejects them before training).

    Args:
        num_classes: int. Number of classes.
        ignore_class: int or None. Label value to mask (e.g. 255). Defaults to
            `None`.
        name: str. Defaults to `"mean_iou"`.
        dtype: dtype of the state and result. Defaults to `"float32"`.

    Examples:

    >>> metric = MaskedMeanIoU(num_classes=3)
    >>> metric.update_state([[0, 0, 1, -1]], [[0, 1, 1, 2]])
    >>> round(float(metric.result()), 4)  # see mean_iou
    0.5
    """

    def __init__(
        self,
        num_classes: int,
        ignore_class: int | None = None,
        name: str = "mean_iou",
        dtype=None,
    ):
        super().__init__(name=name, dtype=dtype or "float32")
        self.num_classes = _check_num_classes(num_classes, f"MaskedMeanIoU '{name}'")
        self.ignore_class = _check_ignore_class(ignore_class, f"MaskedMeanIoU '{name}'")
        self._direction = "up"
        self.total_cm = self.add_variable(
            shape=(self.num_classes, self.num_classes),
            initializer="zeros",
            dtype=self.dtype,
            name="total_confusion_matrix",
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.convert_to_tensor(y_true)
        y_pred = ops.convert_to_tensor(y_pred)
        if len(y_pred.shape) == len(y_true.shape) + 1 or (
            len(y_pred.shape) == len(y_true.shape)
            and y_true.shape[-1] == 1
            and y_pred.shape[-1] == self.num_classes
            and self.num_classes > 1
        ):
            y_pred = ops.argmax(y_pred, axis=-1)
        if len(y_true.shape) == len(y_pred.shape) + 1:
            y_true = ops.squeeze(y_true, -1)
        y_true = ops.cast(y_true, "int32")
        y_pred = ops.cast(y_pred, "int32")
        valid = (
            (y_true >= 0)
            & (y_true < self.num_classes)
            & (y_pred >= 0)
            & (y_pred < self.num_classes)
        )
        if self.ignore_class is not None:
            valid = valid & (y_true != self.ignore_class)
        weights = ops.cast(valid, self.dtype)
        if sample_weight is not None:
            # One weight per image [B], or per pixel [B, H, W].
            sample_weight = ops.cast(ops.convert_to_tensor(sample_weight), self.dtype)
            while len(sample_weight.shape) < len(y_true.shape):
                sample_weight = ops.expand_dims(sample_weight, -1)
            weights = weights * sample_weight
        valid, weights = ops.reshape(valid, (-1,)), ops.reshape(weights, (-1,))
        y_true, y_pred = ops.reshape(y_true, (-1,)), ops.reshape(y_pred, (-1,))
        index = ops.where(valid, y_true * self.num_classes + y_pred, 0)
        counts = ops.segment_sum(weights, index, num_segments=self.num_classes**2)
        self.total_cm.assign_add(
            ops.reshape(counts, (self.num_classes, self.num_classes))
        )

    def result(self):
        cm = self.total_cm
        tp = ops.diagonal(cm)
        union = ops.sum(cm, 0) + ops.sum(cm, 1) - tp
        present = ops.cast(union > 0, self.dtype)
        iou = ops.divide_no_nan(tp, union)
        return ops.divide_no_nan(ops.sum(iou * present), ops.sum(present))

    def reset_state(self):
        self.total_cm.assign(ops.zeros_like(self.total_cm))

    def get_config(self):
        return {
            "num_classes": self.num_classes,
            "ignore_class": self.ignore_class,
            "name": self.name,
            "dtype": self.dtype,
        }
