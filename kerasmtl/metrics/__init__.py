"""Metrics: Keras metric classes and plain functions on numpy arrays.

- multi-label (`multilabel`, `multilabel_ranking`,
  `multilabel_average_precision`): equal to scikit-learn's
  definitions, with unknown (-1) labels skipped per element;
- sequence labelling (`sequence_labeling`): conlleval entity P/R/F1;
- segmentation (`segmentation`): confusion matrix and mean IoU with ignored
  pixels, as a Keras metric and in numpy;
- detection (`detection`, `instance`): COCO box mAP (agrees with pycocotools'
  COCOeval) and the DSB-2018 instance-mask score.
"""

from kerasmtl.metrics.detection import COCO_AREA_RANGES, DetectionEvaluator, coco_map
from kerasmtl.metrics.instance import (
    dsb2018_score,
    instance_iou,
    instance_masks_from_boxes,
    mean_dsb2018_score,
)
from kerasmtl.metrics.multilabel import (
    hamming_loss,
    multilabel_f1,
    multilabel_jaccard,
    multilabel_precision,
    multilabel_recall,
    subset_accuracy,
)
from kerasmtl.metrics.multilabel_all import (
    multilabel_keras_metrics,
    multilabel_report,
)
from kerasmtl.metrics.multilabel_average_precision import (
    MacroAveragePrecision,
    macro_average_precision,
)
from kerasmtl.metrics.multilabel_keras import (
    HammingLoss,
    MultiLabelF1Score,
    MultiLabelJaccard,
    MultiLabelPrecision,
    MultiLabelRecall,
    SubsetAccuracy,
)
from kerasmtl.metrics.multilabel_ranking import (
    CoverageError,
    LabelRankingAveragePrecision,
    LabelRankingLoss,
    OneError,
    coverage_error,
    label_ranking_average_precision,
    label_ranking_loss,
    one_error,
)
from kerasmtl.metrics.segmentation import (
    MaskedMeanIoU,
    SegmentationEvaluator,
    confusion_matrix,
    iou_from_confusion,
    mean_iou,
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
    "SegmentationEvaluator",
    "COCO_AREA_RANGES",
    "DetectionEvaluator",
    "MaskedMeanIoU",
    "coco_map",
    "confusion_matrix",
    "dsb2018_score",
    "instance_iou",
    "instance_masks_from_boxes",
    "iou_from_confusion",
    "mean_dsb2018_score",
    "mean_iou",
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
