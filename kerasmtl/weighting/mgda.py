"""MGDA: the multiple-gradient descent algorithm (min-norm point).

Sener and Koltun, "Multi-Task Learning as Multi-Objective Optimization",
NeurIPS 2018. Follows the official code in that the gradient normalisation
only chooses the weights, which then weigh the raw gradients. Where the
official `MinNormSolver` iterates (Frank-Wolfe / projected steps, stop at
1e-5), the min-norm point here is found exactly in the TensorFlow graph, by
one batched KKT solve per support set of tasks (T <= 12).
`rep_grad=True` is the paper's MGDA-UB (gradients w.r.t. the shared
representation). The official code is in PyTorch; the solver here runs in
the TensorFlow graph.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from kerasmtl.weighting.arguments import check_choice
from kerasmtl.weighting.gradient_balancer import GradientBalancer, min_norm_weights

NORMALIZATIONS = ("none", "l2", "loss", "loss+")


@keras.saving.register_keras_serializable(package="kerasmtl")
class MGDA(GradientBalancer):
    """Multiple-gradient descent (Sener and Koltun, NeurIPS 2018).

    Formula:
    ```
    w* = argmin_{w in simplex} || sum_t w_t g_t / s_t ||^2
    update = sum_t w*_t g_t
    ```
    with `s_t` = 1 ("none"), `||g_t||` ("l2"), `L_t` ("loss") or
    `L_t ||g_t||` ("loss+"). For two tasks (s = 1) the minimiser is closed
    form: `w_1 = clip((g_2 - g_1).g_2 / ||g_1 - g_2||^2, 0, 1)`.

    Args:
        normalization: str. One of "none", "l2", "loss", "loss+". Defaults to
            `"none"`.
        rep_grad: bool. MGDA-UB: balance the gradients w.r.t. the shared
            representation. Defaults to `False`.

    Examples:

    >>> update = MGDA().aggregate([[1.0, 0.0], [0.0, 1.0]], [1.0, 1.0])
    >>> [round(float(v), 4) for v in update]
    [0.5, 0.5]
    """

    def __init__(
        self,
        normalization: str = "none",
        rep_grad: bool = False,
        **kwargs,
    ):
        super().__init__(rep_grad=rep_grad, **kwargs)
        self.normalization = check_choice(
            "normalization", normalization, NORMALIZATIONS
        )

    def weights_from_gram(self, gram, losses, active, step):
        if self.normalization == "none":
            return min_norm_weights(gram, active)
        norms = tf.sqrt(tf.linalg.diag_part(gram))
        scale = {"l2": norms, "loss": losses, "loss+": losses * norms}
        inverse = tf.math.divide_no_nan(1.0, scale[self.normalization])
        normalized = gram * inverse[:, None] * inverse[None, :]
        return min_norm_weights(normalized, active)

    def get_config(self):
        return {
            **super().get_config(),
            "normalization": self.normalization,
        }
