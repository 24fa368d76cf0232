"""Multi-label Keras metrics on thresholded predictions: micro / macro /
sample-averaged precision, recall, F1 and Jaccard, Hamming loss and subset
accuracy, accumulated in `keras.ops` inside compiled steps. Same values as
the numpy functions of `kerasmtl.metrics.multilabel` (whose docstring states
the conventions: unknown -1 labels skipped, sklearn's definitions) over any
split into batches.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from kerasmtl.metrics.multilabel import (
    _RATIOS,
    AVERAGES,
    _check_choice,
    check_multilabel_inputs,
    check_threshold,
)


def keras_multilabel_inputs(metric: keras.metrics.Metric, y_true, y_pred,
                            sample_weight=None):
    """Checks static shapes and returns `(y_pred, known, pos, neg, weights)` as
    tensors of `metric.dtype`: the 0/1 masks of known, present and absent
    labels `(batch, num_labels)` and one weight per example `(batch,)`."""
    where = f"{type(metric).__name__} '{metric.name}'"
    if isinstance(y_true, (np.ndarray, list, tuple)):
        # Concrete values can be checked here; in a graph they cannot raise.
        check_multilabel_inputs(y_true, np.zeros(np.shape(y_true)), metric=where)
    y_true = ops.convert_to_tensor(y_true)
    y_pred = ops.convert_to_tensor(y_pred)
    true_shape, pred_shape = tuple(y_true.shape), tuple(y_pred.shape)
    if (
        len(true_shape) != 2
        or len(pred_shape) != 2
        or any(a is not None and b is not None and a != b
               for a, b in zip(true_shape, pred_shape))
    ):
        raise ValueError(
            f"{where}: `y_true` has shape {true_shape} and `y_pred` has shape "
            f"{pred_shape}. Expected both (batch, num_labels) with the same shape."
        )
    dtype = metric.dtype
    y_true = ops.cast(y_true, dtype)
    known = ops.cast(y_true >= 0, dtype)
    pos = ops.cast(y_true > 0.5, dtype)
    if sample_weight is None:
        weights = ops.ones_like(y_true[:, 0])
    else:
        sample_weight = ops.convert_to_tensor(sample_weight)
        shape = tuple(sample_weight.shape)
        if len(shape) > 2 or (len(shape) == 2 and shape[1] not in (1, None)):
            raise ValueError(
                f"{where}: `sample_weight` has shape {shape}, expected (batch,): "
                f"one weight per example of `y_true` with shape {true_shape}."
            )
        weights = ops.reshape(ops.cast(sample_weight, dtype), (-1,))
    return ops.cast(y_pred, dtype), known, pos, known - pos, weights


def _keras_ratio(num, den, zero_division):
    return ops.where(den > 0, ops.divide_no_nan(num, den), zero_division)


class ExampleAverage(keras.metrics.Metric):
    """Base of the metrics that are `sum(w * num) / sum(w * den)` over every
    example seen, where `per_example` gives each example's `num` and `den`.

    Exact over any split into batches: it keeps two sums, like
    `keras.metrics.Mean`. A row with no known label has `den = 0`.
    """

    # Marks the metrics that take raw labels with -1 for unknown (and one
    # sample weight per example) and mask them themselves.
    masks_unknown_labels = True

    def __init__(self, name=None, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.total = self.add_variable((), "zeros", dtype=self.dtype, name="total")
        self.count = self.add_variable((), "zeros", dtype=self.dtype, name="count")

    def per_example(self, y_pred, known, pos, neg):
        raise NotImplementedError

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred, known, pos, neg, weights = keras_multilabel_inputs(
            self, y_true, y_pred, sample_weight
        )
        num, den = self.per_example(y_pred, known, pos, neg)
        self.total.assign_add(ops.sum(weights * num))
        self.count.assign_add(ops.sum(weights * den))

    def result(self):
        return ops.divide_no_nan(self.total, self.count)


class _Thresholded(ExampleAverage):
    """An `ExampleAverage` of thresholded predictions."""

    def __init__(self, threshold=0.5, name=None, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.threshold = check_threshold(threshold)

    def wrong(self, y_pred, known, pos):
        """1 where a known label is predicted wrong."""
        _check_num_thresholds(self, y_pred)
        pred = ops.cast(y_pred >= ops.cast(self.threshold, self.dtype), self.dtype)
        return known * ops.abs(pred - pos)

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}


def _check_num_thresholds(metric, y_pred):
    if isinstance(metric.threshold, list):
        check_threshold(metric.threshold, y_pred.shape[-1])


@keras.saving.register_keras_serializable(package="kerasmtl")
class HammingLoss(_Thresholded):
    """Streaming `hamming_loss`: fraction of known label elements predicted
    wrong (a label is predicted when `y_pred >= threshold`).

    Args:
        threshold: float in (0, 1), or a list with one per label. Defaults to
            `0.5`.
        name: str. Defaults to `"hamming_loss"`.
        dtype: dtype of the state and result. Defaults to `None` (floatx).

    Examples:

    >>> metric = HammingLoss()
    >>> metric.update_state([[1, 0, -1]], [[0.7, 0.6, 0.9]])
    >>> metric.update_state([[0, 1, 1]], [[0.2, 0.9, 0.1]])
    >>> round(float(metric.result()), 4)  # 2 wrong of 5 known
    0.4
    """

    def __init__(self, threshold=0.5, name="hamming_loss", dtype=None):
        super().__init__(threshold=threshold, name=name, dtype=dtype)

    def per_example(self, y_pred, known, pos, neg):
        return ops.sum(self.wrong(y_pred, known, pos), 1), ops.sum(known, 1)


@keras.saving.register_keras_serializable(package="kerasmtl")
class SubsetAccuracy(_Thresholded):
    """Streaming `subset_accuracy`: fraction of examples (with a known label)
    whose known labels are all predicted right.

    Args:
        threshold: float in (0, 1), or a list with one per label. Defaults to
            `0.5`.
        name: str. Defaults to `"subset_accuracy"`.
        dtype: dtype of the state and result. Defaults to `None` (floatx).
    """

    def __init__(self, threshold=0.5, name="subset_accuracy", dtype=None):
        super().__init__(threshold=threshold, name=name, dtype=dtype)

    def per_example(self, y_pred, known, pos, neg):
        has_known = ops.cast(ops.sum(known, 1) > 0, self.dtype)
        exact = ops.cast(ops.sum(self.wrong(y_pred, known, pos), 1) == 0, self.dtype)
        return has_known * exact, has_known


class _ConfusionRatio(keras.metrics.Metric):
    """Base of precision, recall, F1 and Jaccard: per-label weighted confusion
    counts for micro and macro averages, per-example sums for `"samples"`."""

    kind = ""
    masks_unknown_labels = True

    def __init__(self, average="micro", threshold=0.5, zero_division=0.0,
                 num_labels=None, name=None, dtype=None):
        _check_choice("average", average, AVERAGES)
        _check_choice("zero_division", zero_division, (0, 1))
        if num_labels is not None and (
            not isinstance(num_labels, (int, np.integer)) or num_labels < 1
        ):
            raise ValueError(
                "Invalid value for argument `num_labels`. Expected None or an int "
                f">= 1. Received: num_labels={num_labels!r}"
            )
        super().__init__(name=name or f"{self.kind}_{average}", dtype=dtype)
        self.average = average
        self.threshold = check_threshold(threshold, num_labels)
        self.zero_division = float(zero_division)
        self.num_labels = None if num_labels is None else int(num_labels)
        if average == "samples":
            self.total = self.add_variable((), "zeros", dtype=self.dtype, name="total")
            self.count = self.add_variable((), "zeros", dtype=self.dtype, name="count")
        elif num_labels is not None or isinstance(self.threshold, list):
            self._build(num_labels or len(self.threshold))

    def _build(self, num_labels):
        # Like keras.metrics.F1Score: per-label state is made on the first
        # update when num_labels was not given.
        def zeros(name):
            return self.add_variable((num_labels,), "zeros", dtype=self.dtype, name=name)

        self.true_positives = zeros("true_positives")
        self.false_positives = zeros("false_positives")
        self.false_negatives = zeros("false_negatives")
        # Unweighted count of known elements: macro averages skip labels with none.
        self.known_count = zeros("known_count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred, known, pos, neg, weights = keras_multilabel_inputs(
            self, y_true, y_pred, sample_weight
        )
        _check_num_thresholds(self, y_pred)
        pred = ops.cast(y_pred >= ops.cast(self.threshold, self.dtype), self.dtype)
        tp, fp, fn = pos * pred, neg * pred, pos * (1.0 - pred)
        if self.average == "samples":
            num, den = _RATIOS[self.kind](ops.sum(tp, 1), ops.sum(fp, 1), ops.sum(fn, 1))
            score = _keras_ratio(num, den, self.zero_division)
            weights = weights * ops.cast(ops.sum(known, 1) > 0, self.dtype)
            self.total.assign_add(ops.sum(weights * score))
            self.count.assign_add(ops.sum(weights))
            return
        num_labels = y_pred.shape[-1]
        if num_labels is None:
            raise ValueError(
                f"{type(self).__name__} '{self.name}': the number of labels of "
                f"`y_pred` (shape {tuple(y_pred.shape)}) is unknown; pass "
                "`num_labels`."
            )
        if not hasattr(self, "true_positives"):
            self._build(num_labels)
        if self.true_positives.shape[0] != num_labels:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' counts "
                f"{self.true_positives.shape[0]} labels but `y_pred` has shape "
                f"{tuple(y_pred.shape)}; use one metric per label set."
            )
        weights = ops.expand_dims(weights, 1)
        self.true_positives.assign_add(ops.sum(weights * tp, 0))
        self.false_positives.assign_add(ops.sum(weights * fp, 0))
        self.false_negatives.assign_add(ops.sum(weights * fn, 0))
        self.known_count.assign_add(ops.sum(known, 0))

    def result(self):
        zero_division = ops.cast(self.zero_division, self.dtype)
        if self.average == "samples":
            return ops.divide_no_nan(self.total, self.count)
        if not hasattr(self, "true_positives"):
            return zero_division
        counts = (self.true_positives, self.false_positives, self.false_negatives)
        if self.average == "micro":
            num, den = _RATIOS[self.kind](*(ops.sum(c) for c in counts))
            return _keras_ratio(num, den, zero_division)
        score = _keras_ratio(*_RATIOS[self.kind](*counts), zero_division)
        labels = ops.cast(self.known_count > 0, self.dtype)
        num_known = ops.sum(labels)
        return ops.where(
            num_known > 0, ops.divide_no_nan(ops.sum(labels * score), num_known),
            zero_division,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "average": self.average,
            "threshold": self.threshold,
            "zero_division": self.zero_division,
            "num_labels": self.num_labels,
        }


_CONFUSION_DOC = """Streaming `multilabel_{kind}`: {formula} of thresholded
    multi-label predictions (a label is predicted when `y_pred >= threshold`).

    Args:
        average: str. `"micro"` (counts pooled over all labels), `"macro"`
            (mean over labels with a known element) or `"samples"` (mean over
            examples with a known label). Defaults to `"{default}"`.
        threshold: float in (0, 1), or a list with one per label. Defaults to
            `0.5`.
        zero_division: 0 or 1. The value of a ratio with a zero denominator.
            Defaults to `0.0`.
        num_labels: int or None. Number of labels; when None (micro/macro) the
            state is made on the first update. Defaults to `None`.
        name: str. Defaults to `"{kind}_<average>"`.
        dtype: dtype of the state and result. Defaults to `None` (floatx).
