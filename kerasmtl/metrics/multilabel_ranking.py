"""Multi-label ranking metrics on label scores, as numpy functions and Keras
metrics: label-ranking average precision (LRAP), ranking loss, coverage error,
one-error, and macro average precision (mean over labels of sklearn's AP;
defined in `kerasmtl.metrics.multilabel_average_precision`, listed here with
the others).

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

The per-example metrics (LRAP, ranking loss, coverage, one-error) are exact as
Keras metrics: they accumulate a weighted sum and a count. LRAP and ranking
loss compare every pair of labels of a row: a batch costs
`batch * num_labels**2` memory.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from kerasmtl.metrics.multilabel import check_multilabel_inputs, weighted_mean
from kerasmtl.metrics.multilabel_average_precision import (  # noqa: F401 (listed here)
    MacroAveragePrecision,
    macro_average_precision,
)
from kerasmtl.metrics.multilabel_keras import ExampleAverage


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


RANKING_METRICS = (
    LabelRankingAveragePrecision,
    LabelRankingLoss,
    CoverageError,
    OneError,
    MacroAveragePrecision,
)
