"""ExcessMTL: task weights by estimated excess risk.

He, Zhou, Zhang, Yun, Xu, Zeng, Chilimbi and Zhao, "Robust Multi-Task
Learning with Excess Risks", ICML 2024 (official code:
github.com/yifei-he/ExcessMTL, a LibMTL fork; LibMTL's `ExcessMTL` is a
copy). Weighting tasks by their losses favours noisy tasks, whose loss
stays high whatever the model does; ExcessMTL weights them by an estimate
of their *excess* risk, the part of the loss that training can still
remove. With a diagonal (AdaGrad-style) estimate `H_t` of the Hessian, the
excess risk of task t is about `g_t^T H_t^{-1} g_t`; each estimate is
divided by its first value (so tasks of different scales compare), and the
weights take an exponentiated-gradient (mirror ascent) step and are
renormalised to sum to `T`.

Follows the official code in the estimate's form (squared gradients summed
over all past steps, `sqrt(sum + 1e-7)`), in dividing by the first step's
estimate (the first step leaves the weights at 1), in the multiplicative
step `w <- w exp(step_size * excess)` with `step_size=1e-2` (LibMTL's
default `robust_step_size`) and in the weights summing to `T`. Departures:
- The Hessian estimate. The official code keeps a per-coordinate sum of
  squared gradients for every task (`T x n`, a copy of every shared
  parameter per task); a balancer here sees the `[T, T]` Gram matrix of the
  step's gradients (exact across replicas, `rep_grad`, mixed precision), so
  the preconditioner is isotropic, AdaGrad-norm's scalar `sqrt(S_t + 1e-7)`
  with `S_t` the sum of the past squared gradient *norms*:
  `excess_t = ||g_t||^2 / sqrt(S_t + 1e-7)`. After the division by the first
  estimate this equals the official value exactly (up to the 1e-7) while
  each task's gradient keeps its direction up to sign from step to step,
  and otherwise differs in that the coordinates share one scale.
- Missing labels: a task absent from the batch keeps its weight, sum and
  first estimate (and gets weight 0 in this step's update); a task's first
  estimate is that of its first present step (the official code takes every
  task's at the first step); the tasks that take the multiplicative step
  share the total weight they had before it. With every task present this
  is the official `w / sum(w) * T`.
- As for every balancer here, only the shared parameters get the weighted
  update; each task's own head gets its unweighted gradient (the official
  code backpropagates the weighted loss, so its heads are weighted too).
- `rep_grad=True` uses the norms of the representation's gradients over the
  whole batch (the official code sums them over the examples first).
The state changes only on applied training steps (not in `aggregate`) and
is saved with the model.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from kerasmtl.weighting.arguments import check_float
from kerasmtl.weighting.gradient_balancer import GradientBalancer, task_weight_variable


@keras.saving.register_keras_serializable(package="kerasmtl")
class ExcessMTL(GradientBalancer):
    """Robust multi-task learning with excess risks (He et al., ICML 2024).

    Formula:
    ```
    S_t <- S_t + ||g_t||^2
    e_t = ||g_t||^2 / sqrt(S_t + epsilon)        (excess risk estimate)
    first step of task t:  e0_t = e_t  (weights unchanged)
    then:  w_t <- w_t exp(step_size * e_t / e0_t);   w <- T w / sum(w)
    update = sum_t w_t g_t
    ```
    The weights start at 1; a task whose estimated excess risk stays high
    relative to its start gains weight.

    Args:
        step_size: float > 0. Step size of the multiplicative update.
            Defaults to `1e-2` (LibMTL's default `robust_step_size`).
        epsilon: float > 0. Added to the sum of squares under the square
            root. Defaults to `1e-7` (the official code's).
        rep_grad: bool. Balance the gradients w.r.t. the shared
            representation. Defaults to `False`.

    Examples:

    Two steps by hand (`step_size=1`). First: `S = (9, 16)`, `e0 = (9 / 3,
    16 / 4) = (3, 4)`, weights stay 1. Second, with gradient norms 3 and 1:
    `S = (18, 17)`, `e / e0 = (9 / sqrt(18) / 3, 1 / sqrt(17) / 4) =
    (0.7071, 0.0606)`, and `(e^0.7071, e^0.0606)` scaled to sum 2:

    >>> balancer = ExcessMTL(step_size=1.0)
    >>> balancer.build({"a": (), "b": ()})
    >>> present = tf.constant([True, True])
    >>> for norms in ([3.0, 4.0], [3.0, 1.0]):
    ...     gram = tf.linalg.diag(tf.square(norms))
    ...     weights = balancer.weights_from_gram(gram, tf.ones(2), present, 0)
    ...     balancer.update_state(gram, tf.ones(2), present, weights, tf.constant(True))
    >>> [round(float(w), 4) for w in weights]
    [1.3124, 0.6876]
    """

    def __init__(
        self,
        step_size: float = 1e-2,
        epsilon: float = 1e-7,
        rep_grad: bool = False,
        **kwargs,
    ):
        super().__init__(rep_grad=rep_grad, **kwargs)
        self.step_size = check_float(
            "step_size", step_size, minimum=0, include_minimum=False
        )
        self.epsilon = check_float("epsilon", epsilon, minimum=0, include_minimum=False)

    def build_state(self, num_tasks):
        shape = (num_tasks,)
        self.squared_norm_sums = task_weight_variable(self, "squared_norm_sums", shape)
        # 0 until the task's first present step.
        self.initial_excess = task_weight_variable(self, "initial_excess", shape)
        self.loss_weights = task_weight_variable(self, "loss_weights", shape, "ones")

    def weights_from_gram(self, gram, losses, active, step):
        dtype = gram.dtype
        squares = tf.where(active, tf.maximum(tf.linalg.diag_part(gram), 0.0), 0.0)
        sums = tf.cast(tf.convert_to_tensor(self.squared_norm_sums), dtype) + squares
        excess = squares / tf.sqrt(sums + self.epsilon)
        old_initial = tf.cast(tf.convert_to_tensor(self.initial_excess), dtype)
        first = active & (old_initial <= 0)
        initial = tf.where(first, excess, old_initial)
        learn = active & tf.logical_not(first)
        ratio = tf.math.divide_no_nan(excess, old_initial)
        old_weights = tf.cast(tf.convert_to_tensor(self.loss_weights), dtype)
        # In logs, so that a large ratio cannot overflow the exponential.
        logits = tf.where(
            learn, tf.math.log(old_weights) + self.step_size * ratio, -float("inf")
        )
        normaliser = tf.reduce_logsumexp(logits)  # -inf when no task learns
        normaliser = tf.where(tf.math.is_finite(normaliser), normaliser, 0.0)
        mass = tf.reduce_sum(tf.where(learn, old_weights, 0.0))
        stepped = tf.where(learn, tf.exp(logits - normaliser) * mass, old_weights)
        # Kept for update_state, called later in the same train step.
        object.__setattr__(self, "_pending_state", (sums, initial, stepped))
        return tf.where(active, stepped, 0.0)

    def update_state(self, gram, losses, active, weights, applied):
        super().update_state(gram, losses, active, weights, applied)
        pending = getattr(self, "_pending_state", None)
        if pending is None:
            return
        state = (self.squared_norm_sums, self.initial_excess, self.loss_weights)
        for variable, value in zip(state, pending):
            old = tf.convert_to_tensor(variable)
            variable.assign(tf.where(applied, tf.cast(value, old.dtype), old))

    def get_config(self):
        return {
            **super().get_config(),
            "step_size": self.step_size,
            "epsilon": self.epsilon,
        }
