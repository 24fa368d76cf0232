"""`GradientBalancer`: the base of gradient-level multi-task balancers.

A loss weighting (`LossWeighting`) mixes the task *losses*; a gradient balancer
mixes the per-task *gradients* of the shared parameters into one update. Its
pure function is `aggregate(grads, losses)`: from a `[T, n]` matrix of
per-task gradients (and the `[T]` task losses) to the `[n]` update.

Every method here (MGDA, PCGrad, CAGrad, IMTL-G, Nash-MTL, Aligned-MTL,
GradNorm) returns a linear combination of the task gradients whose
coefficients depend only on their Gram matrix `G G^T` (and the losses). So a
subclass implements `weights_from_gram(gram, losses, active, step)` and
`aggregate` is `weights @ grads`. That is what `MultiTaskModel.train_step`
uses too: the `[T, T]` Gram matrix is all it needs to agree across replicas
under `tf.distribute` and to work on representation gradients (`rep_grad`),
and a linear update respects the loss scale of mixed precision.

`active` (`[T]` bool) marks the tasks that take part: a task with no known
label in the batch, or whose gradient is exactly zero, is left out of the
aggregation (weight 0) rather than treated as a direction.

A balancer is also a `LossWeighting`, so it goes wherever one goes
(`hard_sharing(..., weighting=mtl.weighting.PCGrad())`). As a loss weighting
(evaluation, the logged `loss`) it is the plain sum of the task losses
(GradNorm: weighted by its learned weights).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from kerasmtl.weighting.base import LossWeighting


class GradientBalancer(LossWeighting):
    """Base class: subclasses implement `weights_from_gram`.

    Args:
        rep_grad: bool. Balance the gradients with respect to the shared
            representation (the trunk's output, MGDA-UB style) instead of the
            shared parameters: one cheap backward per task through its head,
            then one backward through the trunk. Only for methods with
            `supports_rep_grad`. Defaults to `False`.
    """

    supports_rep_grad = True
    # Solvers with loops run faster traced than eagerly in `aggregate`.
    trace_aggregate = False

    def __init__(self, rep_grad: bool = False, **kwargs):
        super().__init__(**kwargs)
        if rep_grad and not self.supports_rep_grad:
            raise ValueError(
                f"{type(self).__name__} cannot balance representation gradients "
                "(rep_grad=True): its update is defined on the shared parameters. "
                f"Use rep_grad=False, or one of {', '.join(_rep_grad_balancers())}."
            )
        self.rep_grad = bool(rep_grad)

    def build(self, losses_shape):
        if isinstance(losses_shape, dict) and len(losses_shape) < 2:
            raise ValueError(
                f"{type(self).__name__} balances the gradients of two or more tasks;"
                f" it was given {len(losses_shape)} ({list(losses_shape)}). Use a "
                "loss weighting (e.g. mtl.weighting.Equal()) for a single task."
            )
        super().build(losses_shape)

    # -- the method -------------------------------------------------------------

    def weights_from_gram(self, gram, losses, active, step):
        """Returns the `[T]` combination weights (0 for inactive tasks).

        Args:
            gram: `[T, T]` float32, `G G^T` of the (unscaled) task gradients,
                zero in the rows and columns of inactive tasks.
            losses: `[T]` float32 task losses.
            active: `[T]` bool, the tasks that take part.
            step: int scalar tensor, the optimizer step (seeds random orders).
        """
        raise NotImplementedError

    def update_state(self, gram, losses, active, weights, applied) -> None:
        """Called after every training step: records the step's weights (as
        `weight/<task>`) if it was `applied` (a bool tensor); GradNorm learns
        its weights here."""
        old = tf.convert_to_tensor(self.task_weights)
        self.task_weights.assign(tf.where(applied, tf.cast(weights, old.dtype), old))

    def aggregate(self, grads, losses=None, step=0):
        """The `[n]` update from `[T, n]` per-task gradients and `[T]` losses.

        Eagerly, a gradient that contains NaN or infinity, or gradients that
        are all zero, raise a ValueError. Zero rows are left out.
        """
        grads = tf.convert_to_tensor(grads, tf.float32)
        if grads.shape.rank != 2:
            raise ValueError(
                f"{type(self).__name__}.aggregate expects per-task gradients of "
                f"shape [T, n]. Received shape {tuple(grads.shape)}."
            )
        num_tasks = grads.shape[0]
        if num_tasks is None or num_tasks < 2:
            raise ValueError(
                f"{type(self).__name__}.aggregate needs gradients of two or more "
                f"tasks. Received shape {tuple(grads.shape)}."
            )
        if not self.built:
            self.build({f"task_{i}": () for i in range(num_tasks)})
        if num_tasks != len(self.task_names):
            raise ValueError(
                f"{type(self).__name__} was built for {len(self.task_names)} tasks "
                f"{self.task_names}; received gradients of shape "
                f"{tuple(grads.shape)}."
            )
        losses = tf.ones([num_tasks]) if losses is None else losses
        losses = tf.reshape(tf.cast(tf.convert_to_tensor(losses), tf.float32), [-1])
        if losses.shape[0] != num_tasks:
            raise ValueError(
                f"{type(self).__name__}.aggregate: {num_tasks} task gradients but "
                f"losses of shape {tuple(losses.shape)}. Give one loss per task."
            )
        if tf.executing_eagerly():
            check_gradients(grads.numpy(), self.task_names)
        gram = tf.matmul(grads, grads, transpose_b=True)
        active = tf.linalg.diag_part(gram) > 0
        if tf.executing_eagerly() and self.trace_aggregate:
            if getattr(self, "_traced_weights", None) is None:
                traced = tf.function(self.weights_from_gram, reduce_retracing=True)
                object.__setattr__(self, "_traced_weights", traced)
            weights = self._traced_weights(gram, losses, active, tf.constant(step))
        else:
            weights = self.weights_from_gram(gram, losses, active, tf.constant(step))
        return self.combine_gradients(grads, weights)

    def combine_gradients(self, grads, weights):
        """The `[n]` update from `[T, n]` task gradients and the `[T]` weights
        of `weights_from_gram`: `weights @ grads`. The train step calls it on
        the loss-scaled gradients (parameter mode: all-reduced; `rep_grad`:
        this replica's), so an override must be positively homogeneous in
        `grads`; GradDrop's, which acts on the gradients' entries, is."""
        return tf.linalg.matvec(grads, weights, transpose_a=True)

    # -- as a loss weighting ----------------------------------------------------

    def combine(self, losses, present, training=False):
        return ops.sum(losses), ops.convert_to_tensor(self.task_weights)

    def get_config(self):
        return {**super().get_config(), "rep_grad": self.rep_grad}


def check_gradients(grads: np.ndarray, task_names) -> None:
    """Raises a ValueError for non-finite or all-zero task gradients."""
    bad = [n for n, row in zip(task_names, grads) if not np.all(np.isfinite(row))]
    if bad:
        raise ValueError(
            f"The gradients of task(s) {bad} contain NaN or infinity "
            f"(gradients of shape {grads.shape}). Check those losses and labels; "
            "in training such a step is skipped and counted in "
            "`balancer/skipped_steps`."
        )
    if not np.any(grads):
        raise ValueError(
            f"Every task gradient is zero (gradients of shape {grads.shape}): "
            "there is no direction to balance. In training such a step is skipped "
            "and counted in `balancer/skipped_steps`."
        )


# -- shared helpers (all in-graph, on [T] and [T, T] tensors) --------------------


def masked_mean(values, active):
    """Mean of `values` over the active tasks (0 if none)."""
    mask = tf.cast(active, values.dtype)
    return tf.math.divide_no_nan(tf.reduce_sum(values * mask), tf.reduce_sum(mask))


def mask_gram(gram, active):
    """Zeroes the rows and columns of inactive tasks."""
    mask = tf.cast(active, gram.dtype)
    return gram * mask[:, None] * mask[None, :]


def min_norm_weights(gram, active):
    """The min-norm point of the convex hull of the active gradients.

    Returns `w` on the simplex of the active tasks minimising `w^T gram w`,
    exactly: for every support set S the equality-constrained minimiser
    (`gram_SS w_S = mu 1`, `sum w_S = 1`) is one batched linear solve; the
    best one with `w >= 0` wins. `2^T - 1` tiny systems: meant for the
    handful of tasks of multi-task learning (at most 12).
    """
    num_tasks = gram.shape[0]
    if num_tasks > 12:
        raise ValueError(
            f"The min-norm solver enumerates task subsets; {num_tasks} tasks are "
            "too many (at most 12)."
        )
    supports = np.array(
        [[(s >> t) & 1 for t in range(num_tasks)] for s in range(1, 2**num_tasks)],
        "float32",
    )
    supports = tf.constant(supports) * tf.cast(active, gram.dtype)[None, :]
    # The weights do not depend on the scale; the KKT solve is better scaled.
    gram = tf.math.divide_no_nan(gram, tf.reduce_max(tf.linalg.diag_part(gram)))
    outside = 1.0 - supports
    # KKT system per support: [[gram_SS, -1], [1^T, 0]] [w; mu] = [0; 1], with
    # identity rows pinning w_t = 0 outside S. lstsq: singular when gradients
    # are collinear, where any minimiser does.
    block = gram[None] * supports[:, :, None] * supports[:, None, :]
    block += tf.linalg.diag(outside)
    top = tf.concat([block, -supports[:, :, None]], axis=2)
    bottom = tf.concat([supports, tf.zeros_like(supports[:, :1])], axis=1)[:, None]
    system = tf.concat([top, bottom], axis=1)
    rhs = tf.concat([tf.zeros_like(supports), tf.ones_like(supports[:, :1])], 1)
    solution = tf.linalg.lstsq(system, rhs[:, :, None], fast=False)[:, :num_tasks, 0]
    w = solution * supports
    norms = tf.einsum("st,tu,su->s", w, gram, w)
    feasible = (
        tf.reduce_all(w >= -1e-6, axis=1)
        & (tf.abs(tf.reduce_sum(w, axis=1) - 1.0) < 1e-4)
        & (tf.reduce_sum(supports, axis=1) > 0)
    )
    best = tf.argmin(tf.where(feasible, norms, np.inf))
    return tf.maximum(tf.gather(w, best), 0.0)


def project_to_simplex(v, active):
    """Euclidean projection of `v` onto the simplex of the active entries
    (Duchi et al., ICML 2008); inactive entries become 0."""
    num_tasks = tf.shape(v)[0]
    k_active = tf.reduce_sum(tf.cast(active, tf.int32))
    u = tf.sort(tf.where(active, v, -1e30), direction="DESCENDING")
    cumsum = tf.cumsum(u)
    index = tf.cast(tf.range(1, num_tasks + 1), v.dtype)
    valid = tf.logical_and(u - (cumsum - 1) / index > 0, tf.range(num_tasks) < k_active)
    rho = tf.maximum(tf.reduce_sum(tf.cast(valid, tf.int32)), 1)
    theta = (tf.gather(cumsum, rho - 1) - 1) / tf.cast(rho, v.dtype)
    return tf.maximum(v - theta, 0) * tf.cast(active, v.dtype)


def task_weight_variable(layer: keras.layers.Layer, name: str, shape, init="zeros"):
    """A non-trainable state variable that each replica updates alike."""
    return layer.add_weight(
        shape=shape,
        initializer=init,
        trainable=False,
        name=name,
        aggregation="only_first_replica",
    )


def _rep_grad_balancers() -> list[str]:
    """The names of the balancer classes defined so far that take `rep_grad`."""
    found, stack = set(), [GradientBalancer]
    while stack:
        for sub in stack.pop().__subclasses__():
            stack.append(sub)
            if sub.supports_rep_grad and sub.__module__.startswith("kerasmtl."):
                found.add(sub.__name__)
    return sorted(found)


def start_on_active_face(state, active):
    """`(start, mass)`: the stored simplex weights of the active tasks,
    normalised to sum to 1 (uniform over them if they hold no weight), and
    the total weight `mass` they held (for state-carrying simplex methods:
    SDMGrad, MoDo)."""
    mask = tf.cast(active, state.dtype)
    held = state * mask
    mass = tf.reduce_sum(held)
    uniform = tf.math.divide_no_nan(mask, tf.reduce_sum(mask))
    start = tf.where(mass > 1e-12, tf.math.divide_no_nan(held, mass), uniform)
    return start, mass


def merge_into_state(state, weights, active, mass):
    """The new stored weights: the active tasks' new `weights` (on their
    simplex) scaled back to the `mass` they held; inactive tasks' kept. The
    result is renormalised so that rounding does not drift off the simplex."""
    merged = tf.where(active, mass * weights, state)
    total = tf.reduce_sum(merged)
    return tf.where(total > 0, tf.math.divide_no_nan(merged, total), state)
