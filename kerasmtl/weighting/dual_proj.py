"""DualProj: the mean gradient projected onto the dual cone.

Quinton and Rey, "Jacobian Descent for Multi-Objective Optimization", arXiv
2406.16232, 2024 (TorchJD's `DualProj`, after the projection of GEM, Lopez-Paz
and Ranzato, NeurIPS 2017). The mean task gradient is projected onto
`{x : g_t . x >= 0 for every t}`, the closest direction to it that raises
no task's loss to first order. Follows TorchJD with its default (mean)
preference, except that the quadratic program is solved exactly in the
TensorFlow graph (see `upgrad.dual_cone_weights`) instead of by `quadprog`
on a regularised Gram matrix.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from kerasmtl.weighting.gradient_balancer import GradientBalancer
from kerasmtl.weighting.upgrad import dual_cone_weights


@keras.saving.register_keras_serializable(package="kerasmtl")
class DualProj(GradientBalancer):
    """Dual-cone projection of the mean gradient (Quinton and Rey, 2024).

    Formula:
    ```
    update = proj_{C*}(mean_t g_t),   C* = {x : g_t . x >= 0 for all t}
           = J^T v*,   v* = argmin_{v >= 1/T} v^T G v,   G = J J^T
    ```
    When the mean conflicts with no task it is the update unchanged.

    Args:
        rep_grad: bool. Balance the gradients w.r.t. the shared
            representation. Defaults to `False`.

    Examples:

    >>> update = DualProj().aggregate([[1.0, 0.0], [-2.0, 1.0]], [1.0, 1.0])
    >>> [round(float(v), 4) for v in update]
    [0.0, 0.5]
    """

    def weights_from_gram(self, gram, losses, active, step):
        mask = tf.cast(active, gram.dtype)
        mean = tf.math.divide_no_nan(mask, tf.reduce_sum(mask))
        return dual_cone_weights(gram, mean[None, :], active)[0]
