"""GradNorm: gradient normalisation by learned task weights.

Chen, Badrinarayanan, Lee and Rabinovich, "GradNorm: Gradient Normalization
for Adaptive Loss Balancing in Deep Multitask Networks", ICML 2018
(Algorithm 1). The task weights are learned with the paper's own loss
`L_grad` and renormalised to sum to T after every step. Deviations (no
official code was released): the gradient norms are taken over all shared
parameters (or the shared representation with `rep_grad=True`, as LibMTL)
rather than one chosen layer, and the weights take plain gradient steps on
`L_grad` divided by the mean task-gradient norm, so that `learning_rate`
does not depend on the scale of the gradients (nor on a mixed-precision loss
scale); the paper steps them with the network's optimizer.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from kerasmtl.weighting.arguments import check_float
from kerasmtl.weighting.gradient_balancer import (
    GradientBalancer,
    masked_mean,
    task_weight_variable,
)


@keras.saving.register_keras_serializable(package="kerasmtl")
class GradNorm(GradientBalancer):
    """GradNorm (Chen et al., ICML 2018).

    Formula:
    ```
    update = sum_t w_t g_t
    G_t = w_t ||g_t||;   r_t = (L_t / L_t(0)) / mean_s (L_s / L_s(0))
    L_grad = sum_t | G_t - mean_s(G_s) * r_t^alpha |   (target held constant)
    w <- w - learning_rate * dL_grad/dw / mean_t ||g_t||;   w <- T w / sum(w)
    ```
    `L_t(0)` is task t's loss at the first step it has labels. The weights
    (`weight/<task>` in the training logs) start at 1 and stay positive.

    Args:
        alpha: float >= 0. Strength of the pull towards equal training
            rates. Defaults to `1.5` (the paper's NYUv2 value).
        learning_rate: float > 0. Step size of the task weights. Defaults to
            `0.025`.
        rep_grad: bool. Use the gradient norms w.r.t. the shared
            representation. Defaults to `False`.

    Examples:

    >>> balancer = GradNorm()
    >>> update = balancer.aggregate([[1.0, 0.0], [0.0, 2.0]], [1.0, 1.0])
    >>> [round(float(v), 4) for v in update]
    [1.0, 2.0]
    """

    def __init__(
        self,
        alpha: float = 1.5,
        learning_rate: float = 0.025,
        rep_grad: bool = False,
        **kwargs,
    ):
        super().__init__(rep_grad=rep_grad, **kwargs)
        self.alpha = check_float("alpha", alpha, minimum=0)
        self.learning_rate = check_float(
            "learning_rate", learning_rate, minimum=0, include_minimum=False
        )

    def build_state(self, num_tasks):
        self.initial_losses = task_weight_variable(self, "initial_losses", (num_tasks,))

    def weights_from_gram(self, gram, losses, active, step):
        return tf.convert_to_tensor(self.task_weights) * tf.cast(active, gram.dtype)

    def combine(self, losses, present, training=False):
        weights = tf.convert_to_tensor(self.task_weights)
        return tf.reduce_sum(weights * losses), weights

    def update_state(self, gram, losses, active, weights, applied):
        weights = tf.convert_to_tensor(self.task_weights)
        active = tf.logical_and(active, applied)
        mask = tf.cast(active, weights.dtype)
        norms = tf.sqrt(tf.linalg.diag_part(gram))
        initial = tf.convert_to_tensor(self.initial_losses)
        initial = tf.where(tf.logical_and(active, initial <= 0), losses, initial)
        self.initial_losses.assign(initial)  # unchanged unless applied
        ratio = tf.math.divide_no_nan(losses, initial)
        rate = tf.math.divide_no_nan(ratio, masked_mean(ratio, active))
        norm_by_task = weights * norms
        target = masked_mean(norm_by_task, active) * tf.pow(rate, self.alpha)
        grad = tf.sign(norm_by_task - target) * norms * mask
        grad = tf.math.divide_no_nan(grad, masked_mean(norms, active))
        new = tf.maximum(weights - self.learning_rate * grad, 1e-3)
        num_tasks = tf.cast(tf.size(new), new.dtype)
        new = num_tasks * new / tf.reduce_sum(new)
        self.task_weights.assign(tf.where(applied, new, weights))

    def get_config(self):
        return {
            **super().get_config(),
            "alpha": self.alpha,
            "learning_rate": self.learning_rate,
        }