"""


@keras.saving.register_keras_serializable(package="kerasmtl")
class MultiLabelPrecision(_ConfusionRatio):
    kind = "precision"
    __doc__ = _CONFUSION_DOC.format(kind=kind, formula="tp / (tp + fp)", default="micro")


@keras.saving.register_keras_serializable(package="kerasmtl")
class MultiLabelRecall(_ConfusionRatio):
    kind = "recall"
    __doc__ = _CONFUSION_DOC.format(kind=kind, formula="tp / (tp + fn)", default="micro")


@keras.saving.register_keras_serializable(package="kerasmtl")
class MultiLabelF1Score(_ConfusionRatio):
    kind = "f1"
    __doc__ = _CONFUSION_DOC.format(
        kind=kind, formula="2tp / (2tp + fp + fn)", default="micro"
    ) + """
    Examples:

    >>> metric = MultiLabelF1Score(average="macro")
    >>> metric.update_state([[1, 0], [1, -1]], [[0.9, 0.2], [0.3, 0.8]])
    >>> # label 0: tp=1, fn=1 -> 2/3; label 1: fp=0, fn=0 -> zero_division
    >>> round(float(metric.result()), 4)
    0.3333
    """


@keras.saving.register_keras_serializable(package="kerasmtl")
class MultiLabelJaccard(_ConfusionRatio):
    kind = "jaccard"
    __doc__ = _CONFUSION_DOC.format(
        kind=kind, formula="tp / (tp + fp + fn)", default="samples"
    )

    def __init__(self, average="samples", threshold=0.5, zero_division=0.0,
                 num_labels=None, name=None, dtype=None):
        super().__init__(average=average, threshold=threshold,
                         zero_division=zero_division, num_labels=num_labels,
                         name=name, dtype=dtype)
