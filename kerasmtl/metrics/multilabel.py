"""Multi-label metrics on thresholded predictions, as numpy functions and Keras
metrics: micro / macro / sample-averaged precision, recall, F1 and Jaccard,
Hamming loss and subset accuracy; plus `multilabel_report`, every multi-label
metric of kerasmtl in one dict. The ranking metrics (LRAP, ranking loss,
coverage error, one-error, macro average precision) are in
`kerasmtl.metrics.multilabel_ranking`.

Conventions shared by all multi-label metrics:

- `y_true` is `(num_examples, num_labels)` with 1 (present), 0 (absent) and -1
  (unknown). `y_pred` / `y_score` has the same shape: probabilities, or 0/1
  predictions. A label is predicted present when `y_pred >= threshold` (the
  rule of `MultiLabel`'s serving output; note `keras.metrics.F1Score` uses
  `>`).
- Definitions follow scikit-learn's (`sklearn.metrics`), and on fully known
  labels the values are equal to sklearn's. A ratio whose denominator is zero
  is `zero_division` (0 by default, sklearn's default without its warning).
- Unknown (-1) elements are skipped: confusion counts and Hamming loss leave
  them out; a row counts as an exact match when all its *known* labels are
  right; sample averages (and every per-example metric) leave out rows with no
  known label; macro averages leave out labels with no known element.
- With nothing to average (no known row), per-example metrics are 0.0, like
  an empty `keras.metrics.Mean`.
- `sample_weight` is one weight per example. It weights confusion counts,
  Hamming loss and all per-example averages, as in sklearn.

The numpy functions (here) compute in float64 and check their inputs. The
Keras metrics (`kerasmtl.metrics.multilabel_keras`) accumulate in `keras.ops`
(they run inside a compiled train/test step), give the same values over any
split into batches, and check shapes (values only when given numpy arrays: in
a graph they cannot raise).
"""

from __future__ import annotations

from typing import Any

import numpy as np

AVERAGES = ("micro", "macro", "samples")

# (numerator, denominator) of each ratio from true/false positive/negative counts.
# F1 from counts, as sklearn >= 1.3 does: 2tp / (2tp + fp + fn).
_RATIOS = {
    "precision": lambda tp, fp, fn: (tp, tp + fp),
    "recall": lambda tp, fp, fn: (tp, tp + fn),
    "f1": lambda tp, fp, fn: (2 * tp, 2 * tp + fp + fn),
    "jaccard": lambda tp, fp, fn: (tp, tp + fp + fn),
}


# -- input checks ---------------------------------------------------------------


def check_multilabel_inputs(
    y_true, y_pred, sample_weight=None, metric: str = "metric", pred_name: str = "y_pred"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validates and converts inputs; returns `(y_true int, y_pred float64,
    sample_weight float64 of shape (num_examples,))`."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if y_true.ndim != 2 or y_true.shape != y_pred.shape:
        raise ValueError(
            f"{metric}: `y_true` has shape {y_true.shape} and `{pred_name}` has "
            f"shape {y_pred.shape}. Expected both (num_examples, num_labels) with "
            "the same shape; reshape a single label to (num_examples, 1)."
        )
    bad = ~np.isin(y_true, (-1, 0, 1))
    if bad.any():
        raise ValueError(
            f"{metric}: `y_true` must hold 1 (present), 0 (absent) or -1 "
            f"(unknown); found {np.unique(y_true[bad])[:5].tolist()}."
        )
    if not np.all(np.isfinite(y_pred)):
        raise ValueError(
            f"{metric}: `{pred_name}` contains {int((~np.isfinite(y_pred)).sum())} "
            "NaN or infinite value(s); pass finite scores."
        )
    if sample_weight is None:
        weights = np.ones(y_true.shape[0])
    else:
        weights = np.asarray(sample_weight, dtype=np.float64)
        if weights.shape not in ((y_true.shape[0],), (y_true.shape[0], 1)):
            raise ValueError(
                f"{metric}: `sample_weight` has shape {weights.shape}, expected "
                f"({y_true.shape[0]},): one weight per example of `y_true` with "
                f"shape {y_true.shape}."
            )
        weights = weights.reshape(-1)
    return y_true.astype(np.int64), y_pred, weights


def check_threshold(threshold, num_labels: int | None = None) -> float | list[float]:
    """Returns `threshold` as a float or a list of floats, all in (0, 1)."""
    values = np.asarray(threshold, dtype=np.float64)
    if values.ndim > 1 or values.size == 0 or not np.all((values > 0) & (values < 1)):
        raise ValueError(
            "Invalid value for argument `threshold`. Expected a float in (0, 1) "
            "or a vector of one such float per label. "
            f"Received: threshold={threshold!r}"
        )
    if values.ndim == 1 and num_labels is not None and values.shape[0] != num_labels:
        raise ValueError(
            f"Argument `threshold` has {values.shape[0]} values but the labels have "
            f"{num_labels} columns; pass one threshold per label or a single float."
        )
    return values.tolist()


def _check_choice(name: str, value: Any, choices) -> None:
    if value not in choices:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected one of "
            f"{', '.join(repr(c) for c in choices)}. Received: {name}={value!r}"
        )


