"""SDMGrad: stochastic direction-oriented multi-objective gradient descent.

Xiao, Ban and Ji, "Direction-oriented Multi-objective Learning: Simple and
Provable Stochastic Algorithms", NeurIPS 2023 (Algorithm 1). MGDA pulled
towards a preferred direction, the mean gradient `g_0`: the weights `w` on
the simplex minimise `(1/2) ||J^T w + lamda g_0||^2`, by a few projected
gradient steps warm-started from the previous training step, and the update
is `(J^T w + lamda g_0) / (1 + lamda)`. `lamda = 0` is a stochastic MGDA;
large `lamda` tends to the mean gradient.

Follows the official code (github.com/OptMN-Lab/sdmgrad,
`methods/weight_methods.py`, as run on NYU-v2 and Cityscapes) in the
defaults (`lamda=0.3`, 20 inner steps of SGD with step 10 and momentum 0.5,
its momentum restarted at every training step), the warm start of `w`
(uniform at first), the Gram matrix divided by the squared mean gradient
norm before the inner steps, and the update multiplied by the number of
tasks "to match the sum loss" (LibMTL's port omits that factor).

With the official step of 10 the inner steps do not converge to the
minimiser in general: the step is far beyond `1 / L` of the normalised
problem, so an interior minimiser is an unstable fixed point and `w`
jumps to or between corners of the simplex (a corner minimiser is kept).
That is the official behaviour, kept as the default. A step below `1 / L`
solves the inner problem (`L` is at most the trace of the normalised Gram
matrix, about `T` for gradients of similar norms): e.g. `learning_rate=0.1,
momentum=0.0, iterations=1000`.

Departures:
- The official code samples two extra batches per step (double sampling:
  `w` steps on `J_1 J_2^T`, the update uses a third batch's `J`). Here, as
  for every balancer in this package, there is one batch per step: the
  inner steps use `J J^T` of that batch and the update its `J`, the
  deterministic variant, whose weight steps are biased for noisy gradients.
  (The official `grads = [tensor] * 3` holds one tensor three times, so it
  too steps on a single batch's gradients, the last sampled.)
- The normalising norm is the mean over the present tasks, without the
  official `+1e-4` inside the square root, so the weights do not depend on
  the gradients' scale.
- The official gradient-norm clipping (`max_norm=1`) is left to the
  optimizer (`clipnorm`).
- `rep_grad=True` is allowed (the official code and LibMTL balance the
  shared parameters only).
- The objective-sampling variant (SDMGrad-OS) is not implemented.

`w` is state: it changes only on applied training steps (not in
`aggregate`) and is saved with the model. A task absent from the batch keeps
its entry; the steps are taken on the face of the simplex of the present
tasks, `g_0` is their mean and the factor their number.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from kerasmtl.weighting.arguments import check_float, check_int
from kerasmtl.weighting.gradient_balancer import (
    GradientBalancer,
    mask_gram,
    merge_into_state,
    project_to_simplex,
    start_on_active_face,
    task_weight_variable,
)


@keras.saving.register_keras_serializable(package="kerasmtl")
class SDMGrad(GradientBalancer):
    """Direction-oriented multi-objective gradient (Xiao et al., NeurIPS 2023).

    Formula:
    ```
    g_0 = mean_t g_t;   A = G G^T / (mean_t ||g_t||)^2
    repeat `iterations` times (m = 0 at first):
        m <- momentum m + A w + lamda A 1/T
        w <- Proj_simplex(w - learning_rate m)
    update = T (G^T w + lamda g_0) / (1 + lamda)
    ```
    `A w + lamda A 1/T` is the gradient of `(1/2) ||G^T w + lamda g_0||^2`
    (normalised); `w` starts uniform and is kept across steps.

    Args:
        lamda: float >= 0. Weight of the mean gradient `g_0` (spelt as in the
            official code: `lambda` is a Python keyword). Defaults to `0.3`
            (the official NYU-v2 setting and LibMTL's default).
        learning_rate: float > 0. Step size of the inner steps on `w`.
            Defaults to `10.0` (the official code).
        momentum: float in [0, 1). Momentum of the inner steps, restarted at
            every training step. Defaults to `0.5` (the official code).
        iterations: int >= 1. Inner steps per training step. Defaults to
            `20` (the official code).
        rep_grad: bool. Balance the gradients w.r.t. the shared
            representation. Defaults to `False`.

    Examples:

    `g_2 = g_1 + (0, 1)`: the minimiser is the corner `w = (1, 0)`, so the
    update is `2 (g_1 + 0.3 g_0) / 1.3 = 2 ((1, 0) + 0.3 (1, 0.5)) / 1.3
    = 2 (1.3, 0.15) / 1.3`.

    >>> update = SDMGrad().aggregate([[1.0, 0.0], [1.0, 1.0]], [1.0, 1.0])
    >>> [round(float(v), 4) for v in update]
    [2.0, 0.2308]

    Orthogonal gradients of equal norm: `w` stays uniform and the update is
    their sum.

    >>> update = SDMGrad().aggregate([[2.0, 0.0], [0.0, 2.0]], [1.0, 1.0])
    >>> [round(float(v), 4) for v in update]
    [2.0, 2.0]
    """

    trace_aggregate = True

    def __init__(
        self,
        lamda: float = 0.3,
        learning_rate: float = 10.0,
        momentum: float = 0.5,
        iterations: int = 20,
        rep_grad: bool = False,
        **kwargs,
    ):
        super().__init__(rep_grad=rep_grad, **kwargs)
        self.lamda = check_float("lamda", lamda, minimum=0)
        self.learning_rate = check_float(
            "learning_rate", learning_rate, minimum=0, include_minimum=False
        )
        self.momentum = check_float(
            "momentum", momentum, minimum=0, maximum=1, include_maximum=False
        )
        self.iterations = check_int("iterations", iterations, minimum=1)

    def build_state(self, num_tasks):
        self.simplex_weights = task_weight_variable(
            self, "simplex_weights", (num_tasks,), keras.initializers.Constant(1 / num_tasks)
        )

    def weights_from_gram(self, gram, losses, active, step):
        gram = mask_gram(gram, active)
        mask = tf.cast(active, gram.dtype)
        count = tf.reduce_sum(mask)
        mean = tf.math.divide_no_nan(mask, count)
        norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(gram), 0.0))
        scale = tf.math.divide_no_nan(tf.reduce_sum(norms), count)
        # Normalised, the problem is O(1) and one step size fits all.
        a = tf.math.divide_no_nan(gram, tf.square(scale))
        pull = self.lamda * tf.linalg.matvec(a, mean)  # lamda G g_0, normalised
        state = tf.cast(tf.convert_to_tensor(self.simplex_weights), gram.dtype)
        start, mass = start_on_active_face(state, active)

        def body(i, w, velocity):
            velocity = self.momentum * velocity + tf.linalg.matvec(a, w) + pull
            return i + 1, project_to_simplex(w - self.learning_rate * velocity, active), velocity

        _, w, _ = tf.while_loop(
            lambda i, w, velocity: i < self.iterations,
            body,
            (tf.constant(0), start, tf.zeros_like(start)),
        )
        # Kept for update_state, called later in the same train step.
        object.__setattr__(self, "_pending_state", merge_into_state(state, w, active, mass))
        return count * (w + self.lamda * mean) / (1.0 + self.lamda)

    def update_state(self, gram, losses, active, weights, applied):
        super().update_state(gram, losses, active, weights, applied)
        pending = getattr(self, "_pending_state", None)
        if pending is not None:
            old = tf.convert_to_tensor(self.simplex_weights)
            self.simplex_weights.assign(tf.where(applied, tf.cast(pending, old.dtype), old))

    def get_config(self):
        return {
            **super().get_config(),
            "lamda": self.lamda,
            "learning_rate": self.learning_rate,
            "momentum": self.momentum,
            "iterations": self.iterations,
        }
