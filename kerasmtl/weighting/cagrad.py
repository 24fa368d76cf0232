"""CAGrad: conflict-averse gradient descent.

Liu, Liu, Jin, Stone and Liu, "Conflict-Averse Gradient Descent for
Multi-task Learning", NeurIPS 2021. Follows the official code's
formulation (the dual over the simplex, `rescale=1`); where that code solves
the dual with scipy's SLSQP, this runs projected gradient descent in the
TensorFlow graph (fixed iterations, on the problem scaled by `||g_0||^2`), so
the weights match it to about 1e-3 rather than to solver precision.
Balances the shared parameters' gradients only (no `rep_grad`: the
guarantee of the update is stated for the parameters).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from kerasmtl.weighting.arguments import check_choice, check_float, check_int
from kerasmtl.weighting.gradient_balancer import (
    GradientBalancer,
    mask_gram,
    project_to_simplex,
)

RESCALES = (0, 1, 2)


@keras.saving.register_keras_serializable(package="kerasmtl")
class CAGrad(GradientBalancer):
    """Conflict-averse gradient descent (Liu et al., NeurIPS 2021).

    Formula:
    ```
    g_0 = mean_t g_t;   phi = c^2 ||g_0||^2
    w*  = argmin_{w in simplex} g_w . g_0 + sqrt(phi) ||g_w||,  g_w = sum_t w_t g_t
    d   = g_0 + sqrt(phi) / ||g_w*|| * g_w*
    update = d / (1 + c^2)      (rescale=1; rescale=0: d; rescale=2: d / (1 + c))
    ```
    `c = 0` is plain gradient descent on the mean loss.

    Args:
        c: float >= 0. Radius of the ball around `g_0`, relative to `||g_0||`.
            Defaults to `0.5`.
        rescale: int. 0, 1 or 2, as in the official code. Defaults to `1`.
        iterations: int. Projected-gradient iterations of the dual. Defaults
            to `100`.

    Examples:

    >>> update = CAGrad(c=0.0).aggregate([[1.0, 0.0], [0.0, 3.0]], [1.0, 1.0])
    >>> [round(float(v), 4) for v in update]
    [0.5, 1.5]
    """

    supports_rep_grad = False
    trace_aggregate = True

    def __init__(
        self,
        c: float = 0.5,
        rescale: int = 1,
        iterations: int = 100,
        rep_grad: bool = False,
        **kwargs,
    ):
        super().__init__(rep_grad=rep_grad, **kwargs)
        self.c = check_float("c", c, minimum=0)
        self.rescale = int(
            check_choice("rescale", rescale, RESCALES, expected="0, 1 or 2")
        )
        self.iterations = check_int("iterations", iterations, minimum=1)

    def weights_from_gram(self, gram, losses, active, step):
        mask = tf.cast(active, gram.dtype)
        mean = tf.math.divide_no_nan(mask, tf.reduce_sum(mask))
        gram = mask_gram(gram, active)
        g0_sq = tf.tensordot(mean, tf.linalg.matvec(gram, mean), 1)
        # Scaled by ||g_0||^2 the dual is O(1), so one step size fits all.
        a = tf.math.divide_no_nan(gram, g0_sq)
        b = tf.linalg.matvec(a, mean)  # g_t . g_0
        radius = self.c  # sqrt(phi) / ||g_0||
        step_size = tf.math.divide_no_nan(0.5, tf.reduce_max(tf.linalg.diag_part(a)))

        def objective_grad(w):
            aw = tf.linalg.matvec(a, w)
            norm = tf.sqrt(tf.maximum(tf.tensordot(w, aw, 1), 1e-12))
            return b + radius * aw / norm

        def body(i, w):
            lr = step_size / tf.sqrt(tf.cast(i, gram.dtype) * 0.1 + 1.0)
            return i + 1, project_to_simplex(w - lr * objective_grad(w), active)

        _, w = tf.while_loop(lambda i, w: i < self.iterations, body, (0, mean))
        gw_norm = tf.sqrt(tf.maximum(tf.tensordot(w, tf.linalg.matvec(a, w), 1), 0.0))
        coefficient = tf.math.divide_no_nan(tf.constant(radius, gram.dtype), gw_norm)
        weights = mean + coefficient * w
        divisor = {0: 1.0, 1: 1.0 + self.c**2, 2: 1.0 + self.c}[self.rescale]
        return weights / divisor

    def get_config(self):
        return {
            **super().get_config(),
            "c": self.c,
            "rescale": self.rescale,
            "iterations": self.iterations,
        }
