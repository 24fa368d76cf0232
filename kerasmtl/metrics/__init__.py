"""Metrics: Keras metric classes and plain functions on numpy arrays.

- multi-label (`multilabel`, `multilabel_ranking`): equal to scikit-learn's
  definitions, with unknown (-1) labels skipped per element;
- sequence labelling (`sequence_labeling`): conlleval entity P/R/F1.
"""

from kerasmtl.metrics.multilabel import (
    HammingLoss,
    MultiLabelF1Score,
    MultiLabelJaccard,
    MultiLabelPrecision,
    MultiLabelRecall,
    SubsetAccuracy,
    hamming_loss,
    multilabel_f1,
    multilabel_jaccard,
    multilabel_keras_metrics,
    multilabel_precision,
    multilabel_recall,
    multilabel_report,
    subset_accuracy,
)
from kerasmtl.metrics.multilabel_ranking import (
    CoverageError,
    LabelRankingAveragePrecision,
    LabelRankingLoss,
    MacroAveragePrecision,
    OneError,
    coverage_error,
    label_ranking_average_precision,
    label_ranking_loss,
    macro_average_precision,
    one_error,
)
from kerasmtl.metrics.sequence_labeling import (
    EntityCounts,
    EntityF1,
    EntityPrecision,
    EntityRecall,
    entity_scores,
    extract_entities,
)

__all__ = [
    "CoverageError",
    "EntityCounts",
    "EntityF1",
    "EntityPrecision",
    "EntityRecall",
    "HammingLoss",
    "LabelRankingAveragePrecision",
    "LabelRankingLoss",
    "MacroAveragePrecision",
    "MultiLabelF1Score",
    "MultiLabelJaccard",
    "MultiLabelPrecision",
    "MultiLabelRecall",
    "OneError",
    "SubsetAccuracy",
    "coverage_error",
    "entity_scores",
    "extract_entities",
    "hamming_loss",
    "label_ranking_average_precision",
    "label_ranking_loss",
    "macro_average_precision",
    "multilabel_f1",
    "multilabel_jaccard",
    "multilabel_keras_metrics",
    "multilabel_precision",
    "multilabel_recall",
    "multilabel_report",
    "one_error",
    "subset_accuracy",
]
