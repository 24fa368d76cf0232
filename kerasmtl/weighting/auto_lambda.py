"""Auto-Lambda: task weights learned by a one-step look-ahead (bilevel).

Liu, Johns and Davison, "Auto-Lambda: Disentangling Dynamic Task
Relationships", TMLR 2022. The task weights `lambda` are meta-parameters: each
step first takes a virtual SGD step of the network on the weighted training
loss, then moves `lambda` to lower the primary tasks' loss after that step,
measured on other data; the real step then uses the new weights. The
official code gets the derivative through the virtual step by finite
differences (its `compute_hessian`: the weighted loss at
`theta +- eps * d`, differentiated w.r.t. `lambda`); that quantity is exactly
`-alpha * <g_t, d>` (the virtual step is linear in `lambda`), which we
compute from the per-task gradients instead, with no `eps`.

Departures from the official code (`lorenmt/auto-lambda`):

- Its meta-batch is a second, independently shuffled training batch. A
  Keras `fit` step sees one batch, so the batch is split in two: the first
  half is the training half of the virtual step, the second half the
  meta-batch. The real step uses the whole batch.
- Its virtual step replays SGD with momentum and weight decay (the
  optimiser it trains with). Here it is a plain gradient step with the
  model optimiser's current learning rate, whatever the optimiser.
- The weights are kept >= 0 (the official code does not clip them; a
  negative weight would ascend that task's loss).
- A task with no known label in the training half gets a zero gradient
  (and so no meta-gradient); one with none in the meta-batch adds nothing
  to the meta-loss. The weighted loss leaves absent tasks out. A
  non-finite meta-gradient leaves the weights and Adam's state alone.
- Under `tf.distribute` each replica splits its own share of the global
  batch in two; the per-task gradients and the meta-batch's gradient are
  those of the global halves (all-reduced: `T + 1` gradients of the model's
  size per step), so every replica computes the same weights. The halves
  then differ from a single device's (the union of the replicas' first
  halves, not the global batch's first half).

The meta-step costs one backward pass per task on the first half of the
batch and one forward and backward pass on the second half, on top of the
ordinary step: about `1 + (T + 2) / 2` times an equal-weighting step's
work. BatchNormalization statistics and other non-trainable state are not
changed by it (the virtual step runs with `Model.stateless_call`).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from kerasmtl.distribution import all_reduce_sum, global_means, replicas_in_sync
from kerasmtl.weighting.arguments import check_float
from kerasmtl.weighting.base import LossWeighting

# Adam's constants as in torch.optim.Adam, which the official code steps
# the weights with.
BETA_1, BETA_2, ADAM_EPSILON = 0.9, 0.999, 1e-8


@keras.saving.register_keras_serializable(package="kerasmtl")
class AutoLambda(LossWeighting):
    """Auto-Lambda task weights (Liu, Johns and Davison, TMLR 2022).

    Formula (`B1`, `B2` the two halves of the batch, `alpha` the model
    optimiser's learning rate, `P` the primary tasks):
    ```
    L = sum_t lambda_t L_t                          (the training loss)
    g_t = grad_theta L_t(theta; B1)
    theta' = theta - alpha * sum_t lambda_t g_t     (virtual step)
    d = grad_theta' sum_{p in P} L_p(theta'; B2)
    dL/dlambda_t = -alpha * <g_t, d>
    lambda <- max(0, lambda - learning_rate * Adam(dL/dlambda))
    ```

    The meta-step runs in `MultiTaskModel`'s train step, before the ordinary
    one (`meta_step`); outside it the layer is a static weighting by
    `lambda`.

    Args:
        weight_init: float >= 0. Every task's initial weight. Defaults to
            `0.1` (the official code's `autol_init`).
        learning_rate: float > 0. Adam's step size for the weights.
            Defaults to `1e-4` (the official `autol_lr`).
        primary_tasks: list of task names, or None. The tasks whose loss the
            weights are tuned for; the others are auxiliary. Defaults to
            `None`: every task (multi-task learning).

    Examples:

    >>> w = AutoLambda(weight_init=0.5)
    >>> float(w({"a": 1.0, "b": 3.0}))
    2.0
    >>> w.current_weights()
    {'a': 0.5, 'b': 0.5}
    """

    def __init__(
        self,
        weight_init: float = 0.1,
        learning_rate: float = 1e-4,
        primary_tasks=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.weight_init = check_float("weight_init", weight_init, minimum=0)
        self.learning_rate = check_float(
            "learning_rate", learning_rate, minimum=0, include_minimum=False
        )
        if primary_tasks is not None:
            if isinstance(primary_tasks, str) or not all(
                isinstance(n, str) for n in primary_tasks
            ) or not primary_tasks:
                raise ValueError(
                    "Invalid value for argument `primary_tasks`. Expected None or a "
                    f"non-empty list of task names. Received: primary_tasks={primary_tasks!r}"
                )
            primary_tasks = list(primary_tasks)
        self.primary_tasks = primary_tasks

    def build(self, losses_shape):
        if self.primary_tasks is not None and isinstance(losses_shape, dict):
            unknown = sorted(set(self.primary_tasks) - set(losses_shape))
            if unknown:
                raise ValueError(
                    f"AutoLambda's primary_tasks name {unknown}, which are not tasks "
                    f"of the model (its tasks are {list(losses_shape)})."
                )
        super().build(losses_shape)

    def build_state(self, num_tasks):
        def state(name, init="zeros", shape=(num_tasks,)):
            return self.add_weight(
                shape=shape, initializer=init, trainable=False, name=name,
                aggregation="only_first_replica",
            )

        self.lambdas = state("lambdas", keras.initializers.Constant(self.weight_init))
        self.adam_m = state("adam_m")
        self.adam_v = state("adam_v")
        self.updates = state("updates", shape=())

    def combine(self, losses, present, training=False):
        losses = tf.convert_to_tensor(losses)
        weights = tf.where(tf.convert_to_tensor(present) > 0,
                           tf.convert_to_tensor(self.lambdas), 0.0)
        return tf.reduce_sum(weights * losses), weights

    def primary_mask(self) -> tf.Tensor:
        """`[T]` floats: 1.0 for a primary task."""
        primary = self.primary_tasks or self.task_names
        return tf.constant([float(n in primary) for n in self.task_names])

    def meta_step(self, model, x, y, sample_weight=None) -> None:
        """Updates the weights from one batch (see the class doc). Called by
        `MultiTaskModel`'s train step inside its `tf.function`."""
        self._adam_update(self.meta_gradient(model, x, y, sample_weight))

    def meta_gradient(self, model, x, y, sample_weight=None) -> tf.Tensor:
        """`[T]`: the derivative of the primary tasks' meta-batch loss after
        the virtual step w.r.t. the weights, from one batch of `model`."""
        (x1, y1, w1), (x2, y2, w2) = _halves((x, y, sample_weight))
        variables = model.trainable_variables
        values = [tf.convert_to_tensor(v) for v in variables]
        others = [tf.convert_to_tensor(v) for v in model.non_trainable_variables]
        optimizer = model.optimizer
        scale = tf.cast(optimizer.scale_loss(tf.constant(1.0)), tf.float32)
        alpha = tf.cast(optimizer.learning_rate, tf.float32)

        with tf.GradientTape(persistent=True) as tape:
            tape.watch(values)
            losses, present = _task_losses(model, values, others, x1, y1, w1)
            scaled = [losses[t] * scale for t in range(len(self.task_names))]
        per_task = [_global(tape.gradient(s, values), values, scale) for s in scaled]
        del tape
        weights = tf.where(present > 0, tf.convert_to_tensor(self.lambdas), 0.0)
        stepped = [
            v - alpha * tf.cast(tf.add_n([weights[t] * per_task[t][i]
                                          for t in range(len(per_task))]), v.dtype)
            for i, v in enumerate(values)
        ]
        with tf.GradientTape() as tape:
            tape.watch(stepped)
            meta_losses, _ = _task_losses(model, stepped, others, x2, y2, w2)
            meta_loss = tf.reduce_sum(meta_losses * self.primary_mask()) * scale
        d = _global(tape.gradient(meta_loss, stepped), stepped, scale)
        return -alpha * tf.stack([
            tf.add_n([tf.reduce_sum(tf.cast(g * e, tf.float32))
                      for g, e in zip(grads, d)])
            for grads in per_task
        ])

    def _adam_update(self, grad) -> None:
        finite = tf.reduce_all(tf.math.is_finite(grad))
        grad = tf.where(finite, grad, 0.0)
        step = tf.convert_to_tensor(self.updates) + 1.0
        m = BETA_1 * tf.convert_to_tensor(self.adam_m) + (1.0 - BETA_1) * grad
        v = BETA_2 * tf.convert_to_tensor(self.adam_v) + (1.0 - BETA_2) * grad**2
        direction = (m / (1.0 - tf.pow(BETA_1, step))) / (
            tf.sqrt(v / (1.0 - tf.pow(BETA_2, step))) + ADAM_EPSILON
        )
        lambdas = tf.convert_to_tensor(self.lambdas)
        new = tf.maximum(lambdas - self.learning_rate * direction, 0.0)

        def pick(new_value, old):
            return tf.where(finite, new_value, tf.convert_to_tensor(old))

        self.lambdas.assign(pick(new, self.lambdas))
        self.adam_m.assign(pick(m, self.adam_m))
        self.adam_v.assign(pick(v, self.adam_v))
        self.updates.assign(pick(step, self.updates))

    def get_config(self):
        return {
            **super().get_config(),
            "weight_init": self.weight_init,
            "learning_rate": self.learning_rate,
            "primary_tasks": self.primary_tasks,
        }


def _halves(data):
    """`data` (nested, batch first) split into its first and second half;
    a batch of one row is both halves."""
    leaves = [t for t in tf.nest.flatten(data) if t is not None]
    size = tf.shape(leaves[0])[0]
    half = tf.maximum(size // 2, 1)
    start = tf.minimum(half, size - 1)

    def cut(begin, end):
        return tf.nest.map_structure(
            lambda t: None if t is None else t[begin:end], data
        )

    return cut(0, half), cut(start, size)


def _task_losses(model, values, others, x, y, sample_weight):
    """`[T]` losses (times `loss_weight`) and presence of `model` with its
    trainable variables at `values`, without changing any variable."""
    y_pred, _ = model.stateless_call(values, others, x, training=True)
    means, counts = model._task_means(y, y_pred, sample_weight)
    replicas = replicas_in_sync()
    if replicas > 1:  # the global half's losses; each replica's share of gradient
        means, counts = global_means(means, counts, replicas)
    losses = tf.stack([means[t.name] * t.loss_weight for t in model.tasks])
    present = tf.stack([tf.cast(counts[t.name] > 0, tf.float32) for t in model.tasks])
    return losses, present


def _global(grads, like, scale):
    """Dense, unscaled gradients; under `tf.distribute` the global batch's
    (the sum of the replicas' shares over the number of replicas)."""
    grads = [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g) / scale
             for g, v in zip(grads, like)]
    replicas = replicas_in_sync()
    if replicas == 1:
        return grads
    return [g / replicas for g in all_reduce_sum(grads)]
