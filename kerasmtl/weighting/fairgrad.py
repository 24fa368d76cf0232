"""FairGrad: alpha-fair allocation of the update among the tasks.

Ban and Ji, "Fair Resource Allocation in Multi-Task Learning", ICML 2024
(official code: github.com/OptMN-Lab/fairgrad). Each task's first-order loss
decrease `g_t . d` is its "utility"; the update `d = J^T w` maximises the
alpha-fair sum of the utilities, whose optimality condition is the
nonlinear system `(G w)_t = w_t^(-1/alpha)`, `G = J J^T`, `w > 0`. `alpha =
1` is proportional fairness (Nash-MTL's equation without its normalisation
of `G`), larger `alpha` moves towards max-min fairness.

Follows the official code (and LibMTL's port) in the system (on the raw,
unnormalised Gram matrix) and the default `alpha=1.0` (the official
class default; its QM9 script uses 2.0). Departures:
- The official code hands the system to scipy's `least_squares` (bounds
  `w >= 0`, start `1/T`); here it is the stationary point of the strictly
  convex `f(w) = w^T G w / 2 - sum_t phi(w_t)`, `phi' = w^(-1/alpha)`,
  found in the TensorFlow graph by Newton steps with a backtracking line
  search in float64 (on `G` scaled to unit largest diagonal, started at
  the exact answer for orthogonal gradients), stopping when every equation
  holds to 1e-10 relative or after `iterations` steps. Where the system
  has no solution (a nonnegative combination of the gradients is zero, i.e.
  a Pareto-stationary point) the iterates grow; they are capped at 1e6
  times the scale of the orthogonal answer, so the weights stay finite.
- The official code multiplies the shared update by `T` ("to match the sum
  loss") and clips its norm to 1 (`max_norm=1.0`); here the update is the
  paper's `J^T w`, as in LibMTL, and clipping is left to the optimizer
  (`clipnorm=`).
- `rep_grad=True` is allowed (the same system on the Gram matrix of the
  representation's gradients); the official code and LibMTL use the shared
  parameters' gradients only.
An inactive task (no label in the batch, zero gradient) is left out of the
system and gets weight 0.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from kerasmtl.weighting.arguments import check_float, check_int
from kerasmtl.weighting.gradient_balancer import GradientBalancer, mask_gram

# Relative residual of `(G w)_t w_t^(1/alpha) = 1` at which Newton stops.
TOLERANCE = 1e-10
# Cap on the (scaled) weights where the system has no solution.
MAX_WEIGHT = 1e6
# Halvings of the Newton step before giving up on a step.
LINE_SEARCH_STEPS = 40


@keras.saving.register_keras_serializable(package="kerasmtl")
class FairGrad(GradientBalancer):
    """Alpha-fair gradient allocation (Ban and Ji, ICML 2024).

    Formula:
    ```
    G = J J^T
    w > 0 with  (G w)_t = w_t^(-1 / alpha)   for every task t
    update = sum_t w_t g_t
    ```
    Every task's first-order decrease is `g_t . update = w_t^(-1/alpha)`:
    the smaller a task's weight, the more it gains. For orthogonal
    gradients `w_t = ||g_t||^(-2 alpha / (1 + alpha))`.

    Args:
        alpha: float > 0. The fairness exponent: 1 is proportional
            fairness, larger values approach max-min fairness. Defaults to
            `1.0` (the official code's default).
        iterations: int >= 1. Most Newton steps of the solver (it stops
            earlier once converged). Defaults to `100`.
        rep_grad: bool. Balance the gradients w.r.t. the shared
            representation. Defaults to `False`.

    Examples:

    Two unit gradients at cosine -0.6: by symmetry `w_1 = w_2 = w` with
    `(1 - 0.6) w = 1 / w`, so `w = 0.4^(-1/2) = 1.5811`.

    >>> update = FairGrad().aggregate([[1.0, 0.0], [-0.6, 0.8]], [1.0, 1.0])
    >>> [round(float(v), 4) for v in update]
    [0.6325, 1.2649]

    Orthogonal gradients of norms 1 and 2 with `alpha=2`:
    `w = (1, 2^(-4/3)) = (1, 0.3969)`.

    >>> update = FairGrad(alpha=2.0).aggregate([[1.0, 0.0], [0.0, 2.0]], [1.0, 1.0])
    >>> [round(float(v), 4) for v in update]
    [1.0, 0.7937]
    """

    trace_aggregate = True

    def __init__(
        self,
        alpha: float = 1.0,
        iterations: int = 100,
        rep_grad: bool = False,
        **kwargs,
    ):
        super().__init__(rep_grad=rep_grad, **kwargs)
        self.alpha = check_float("alpha", alpha, minimum=0, include_minimum=False)
        self.iterations = check_int("iterations", iterations, minimum=1)

    def weights_from_gram(self, gram, losses, active, step):
        weights = fairgrad_weights(gram, active, self.alpha, self.iterations)
        return tf.cast(weights, gram.dtype)

    def get_config(self):
        return {
            **super().get_config(),
            "alpha": self.alpha,
            "iterations": self.iterations,
        }


def fairgrad_weights(gram, active, alpha: float, iterations: int = 100):
    """The `[T]` float64 solution `w > 0` of `(G w)_t = w_t^(-1/alpha)` over
    the active tasks (0 for the others), from `gram = G`.

    Minimises the strictly convex `f(w) = w^T G w / 2 - sum_t phi(w_t)`
    (`phi = log` for alpha 1, else `w^(1 - 1/alpha) / (1 - 1/alpha)`) by
    Newton steps kept positive (at most 95% of the way to the boundary) and
    halved until `f` falls enough (Armijo). The system is solved for `G`
    divided by its largest diagonal entry `s` and the answer rescaled by
    `s^(-alpha / (1 + alpha))`, the exact scaling of the system.
    """
    mask = tf.cast(active, tf.float64)
    g = tf.cast(mask_gram(gram, active), tf.float64)
    scale = tf.reduce_max(tf.linalg.diag_part(g))
    scale = tf.where(scale > 0, scale, tf.ones_like(scale))
    # Inactive tasks decouple (identity rows): their w solves w = w^(-p), w = 1.
    g = g / scale + tf.linalg.diag(1.0 - mask)
    p = 1.0 / alpha

    def potential(w):
        quadratic = 0.5 * tf.tensordot(w, tf.linalg.matvec(g, w), 1)
        if p == 1.0:
            return quadratic - tf.reduce_sum(tf.math.log(w))
        return quadratic - tf.reduce_sum(tf.pow(w, 1.0 - p)) / (1.0 - p)

    def residual(w):
        return tf.reduce_max(tf.abs(tf.linalg.matvec(g, w) * tf.pow(w, p) - 1.0))

    # Exact for orthogonal gradients: G_tt w_t = w_t^(-p).
    w0 = tf.pow(tf.linalg.diag_part(g), -alpha / (1.0 + alpha))
    cap = MAX_WEIGHT * tf.reduce_max(w0)

    def newton_step(w):
        grad = tf.linalg.matvec(g, w) - tf.pow(w, -p)
        hessian = g + tf.linalg.diag(p * tf.pow(w, -p - 1.0))
        # lstsq: the Hessian goes singular as w runs off where no solution exists.
        delta = tf.linalg.lstsq(hessian, grad[:, None], fast=False)[:, 0]
        decrease = tf.tensordot(grad, delta, 1)  # the Newton decrement squared
        # Largest step keeping w positive, with a margin.
        growing = delta > 0
        ratios = tf.where(growing, w / tf.where(growing, delta, 1.0), tf.float64.max)
        t0 = tf.minimum(tf.constant(1.0, tf.float64), 0.95 * tf.reduce_min(ratios))
        f0 = potential(w)

        def rejected(t):
            # NaN or infinity (overflow at a trial point) counts as rejected.
            return tf.logical_not(potential(w - t * delta) <= f0 - 0.25 * t * decrease)

        _, t = tf.while_loop(
            lambda k, t: (k < LINE_SEARCH_STEPS) & rejected(t),
            lambda k, t: (k + 1, 0.5 * t),
            (0, t0),
        )
        return tf.where(rejected(t), w, tf.minimum(w - t * delta, cap))

    def keep_going(i, w):
        return (i < iterations) & (residual(w) > TOLERANCE)

    _, w = tf.while_loop(keep_going, lambda i, w: (i + 1, newton_step(w)), (0, w0))
    return w * tf.pow(scale, -alpha / (1.0 + alpha)) * mask
