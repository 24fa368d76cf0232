"""GradVac: gradient vaccine.

Wang, Tsvetkov, Firat and Cao, "Gradient Vaccine: Investigating and
Improving Multi-task Optimization in Massively Multilingual Models", ICLR
2021. PCGrad with a learned target: each task gradient is moved towards each
other task's gradient until their cosine reaches an exponential moving
average of the cosines seen so far (PCGrad's target is 0). Follows LibMTL's
port (no official code was released) with one group for all shared
parameters (LibMTL's `whole_model`), not its per-layer groups; the random
visiting order is drawn in the graph from `(seed, optimizer step, task)` as
in `PCGrad`. The moving averages are state: they change only on applied
training steps (not in `aggregate`) and are saved with the model.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from kerasmtl.weighting.arguments import check_float
from kerasmtl.weighting.gradient_balancer import GradientBalancer, task_weight_variable


@keras.saving.register_keras_serializable(package="kerasmtl")
class GradVac(GradientBalancer):
    """Gradient vaccine (Wang et al., ICLR 2021).

    Formula:
    ```
    for each task i:   g_i' = g_i
        for j != i in random order:
            rho = cos(g_i', g_j);   phi = target[i, j]
            if rho < phi:
                g_i' += ||g_i'|| (phi sqrt(1 - rho^2) - rho sqrt(1 - phi^2))
                        / (||g_j|| sqrt(1 - phi^2)) g_j
            target[i, j] <- (1 - beta) target[i, j] + beta rho
    update = sum_i g_i'
    ```
    With all targets 0 (the start) this is PCGrad.

    Args:
        beta: float in [0, 1]. Rate of the cosine moving averages. Defaults
            to `0.5` (LibMTL's default; the paper uses 1e-2 for its long runs).
        seed: int. Seed of the random task order. Defaults to `0`.
        rep_grad: bool. Balance the gradients w.r.t. the shared
            representation. Defaults to `False`.

    Examples:

    >>> update = GradVac().aggregate([[1.0, 0.0], [-1.0, 1.0]], [1.0, 1.0])
    >>> [round(float(v), 4) for v in update]
    [0.5, 1.5]
    """

    def __init__(self, beta: float = 0.5, seed: int = 0, rep_grad: bool = False, **kwargs):
        super().__init__(rep_grad=rep_grad, **kwargs)
        self.beta = check_float("beta", beta, minimum=0, maximum=1)
        self.seed = int(seed)

    def build_state(self, num_tasks):
        self.targets = task_weight_variable(self, "cosine_targets", (num_tasks, num_tasks))

    def weights_from_gram(self, gram, losses, active, step):
        num_tasks = gram.shape[0]
        eye = tf.eye(num_tasks, dtype=gram.dtype)
        norms = tf.sqrt(tf.linalg.diag_part(gram))
        targets = tf.cast(tf.convert_to_tensor(self.targets), gram.dtype)
        new_targets = targets
        seed = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(step, tf.int64)])
        total = tf.zeros([num_tasks], gram.dtype)
        for i in range(num_tasks):
            coefficients = eye[i] * tf.cast(active[i], gram.dtype)
            task_seed = tf.random.experimental.stateless_fold_in(seed, i)
            order = tf.argsort(tf.random.stateless_uniform([num_tasks], task_seed))
            for k in range(num_tasks):
                j = order[k]
                pair = active[i] & tf.gather(active, j) & tf.not_equal(j, i)
                norm_sq = tf.tensordot(coefficients, tf.linalg.matvec(gram, coefficients), 1)
                norm_i = tf.sqrt(tf.maximum(norm_sq, 0.0))
                norm_j = tf.gather(norms, j)
                dot = tf.tensordot(coefficients, gram[:, j], 1)  # g_i' . g_j
                rho = tf.clip_by_value(tf.math.divide_no_nan(dot, norm_i * norm_j), -1.0, 1.0)
                phi = targets[i, j]
                # phi < 1 always (an average of cosines below 1 unless parallel).
                sin_phi = tf.sqrt(tf.maximum(1.0 - phi**2, 1e-12))
                size = tf.math.divide_no_nan(
                    norm_i * (phi * tf.sqrt(1.0 - rho**2) - rho * sin_phi), norm_j * sin_phi
                )
                coefficients += tf.where(pair & (rho < phi), size, 0.0) * tf.gather(eye, j)
                ema = (1.0 - self.beta) * phi + self.beta * rho
                cell = eye[i][:, None] * tf.gather(eye, j)[None, :]
                new_targets += tf.where(pair, ema - phi, 0.0) * cell
            total += coefficients
        # Kept for update_state, called later in the same train step.
        object.__setattr__(self, "_pending_targets", new_targets)
        return total

    def update_state(self, gram, losses, active, weights, applied):
        super().update_state(gram, losses, active, weights, applied)
        pending = getattr(self, "_pending_targets", None)
        if pending is not None:
            old = tf.convert_to_tensor(self.targets)
            self.targets.assign(tf.where(applied, tf.cast(pending, old.dtype), old))

    def get_config(self):
        return {**super().get_config(), "beta": self.beta, "seed": self.seed}