def _ratio(num, den, zero_division):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), zero_division)


def weighted_mean(values, weights) -> float:
    """`sum(w * v) / sum(w)`, or 0.0 when the weights sum to zero."""
    total = float(np.sum(weights))
    return float(np.sum(weights * values) / total) if total > 0 else 0.0


# -- numpy functions --------------------------------------------------------------


def _thresholded_score(kind, y_true, y_pred, average, threshold, sample_weight,
                       zero_division):
    _check_choice("average", average, AVERAGES)
    _check_choice("zero_division", zero_division, (0, 1))
    y_true, y_pred, w = check_multilabel_inputs(
        y_true, y_pred, sample_weight, metric=f"multilabel_{kind}"
    )
    pred = y_pred >= np.asarray(check_threshold(threshold, y_true.shape[1]))
    pos, neg = y_true == 1, y_true == 0
    tp, fp, fn = pos & pred, neg & pred, pos & ~pred
    if average == "samples":
        score = _ratio(*_RATIOS[kind](tp.sum(1), fp.sum(1), fn.sum(1)), zero_division)
        rows = (y_true >= 0).any(1)
        return weighted_mean(score[rows], w[rows])
    w = w[:, None]
    axis = None if average == "micro" else 0
    counts = [np.sum(w * c, axis=axis) for c in (tp, fp, fn)]
    score = _ratio(*_RATIOS[kind](*counts), zero_division)
    if average == "micro":
        return float(score)
    labels = (y_true >= 0).any(0)
    return float(score[labels].mean()) if labels.any() else float(zero_division)


def multilabel_precision(y_true, y_pred, average: str = "micro", threshold=0.5,
                         sample_weight=None, zero_division: float = 0.0) -> float:
    """Precision `tp / (tp + fp)` of thresholded multi-label predictions.

    Equal to `sklearn.metrics.precision_score(y_true, y_pred >= threshold,
    average=average)` on fully known labels (see the module docstring for
    unknown labels).

    Args:
        y_true: array `(num_examples, num_labels)` of 1, 0 and -1 (unknown).
        y_pred: array of the same shape: probabilities or 0/1 predictions.
        average: str. `"micro"` (counts pooled over all labels), `"macro"`
            (mean over labels) or `"samples"` (mean over examples). Defaults to
            `"micro"`.
        threshold: float in (0, 1), or one per label. Defaults to `0.5`.
        sample_weight: optional array `(num_examples,)`. Defaults to `None`.
        zero_division: 0 or 1. The value of a ratio with a zero denominator.
            Defaults to `0.0`.

    Examples:

    >>> y_true = [[1, 0, 1], [0, 1, -1]]
    >>> y_pred = [[0.9, 0.6, 0.2], [0.1, 0.8, 0.7]]
    >>> multilabel_precision(y_true, y_pred)  # tp=2, fp=1 (the -1 is skipped)
    0.6666666666666666
    """
    return _thresholded_score("precision", y_true, y_pred, average, threshold,
                              sample_weight, zero_division)


