"""DB-MTL: dual-balancing multi-task learning.

Lin, Ye, Xu, Shi and Zhang, "Dual-Balancing Multi-Task Learning", arXiv
2308.12029, 2023 (Algorithm 1). Two balancings: of the loss scales, by
training on the log-losses (`grad log L_t = grad L_t / L_t`, as in
`ScaleInvariant`); and of the gradient magnitudes, by an exponential moving
average `g^_t` of each task's log-loss gradient, normalised and rescaled to
the largest: `update = max_s ||g^_s|| sum_t g^_t / ||g^_t||`.

Follows the official code and LibMTL's port in the loss transform
(`log(L_t + 1e-8)`), the rate (`beta / step^beta_sigma`, defaults 0.9 and 0)
and the uncorrected average started at zero. One departure, so that it is a
Gram-matrix method like the others (exact across replicas, `rep_grad`,
mixed precision, no `T x n` buffer): the moving average is kept of each
log-gradient's *norm* `m_t`, and applied along the current direction,
`g^_t ~ m_t g_t / ||g_t||`. The result is the paper's exactly whenever each
task's gradient keeps its direction from step to step (and with `beta=0`),
and otherwise differs in that the direction is not smoothed (no momentum).
The averages change only on applied training steps (not in `aggregate`),
are left alone for a task absent from the batch, and are saved with the
model. As a loss weighting (evaluation, the logged `loss`) it is the plain
sum of the task losses, as for the other balancers.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from kerasmtl.weighting.arguments import check_float
from kerasmtl.weighting.gradient_balancer import GradientBalancer, task_weight_variable


@keras.saving.register_keras_serializable(package="kerasmtl")
class DBMTL(GradientBalancer):
    """Dual-balancing multi-task learning (Lin et al., 2023).

    Formula:
    ```
    g_t = grad log(L_t + epsilon) = grad L_t / (L_t + epsilon)
    k <- k + 1;   rate = beta / k^beta_sigma
    m_t <- ||g_t|| + rate (m_t - ||g_t||)       (m starts at 0)
    update = max_s m_s  sum_t g_t / ||g_t||
    ```
    that is weights `w_t = max_s m_s / ||grad L_t||` on the raw task
    gradients.

    Args:
        beta: float in [0, 1). Weight of the past in the moving average.
            Defaults to `0.9` (LibMTL's default).
        beta_sigma: float >= 0. Decay of `beta` with the step count.
            Defaults to `0.0` (LibMTL's default: a constant rate).
        epsilon: float > 0. Added to each loss inside the log. Defaults to
            `1e-8`.
        rep_grad: bool. Balance the gradients w.r.t. the shared
            representation. Defaults to `False`.

    Examples:

    >>> update = DBMTL(beta=0.0).aggregate([[3.0, 0.0], [0.0, 1.0]], [1.0, 1.0])
    >>> [round(float(v), 4) for v in update]
    [3.0, 3.0]
    """

    def __init__(
        self,
        beta: float = 0.9,
        beta_sigma: float = 0.0,
        epsilon: float = 1e-8,
        rep_grad: bool = False,
        **kwargs,
    ):
        super().__init__(rep_grad=rep_grad, **kwargs)
        self.beta = check_float(
            "beta", beta, minimum=0, maximum=1, include_maximum=False
        )
        self.beta_sigma = check_float("beta_sigma", beta_sigma, minimum=0)
        self.epsilon = check_float("epsilon", epsilon, minimum=0, include_minimum=False)

    def build_state(self, num_tasks):
        self.norm_averages = task_weight_variable(self, "gradient_norm_averages", (num_tasks,))
        self.updates = task_weight_variable(self, "updates", ())

    def weights_from_gram(self, gram, losses, active, step):
        norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(gram), 0.0))
        log_norms = norms / (tf.cast(losses, gram.dtype) + self.epsilon)
        count = tf.cast(tf.convert_to_tensor(self.updates), gram.dtype) + 1.0
        rate = self.beta / count**self.beta_sigma
        old = tf.cast(tf.convert_to_tensor(self.norm_averages), gram.dtype)
        averages = tf.where(active, log_norms + rate * (old - log_norms), old)
        scale = tf.reduce_max(tf.where(active, averages, 0.0))
        weights = tf.where(active, tf.math.divide_no_nan(scale, norms), 0.0)
        # Kept for update_state, called later in the same train step.
        object.__setattr__(self, "_pending_averages", (averages, count))
        return weights

    def update_state(self, gram, losses, active, weights, applied):
        super().update_state(gram, losses, active, weights, applied)
        pending = getattr(self, "_pending_averages", None)
        if pending is not None:
            averages, count = pending
            old = tf.convert_to_tensor(self.norm_averages)
            self.norm_averages.assign(tf.where(applied, tf.cast(averages, old.dtype), old))
            self.updates.assign(tf.where(applied, count, tf.convert_to_tensor(self.updates)))

    def get_config(self):
        return {
            **super().get_config(),
            "beta": self.beta,
            "beta_sigma": self.beta_sigma,
            "epsilon": self.epsilon,
        }
