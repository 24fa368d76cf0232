"""Multi-label ranking metrics on label scores, as numpy functions and Keras
metrics: label-ranking average precision (LRAP), ranking loss, coverage error,
one-error and macro average precision (mean over labels of sklearn's AP).

Conventions (inputs, unknown labels, sample weights) are those of
`kerasmtl.metrics.multilabel`; for ranking metrics:

- Each row is ranked over its *known* labels only; rows with no known label
  are left out. On fully known rows the values equal sklearn's
  (`label_ranking_average_precision_score`, `label_ranking_loss`,
  `coverage_error`, `average_precision_score(average="macro")`), with its
  conventions: a row whose known labels are all present or all absent has
  LRAP 1 and ranking loss 0; a row with no present label has coverage 0;
  ties count against the ranking (a tie between a present and an absent label
  is a mis-ordered pair).
- One-error (not in sklearn) is the weighted fraction of rows whose
  top-scored known label is not present; a row with no present label is
  therefore an error. Ties at the top go to the lowest label index, like
  `numpy.argmax`.
- Macro average precision: per label over its known rows, then the mean over
  labels with a known element; a label never present has AP 0 (sklearn).

The per-example metrics (LRAP, ranking loss, coverage, one-error) are exact as
Keras metrics: they accumulate a weighted sum and a count. LRAP and ranking
loss compare every pair of labels of a row: a batch costs
`batch * num_labels**2` memory.
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

from kerasmtl.metrics.multilabel import check_multilabel_inputs, weighted_mean
from kerasmtl.metrics.multilabel_keras import ExampleAverage, keras_multilabel_inputs


def _ranking_inputs(y_true, y_score, sample_weight, metric):
    y_true, y_score, weights = check_multilabel_inputs(
        y_true, y_score, sample_weight, metric=metric, pred_name="y_score"
    )
    known = y_true >= 0
    return y_score, known, y_true == 1, y_true == 0, weights, known.any(1)


# -- numpy functions --------------------------------------------------------------


def label_ranking_average_precision(y_true, y_score, sample_weight=None) -> float:
    """Label-ranking average precision: for each present label of a row, the
    fraction of known labels scored at least as high that are present; the
    mean over present labels, then over rows.

    Equal to `sklearn.metrics.label_ranking_average_precision_score` on fully
    known labels.

    Args:
        y_true: array `(num_examples, num_labels)` of 1, 0 and -1 (unknown).
        y_score: array of the same shape: label scores.
        sample_weight: optional array `(num_examples,)`. Defaults to `None`.

    Examples:

    >>> # Row 1: label 0 is ranked 2nd behind an absent label: 1/2.
    >>> # Row 2: the unknown label 2 is ignored; label 0 is ranked 1st: 1.
    >>> label_ranking_average_precision(
    ...     [[1, 0, 0], [1, 0, -1]], [[0.5, 0.9, 0.1], [0.6, 0.2, 0.9]])
    0.75
    """
    s, known, pos, neg, w, rows = _ranking_inputs(
        y_true, y_score, sample_weight, "label_ranking_average_precision")
    # at_least[i, j, k]: label k of row i is scored at least as high as label j.
    at_least = s[:, None, :] >= s[:, :, None]
    rank = (at_least & known[:, None, :]).sum(2)
    hits = (at_least & pos[:, None, :]).sum(2)
    npos, nneg = pos.sum(1), neg.sum(1)
    precision = np.where(pos, hits / np.maximum(rank, 1), 0.0).sum(1)
    value = np.where((npos > 0) & (nneg > 0), precision / np.maximum(npos, 1), 1.0)
    return weighted_mean(value[rows], w[rows])


def label_ranking_loss(y_true, y_score, sample_weight=None) -> float:
    """Ranking loss: the fraction of (present, absent) label pairs of a row
    where the absent label is scored at least as high, averaged over rows.

    Equal to `sklearn.metrics.label_ranking_loss` on fully known labels.
    Arguments as `label_ranking_average_precision`.
    """
    s, known, pos, neg, w, rows = _ranking_inputs(
        y_true, y_score, sample_weight, "label_ranking_loss")
    # bad[i, j, k]: present label j scored no higher than absent label k.
    bad = pos[:, :, None] & neg[:, None, :] & (s[:, None, :] >= s[:, :, None])
    pairs = pos.sum(1) * neg.sum(1)
    value = np.where(pairs > 0, bad.sum((1, 2)) / np.maximum(pairs, 1), 0.0)
    return weighted_mean(value[rows], w[rows])


def coverage_error(y_true, y_score, sample_weight=None) -> float:
    """Coverage error: how many known labels of a row are scored at least as
    high as its lowest-scored present label (0 if none is present), averaged.

    Equal to `sklearn.metrics.coverage_error` on fully known labels. Arguments
    as `label_ranking_average_precision`.

    Examples:

    >>> coverage_error([[1, 0, 1], [0, -1, 1]], [[0.9, 0.5, 0.4], [0.3, 0.8, 0.2]])
    2.5
    """
    s, known, pos, neg, w, rows = _ranking_inputs(
        y_true, y_score, sample_weight, "coverage_error")
    lowest = np.where(pos, s, np.inf).min(1)
    value = (known & (s >= lowest[:, None])).sum(1)
    return weighted_mean(value[rows], w[rows])


def one_error(y_true, y_score, sample_weight=None) -> float:
    """One-error: the fraction of rows whose top-scored known label is not
    present (ties go to the lowest label index). Not in sklearn.

    Arguments as `label_ranking_average_precision`.

    Examples:

    >>> # Row 1's top label is absent; row 2's top (unknown) label is skipped.
    >>> one_error([[0, 1], [1, -1]], [[0.9, 0.5], [0.4, 0.8]])
    0.5
    """
    s, known, pos, neg, w, rows = _ranking_inputs(
        y_true, y_score, sample_weight, "one_error")
    top = np.where(known, s, -np.inf).argmax(1)
    value = ~pos[np.arange(len(s)), top]
    return weighted_mean(value[rows], w[rows])


def macro_average_precision(y_true, y_score, sample_weight=None) -> float:
    """Mean over labels of the average precision `sum_n (R_n - R_{n-1}) P_n`
    of the label's scores (the step integral of its precision-recall curve).

    Equal to `sklearn.metrics.average_precision_score(y_true, y_score,
    average="macro")` on fully known labels. Each label uses its known rows;
    labels with none are left out of the mean; a label never present has AP 0.
    Arguments as `label_ranking_average_precision`.

    Examples:

    >>> # Label 0: present at ranks 1 and 3 -> (1 + 2/3) / 2; label 1: 1.
    >>> round(macro_average_precision(
    ...     [[1, 1], [0, 0], [1, -1]], [[0.9, 0.8], [0.5, 0.1], [0.2, 0.7]]), 6)
    0.916667
    """
    s, known, pos, neg, w, rows = _ranking_inputs(
        y_true, y_score, sample_weight, "macro_average_precision")
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


RANKING_FUNCTIONS = {
    "label_ranking_average_precision": label_ranking_average_precision,
    "label_ranking_loss": label_ranking_loss,
    "coverage_error": coverage_error,
    "one_error": one_error,
    "average_precision_macro": macro_average_precision,
}


# -- Keras metrics ------------------------------------------------------------------


def _at_least(y_pred):
    """`[i, j, k]` = 1 where label k of row i is scored at least as high as j."""
    return ops.cast(
        ops.expand_dims(y_pred, 1) >= ops.expand_dims(y_pred, 2), y_pred.dtype
    )


def _has_known(known):
    return ops.cast(ops.sum(known, 1) > 0, known.dtype)


_RANKING_DOC = """Streaming `{function}`, exact over any split into batches
    (see the module docstring).

    Args:
        name: str. Defaults to `"{name}"`.
        dtype: dtype of the state and result. Defaults to `None` (floatx).
