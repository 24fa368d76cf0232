"""Geometric Loss Strategy (GLS).

Chennupati, Sistu, Yogamani and Rawashdeh, "MultiNet++: Multi-Stream Feature
Aggregation and Geometric Loss Strategy for Multi-Task Learning", CVPR
Workshops 2019. The total loss is the geometric mean of the task losses.
"""

from __future__ import annotations

import keras
from keras import ops

from kerasmtl.weighting.arguments import check_float
from kerasmtl.weighting.base import LossWeighting


@keras.saving.register_keras_serializable(package="kerasmtl")
class GeometricLossStrategy(LossWeighting):
    """Geometric loss strategy (Chennupati et al., CVPRW 2019).

    Formula:
    ```
    L = (prod_t L_t) ^ (1 / T)   = exp(mean_t log L_t)
    weight_t = dL / dL_t = L / (T * L_t)
    ```
    Computed in log space over the tasks present in the batch (a task with no
    labels would make the product zero and its gradient undefined); losses are
    floored at `epsilon`. Under `tf.distribute`, each replica applies the
    formula to its estimate of the global-batch losses, so (being nonlinear)
    it matches the single-device step only approximately.

    Args:
        epsilon: float > 0. Floor of each loss inside the log. Defaults to `1e-8`.

    Examples:

    >>> w = GeometricLossStrategy()
    >>> round(float(w({"a": 2.0, "b": 8.0})), 4)
    4.0
    """

    def __init__(self, epsilon: float = 1e-8, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = check_float("epsilon", epsilon, minimum=0, include_minimum=False)

    def combine(self, losses, present, training=False):
        n = ops.sum(present)
        log_losses = ops.log(ops.maximum(losses, self.epsilon))
        total = ops.where(
            n > 0, ops.exp(ops.divide_no_nan(ops.sum(present * log_losses), n)), 0.0
        )
        weights = present * ops.divide_no_nan(
            total, n * ops.maximum(losses, self.epsilon)
        )
        return total, weights

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}
