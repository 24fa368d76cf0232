"""Uncertainty weighting (homoscedastic task uncertainty).

Kendall, Gal and Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses
for Scene Geometry and Semantics", CVPR 2018. One learned log-variance per task;
we use the form of the common reference implementations (LibMTL's `UW`), with
`s_t = log(sigma_t^2)`, rather than the paper's per-likelihood constants.
"""

from __future__ import annotations

import keras
from keras import ops

from kerasmtl.weighting.base import LossWeighting


@keras.saving.register_keras_serializable(package="kerasmtl")
class Uncertainty(LossWeighting):
    """Learned uncertainty weighting (Kendall et al., CVPR 2018).

    Formula:
    ```
    L = sum_t present_t * (0.5 * exp(-s_t) * L_t + 0.5 * s_t)
    weight_t = 0.5 * exp(-s_t)
    ```
    where `s_t` is a trainable log-variance, initialised to `init_log_variance`.
    Tasks absent from a batch are left out (their `s_t` term would otherwise
    push `s_t` down with no loss to balance it).

    Args:
        init_log_variance: float. Initial `s_t` for every task. Defaults to `0.0`.

    Examples:

    >>> w = Uncertainty()
    >>> float(w({"a": 2.0, "b": 4.0}))
    3.0
    """

    def __init__(self, init_log_variance: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.init_log_variance = float(init_log_variance)

    def build_state(self, num_tasks):
        self.log_variances = self.add_weight(
            shape=(num_tasks,),
            initializer=keras.initializers.Constant(self.init_log_variance),
            trainable=True,
            name="log_variances",
        )

    def combine(self, losses, present, training=False):
        s = ops.cast(self.log_variances, "float32")
        weights = 0.5 * ops.exp(-s)
        total = ops.sum(present * (weights * losses + 0.5 * s))
        return total, weights

    def get_config(self):
        return {**super().get_config(), "init_log_variance": self.init_log_variance}