"""


@keras.saving.register_keras_serializable(package="kerasmtl")
class LabelRankingAveragePrecision(ExampleAverage):
    __doc__ = _RANKING_DOC.format(
        function="label_ranking_average_precision",
        name="label_ranking_average_precision",
    ) + """
    Examples:

    >>> metric = LabelRankingAveragePrecision()
    >>> metric.update_state([[1, 0, 0]], [[0.5, 0.9, 0.1]])
    >>> metric.update_state([[1, 0, -1]], [[0.6, 0.2, 0.9]])
    >>> float(metric.result())
    0.75
    """

    def __init__(self, name="label_ranking_average_precision", dtype=None):
        super().__init__(name=name, dtype=dtype)

    def per_example(self, y_pred, known, pos, neg):
        at_least = _at_least(y_pred)
        rank = ops.sum(at_least * ops.expand_dims(known, 1), 2)
        hits = ops.sum(at_least * ops.expand_dims(pos, 1), 2)
        npos, nneg = ops.sum(pos, 1), ops.sum(neg, 1)
        precision = ops.sum(pos * ops.divide_no_nan(hits, rank), 1)
        value = ops.where(ops.logical_and(npos > 0, nneg > 0),
                          ops.divide_no_nan(precision, npos), 1.0)
        has_known = _has_known(known)
        return value * has_known, has_known


@keras.saving.register_keras_serializable(package="kerasmtl")
class LabelRankingLoss(ExampleAverage):
    __doc__ = _RANKING_DOC.format(function="label_ranking_loss", name="label_ranking_loss")

    def __init__(self, name="label_ranking_loss", dtype=None):
        super().__init__(name=name, dtype=dtype)

    def per_example(self, y_pred, known, pos, neg):
        bad = _at_least(y_pred) * ops.expand_dims(pos, 2) * ops.expand_dims(neg, 1)
        pairs = ops.sum(pos, 1) * ops.sum(neg, 1)
        value = ops.divide_no_nan(ops.sum(bad, (1, 2)), pairs)
        has_known = _has_known(known)
        return value * has_known, has_known


@keras.saving.register_keras_serializable(package="kerasmtl")
class CoverageError(ExampleAverage):
    __doc__ = _RANKING_DOC.format(function="coverage_error", name="coverage_error")

    def __init__(self, name="coverage_error", dtype=None):
        super().__init__(name=name, dtype=dtype)

    def per_example(self, y_pred, known, pos, neg):
        # +inf for a row with no present label: no label reaches it, coverage 0.
        lowest = ops.min(ops.where(pos > 0, y_pred, np.inf), 1, keepdims=True)
        value = ops.sum(known * ops.cast(y_pred >= lowest, known.dtype), 1)
        has_known = _has_known(known)
        return value * has_known, has_known


@keras.saving.register_keras_serializable(package="kerasmtl")
class OneError(ExampleAverage):
    __doc__ = _RANKING_DOC.format(function="one_error", name="one_error")

    def __init__(self, name="one_error", dtype=None):
        super().__init__(name=name, dtype=dtype)

    def per_example(self, y_pred, known, pos, neg):
        scores = ops.where(known > 0, y_pred, -np.inf)
        is_top = known * ops.cast(scores >= ops.max(scores, 1, keepdims=True), known.dtype)
        # The first of the tied top labels (deterministic, unlike argmax on
        # some backends).
        first = is_top * ops.cast(ops.cumsum(is_top, 1) == 1, known.dtype)
        has_known = _has_known(known)
        return (1.0 - ops.sum(first * pos, 1)) * has_known, has_known


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


RANKING_METRICS = (
    LabelRankingAveragePrecision,
    LabelRankingLoss,
    CoverageError,
    OneError,
    MacroAveragePrecision,
)
