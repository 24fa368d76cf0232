"""Losses: plain functions plus `keras.losses.Loss` wrappers."""

from kerasmtl.losses.detection import CenterNetLoss, centernet_focal_loss
from kerasmtl.losses.multilabel import (
    AsymmetricLoss,
    MultiLabelLoss,
    SigmoidCrossentropy,
    SigmoidFocalLoss,
    asymmetric_loss,
    sigmoid_crossentropy,
    sigmoid_focal_loss,
)

__all__ = [
    "AsymmetricLoss",
    "CenterNetLoss",
    "MultiLabelLoss",
    "SigmoidCrossentropy",
    "SigmoidFocalLoss",
    "asymmetric_loss",
    "centernet_focal_loss",
    "sigmoid_crossentropy",
    "sigmoid_focal_loss",
]
