"""Every multi-label metric of kerasmtl at once: `multilabel_report` (numpy,
by name) and `multilabel_keras_metrics` (fresh Keras metrics of the same
names). Above both `multilabel` (thresholded metrics) and
`multilabel_ranking` (ranking metrics, which build on the former's input
checks), so neither imports the other back."""

from __future__ import annotations

import keras

from kerasmtl.metrics import multilabel_ranking as ranking
from kerasmtl.metrics.multilabel import (
    AVERAGES,
    check_multilabel_inputs,
    hamming_loss,
    multilabel_f1,
    multilabel_jaccard,
    multilabel_precision,
    multilabel_recall,
    subset_accuracy,
)
from kerasmtl.metrics.multilabel_keras import (
    HammingLoss,
    MultiLabelF1Score,
    MultiLabelJaccard,
    MultiLabelPrecision,
    MultiLabelRecall,
    SubsetAccuracy,
)


def multilabel_report(y_true, y_score, threshold=0.5, sample_weight=None,
                      zero_division: float = 0.0) -> dict[str, float]:
    """Every multi-label metric of kerasmtl, by name.

    Keys: `{precision,recall,f1,jaccard}_{micro,macro,samples}`,
    `hamming_loss`, `subset_accuracy`, `label_ranking_average_precision`,
    `label_ranking_loss`, `coverage_error`, `one_error` and
    `average_precision_macro`; the same names as the metrics of
    `multilabel_keras_metrics`.

    Args:
        y_true: array `(num_examples, num_labels)` of 1, 0 and -1 (unknown).
        y_score: array of the same shape: probabilities. Thresholded metrics
            use `y_score >= threshold`; ranking metrics use the scores.
        threshold: float in (0, 1), or one per label. Defaults to `0.5`.
        sample_weight: optional array `(num_examples,)`. Defaults to `None`.
        zero_division: 0 or 1 (see `multilabel_precision`). Defaults to `0.0`.

    Examples:

    >>> report = multilabel_report([[1, 0], [0, 1]], [[0.8, 0.3], [0.6, 0.9]])
    >>> report["f1_micro"], report["hamming_loss"], report["one_error"]
    (0.8, 0.25, 0.0)
    """
    # Validate once, with the report's name in the errors.
    check_multilabel_inputs(y_true, y_score, sample_weight,
                            metric="multilabel_report", pred_name="y_score")
    report = {}
    for kind, fn in (("precision", multilabel_precision), ("recall", multilabel_recall),
                     ("f1", multilabel_f1), ("jaccard", multilabel_jaccard)):
        for average in AVERAGES:
            report[f"{kind}_{average}"] = fn(
                y_true, y_score, average=average, threshold=threshold,
                sample_weight=sample_weight, zero_division=zero_division,
            )
    report["hamming_loss"] = hamming_loss(y_true, y_score, threshold, sample_weight)
    report["subset_accuracy"] = subset_accuracy(y_true, y_score, threshold, sample_weight)
    for name, fn in ranking.RANKING_FUNCTIONS.items():
        report[name] = fn(y_true, y_score, sample_weight=sample_weight)
    return report


def multilabel_keras_metrics(threshold=0.5, num_labels: int | None = None,
                             zero_division: float = 0.0) -> list[keras.metrics.Metric]:
    """Fresh Keras metrics for every entry of `multilabel_report`, named like
    its keys (`average_precision_macro` is binned; see `MacroAveragePrecision`).

    Args:
        threshold: float in (0, 1), or a list with one per label. Defaults to
            `0.5`.
        num_labels: int or None. Number of labels (None: found on the first
            update). Defaults to `None`.
        zero_division: 0 or 1. Defaults to `0.0`.
    """
    metrics = [
        cls(average=average, threshold=threshold, zero_division=zero_division,
            num_labels=num_labels)
        for cls in (MultiLabelPrecision, MultiLabelRecall, MultiLabelF1Score,
                    MultiLabelJaccard)
        for average in AVERAGES
    ]
    metrics += [HammingLoss(threshold), SubsetAccuracy(threshold)]
    metrics += [cls(num_labels=num_labels) if cls is ranking.MacroAveragePrecision
                else cls() for cls in ranking.RANKING_METRICS]
    return metrics
