"""Macro average precision of multi-label scores (the mean over labels of
scikit-learn's average precision), as a numpy function and a Keras metric.

Conventions (inputs, unknown labels, sample weights) are those of
`kerasmtl.metrics.multilabel`: each label's AP is computed over its known rows,
then averaged over the labels with a known element; a label never present has
AP 0 (sklearn). On fully known labels the value equals
`sklearn.metrics.average_precision_score(average="macro")`. It is listed with
the ranking metrics (`kerasmtl.metrics.multilabel_ranking.RANKING_FUNCTIONS`
and `RANKING_METRICS`).

Macro AP needs every score of a label: `MacroAveragePrecision` keeps a
histogram per label with `num_thresholds` bins of [0, 1] and is exact when the
scores lie on its grid (`k / (num_thresholds - 1)`); otherwise it is the AP
of the scores rounded to that grid, which differs from the exact value only
through ties the rounding creates. The function `macro_average_precision` is
exact.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from kerasmtl.metrics.multilabel import check_multilabel_inputs
from kerasmtl.metrics.multilabel_keras import keras_multilabel_inputs


def macro_average_precision(y_true, y_score, sample_weight=None) -> float:
    """Mean over labels of the average precision `sum_n (R_n - R_{n-1}) P_n`
    of the label's scores (the step integral of its precision-recall curve).

    Equal to `sklearn.metrics.average_precision_score(y_true, y_score,
    average="macro")` on fully known labels. Each label uses its known rows;
    labels with none are left out of the mean; a label never present has AP 0.
    Arguments as `kerasmtl.metrics.label_ranking_average_precision`.

    Examples:

    >>> # Label 0: present at ranks 1 and 3 -> (1 + 2/3) / 2; label 1: 1.
    >>> round(macro_average_precision(
    ...     [[1, 1], [0, 0], [1, -1]], [[0.9, 0.8], [0.5, 0.1], [0.2, 0.7]]), 6)
    0.916667
    """
    y_true, s, w = check_multilabel_inputs(
        y_true, y_score, sample_weight, metric="macro_average_precision",
        pred_name="y_score")
    known, pos = y_true >= 0, y_true == 1
    scores = []
    for j in range(s.shape[1]):
        if not known[:, j].any():
            continue
        # Zero-weight rows are dropped, as sklearn does: they add no threshold.
        keep = known[:, j] & (w != 0)
        order = np.argsort(-s[keep, j], kind="stable")
        score, wj, present = s[keep, j][order], w[keep][order], pos[keep, j][order]
        tps, fps = np.cumsum(wj * present), np.cumsum(wj * ~present)
        # One precision-recall point per distinct score: the last of each tie.
        ends = np.r_[np.flatnonzero(np.diff(score)), len(score) - 1] if len(score) else []
        tps, fps = tps[ends], fps[ends]
        if len(tps) == 0 or tps[-1] <= 0:
            scores.append(0.0)
            continue
        gained = np.diff(np.r_[0.0, tps])
        scores.append(float(np.sum(gained * tps / (tps + fps)) / tps[-1]))
    return float(np.mean(scores)) if scores else 0.0


@keras.saving.register_keras_serializable(package="kerasmtl")
class MacroAveragePrecision(keras.metrics.Metric):
    """Streaming `macro_average_precision` from per-label score histograms.

    Scores are clipped to [0, 1] and rounded to the nearest of `num_thresholds`
    evenly spaced values `k / (num_thresholds - 1)`; the result is then exactly
    the macro AP of the rounded scores (so exact for scores on that grid).

    Args:
        num_thresholds: int >= 2. Number of histogram bins. Defaults to `1001`
            (scores resolved to 0.001; state `3 * num_labels * 1001` floats).
        num_labels: int or None. Number of labels; when None the state is made
            on the first update. Defaults to `None`.
        name: str. Defaults to `"average_precision_macro"`.
        dtype: dtype of the state and result. Defaults to `None` (floatx).

    Examples:

    >>> metric = MacroAveragePrecision(num_thresholds=11)
    >>> metric.update_state([[1, 1], [0, 0]], [[0.9, 0.8], [0.5, 0.1]])
    >>> metric.update_state([[1, -1]], [[0.2, 0.7]])
    >>> round(float(metric.result()), 4)  # ((1 + 2/3) / 2 + 1) / 2
    0.9167
    """

    masks_unknown_labels = True

    def __init__(self, num_thresholds=1001, num_labels=None,
                 name="average_precision_macro", dtype=None):
        if not isinstance(num_thresholds, (int, np.integer)) or num_thresholds < 2:
            raise ValueError(
                "Invalid value for argument `num_thresholds`. Expected an int >= 2. "
                f"Received: num_thresholds={num_thresholds!r}"
            )
        if num_labels is not None and (
            not isinstance(num_labels, (int, np.integer)) or num_labels < 1
        ):
            raise ValueError(
                "Invalid value for argument `num_labels`. Expected None or an int "
                f">= 1. Received: num_labels={num_labels!r}"
            )
        super().__init__(name=name, dtype=dtype)
        self.num_thresholds = int(num_thresholds)
        self.num_labels = None if num_labels is None else int(num_labels)
        if num_labels is not None:
            self._build(self.num_labels)

    def _build(self, num_labels):
        shape = (num_labels, self.num_thresholds)
        self.positives = self.add_variable(shape, "zeros", dtype=self.dtype,
                                           name="positives")
        self.negatives = self.add_variable(shape, "zeros", dtype=self.dtype,
                                           name="negatives")
        self.known_count = self.add_variable((num_labels,), "zeros", dtype=self.dtype,
                                             name="known_count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred, known, pos, neg, weights = keras_multilabel_inputs(
            self, y_true, y_pred, sample_weight
        )
        num_labels = y_pred.shape[-1]
        if num_labels is None:
            raise ValueError(
                f"MacroAveragePrecision '{self.name}': the number of labels of "
                f"`y_pred` (shape {tuple(y_pred.shape)}) is unknown; pass `num_labels`."
            )
        if not hasattr(self, "positives"):
            self._build(num_labels)
        if self.positives.shape[0] != num_labels:
            raise ValueError(
                f"MacroAveragePrecision '{self.name}' counts {self.positives.shape[0]} "
                f"labels but `y_pred` has shape {tuple(y_pred.shape)}; use one metric "
                "per label set."
            )
        bins = self.num_thresholds
        index = ops.cast(ops.round(ops.clip(y_pred, 0.0, 1.0) * (bins - 1)), "int32")
        # One segment per (label, bin): segment id = label * bins + bin.
        segments = ops.reshape(ops.arange(num_labels, dtype="int32") * bins + index, (-1,))
        weights = ops.expand_dims(weights, 1)

        def histogram(values):
            counts = ops.segment_sum(ops.reshape(weights * values, (-1,)), segments,
                                     num_segments=num_labels * bins)
            return ops.reshape(counts, (num_labels, bins))

        self.positives.assign_add(histogram(pos))
        self.negatives.assign_add(histogram(neg))
        self.known_count.assign_add(ops.sum(known, 0))

    def result(self):
        if not hasattr(self, "positives"):
            return ops.zeros((), self.dtype)

        def from_top(counts):  # weight with a score in this bin or higher
            return ops.flip(ops.cumsum(ops.flip(counts, 1), 1), 1)

        tps, fps = from_top(self.positives), from_top(self.negatives)
        precision = ops.divide_no_nan(tps, tps + fps)
        ap = ops.divide_no_nan(ops.sum(self.positives * precision, 1), tps[:, 0])
        labels = ops.cast(self.known_count > 0, self.dtype)
        return ops.divide_no_nan(ops.sum(labels * ap), ops.sum(labels))

    def get_config(self):
        return {
            **super().get_config(),
            "num_thresholds": self.num_thresholds,
            "num_labels": self.num_labels,
        }
