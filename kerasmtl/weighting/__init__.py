"""Loss-level task weighting layers (one file per method)."""

from kerasmtl.weighting.base import LossWeighting
from kerasmtl.weighting.dynamic_weight_average import DynamicWeightAverage
from kerasmtl.weighting.geometric_loss_strategy import GeometricLossStrategy
from kerasmtl.weighting.random_loss_weighting import RandomLossWeighting
from kerasmtl.weighting.static import Equal, Static
from kerasmtl.weighting.uncertainty import Uncertainty

__all__ = [
    "LossWeighting",
    "Equal",
    "Static",
    "Uncertainty",
    "DynamicWeightAverage",
    "RandomLossWeighting",
    "GeometricLossStrategy",
]
