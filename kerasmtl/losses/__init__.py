"""Losses: plain functions plus `keras.losses.Loss` wrappers."""

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
    "MultiLabelLoss",
    "SigmoidCrossentropy",
    "SigmoidFocalLoss",
    "asymmetric_loss",
    "sigmoid_crossentropy",
    "sigmoid_focal_loss",
]