def multilabel_recall(y_true, y_pred, average: str = "micro", threshold=0.5,
                      sample_weight=None, zero_division: float = 0.0) -> float:
    """Recall `tp / (tp + fn)`; arguments as `multilabel_precision`.

    Equal to `sklearn.metrics.recall_score` on fully known labels.
    """
    return _thresholded_score("recall", y_true, y_pred, average, threshold,
                              sample_weight, zero_division)


def multilabel_f1(y_true, y_pred, average: str = "micro", threshold=0.5,
                  sample_weight=None, zero_division: float = 0.0) -> float:
    """F1 `2tp / (2tp + fp + fn)`; arguments as `multilabel_precision`.

    Equal to `sklearn.metrics.f1_score` on fully known labels.

    Examples:

    >>> y_true = [[1, 0, 1], [0, 1, 0]]
    >>> y_pred = [[1, 1, 0], [0, 1, 0]]
    >>> multilabel_f1(y_true, y_pred)  # 2 * 2 / (2 * 2 + 1 + 1)
    0.6666666666666666
    >>> multilabel_f1(y_true, y_pred, average="samples")  # (2/4 + 2/2) / 2
    0.75
    """
    return _thresholded_score("f1", y_true, y_pred, average, threshold,
                              sample_weight, zero_division)


def multilabel_jaccard(y_true, y_pred, average: str = "samples", threshold=0.5,
                       sample_weight=None, zero_division: float = 0.0) -> float:
    """Jaccard index `tp / (tp + fp + fn)` (intersection over union of the true
    and predicted label sets); arguments as `multilabel_precision`, except that
    `average` defaults to `"samples"`.

    Equal to `sklearn.metrics.jaccard_score` on fully known labels.
    """
    return _thresholded_score("jaccard", y_true, y_pred, average, threshold,
                              sample_weight, zero_division)


def hamming_loss(y_true, y_pred, threshold=0.5, sample_weight=None) -> float:
    """Fraction of known label elements predicted wrong.

    Equal to `sklearn.metrics.hamming_loss(y_true, y_pred >= threshold)` on
    fully known labels.

    Args:
        y_true: array `(num_examples, num_labels)` of 1, 0 and -1 (unknown).
        y_pred: array of the same shape: probabilities or 0/1 predictions.
        threshold: float in (0, 1), or one per label. Defaults to `0.5`.
        sample_weight: optional array `(num_examples,)`. Defaults to `None`.

    Examples:

    >>> hamming_loss([[1, 0, -1], [0, 1, 1]], [[0.7, 0.6, 0.9], [0.2, 0.9, 0.1]])
    0.4
    """
    y_true, y_pred, w = check_multilabel_inputs(y_true, y_pred, sample_weight,
                                                metric="hamming_loss")
    pred = y_pred >= np.asarray(check_threshold(threshold, y_true.shape[1]))
    known = y_true >= 0
    wrong = known & (pred != (y_true == 1))
    # sum_i w_i * wrong_i / sum_i w_i * known_i: sklearn's weighted mean over
    # examples of the fraction wrong, when every row is fully known.
    total = float(np.sum(w * known.sum(1)))
    return float(np.sum(w * wrong.sum(1)) / total) if total > 0 else 0.0


def subset_accuracy(y_true, y_pred, threshold=0.5, sample_weight=None) -> float:
    """Fraction of examples whose known labels are all predicted right (exact
    match).

    Equal to `sklearn.metrics.accuracy_score(y_true, y_pred >= threshold)` on
    fully known labels. Arguments as `hamming_loss`.
    """
    y_true, y_pred, w = check_multilabel_inputs(y_true, y_pred, sample_weight,
                                                metric="subset_accuracy")
    pred = y_pred >= np.asarray(check_threshold(threshold, y_true.shape[1]))
    known = y_true >= 0
    exact = ~(known & (pred != (y_true == 1))).any(1)
    rows = known.any(1)
    return weighted_mean(exact[rows], w[rows])
