"""FAMO: fast adaptive multitask optimisation.

Liu, Liu, Jin, Stone and Liu, "FAMO: Fast Adaptive Multitask Optimization",
NeurIPS 2023 (Algorithm 1). A loss weighting with O(1) extra cost: task
logits `xi` give weights that make every task's log-loss fall at the same
rate, and `xi` learns from how much each log-loss actually fell between two
steps. Follows the official code (and LibMTL's port) in the weighted loss
(`z_t / L_t` normalised, min losses 0, epsilon 1e-8) and in stepping the
logits with Adam with L2 decay (`optimizer="adam"`); `optimizer="sgd"` is
the paper's Algorithm 1 as printed. As in LibMTL (no extra forward pass),
the change in log-loss is taken between consecutive training batches: the
logits step at the start of each training call, before the weights are
formed. Departures: the total returned is `sum_t stop_gradient(w_t) L_t`,
which has the official log-loss objective's gradient but reads as a loss;
a task with no known label in the current or the previous batch gets no
weight now and a zero change in log-loss; a step with a non-finite loss
(skipped by the model) leaves the state alone. Under `tf.distribute` the
state follows the first replica's losses.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from kerasmtl.weighting.arguments import check_choice, check_float
from kerasmtl.weighting.base import LossWeighting

OPTIMIZERS = ("adam", "sgd")
# Adam's constants as in torch.optim.Adam, which the official code uses.
BETA_1, BETA_2, ADAM_EPSILON = 0.9, 0.999, 1e-8


@keras.saving.register_keras_serializable(package="kerasmtl")
class FAMO(LossWeighting):
    """Fast adaptive multitask optimisation (Liu et al., NeurIPS 2023).

    Formula:
    ```
    z = softmax(xi);   w_t = (z_t / L_t) / sum_s (z_s / L_s)
    L = sum_t stop_gradient(w_t) L_t      (gradient of sum_t z_t log L_t / c)
    delta_t = log L_t(previous batch) - log L_t(this batch)
    xi <- xi - learning_rate * step(J_z^T delta + decay * xi)
    ```
    with `J_z = diag(z) - z z^T` the Jacobian of the softmax and `step` Adam
    (`optimizer="adam"`) or the identity (`"sgd"`). The weights sum to 1, as
    in the official code: at equal losses and logits each is `1 / T`.

    Args:
        learning_rate: float > 0. Step size of the logits. Defaults to
            `0.025` (the paper's value).
        decay: float >= 0. L2 decay of the logits (the paper's gamma).
            Defaults to `1e-3` (LibMTL's default).
        optimizer: str. "adam" (official code) or "sgd" (Algorithm 1).
            Defaults to `"adam"`.
        epsilon: float > 0. Added to the losses before the log and division.
            Defaults to `1e-8`.

    Examples:

    >>> w = FAMO()
    >>> round(float(w({"a": 1.0, "b": 3.0})), 4)
    1.5
    >>> {k: round(v, 4) for k, v in w.current_weights().items()}
    {'a': 0.75, 'b': 0.25}
    """

    def __init__(
        self,
        learning_rate: float = 0.025,
        decay: float = 1e-3,
        optimizer: str = "adam",
        epsilon: float = 1e-8,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.learning_rate = check_float(
            "learning_rate", learning_rate, minimum=0, include_minimum=False
        )
        self.decay = check_float("decay", decay, minimum=0)
        self.optimizer = check_choice("optimizer", optimizer, OPTIMIZERS)
        self.epsilon = check_float("epsilon", epsilon, minimum=0, include_minimum=False)

    def build_state(self, num_tasks):
        def state(name, shape=(num_tasks,)):
            # Replicas would disagree slightly (each sees its own loss
            # estimate); one copy decides, as for the balancers' state.
            return self.add_weight(
                shape=shape,
                initializer="zeros",
                trainable=False,
                name=name,
                aggregation="only_first_replica",
            )

        self.logits = state("logits")
        self.previous_losses = state("previous_losses")
        self.previous_present = state("previous_present")
        self.adam_m = state("adam_m")
        self.adam_v = state("adam_v")
        self.updates = state("updates", shape=())

    def combine(self, losses, present, training=False):
        losses = tf.convert_to_tensor(losses)
        present = tf.convert_to_tensor(present) > 0
        if training:
            self._step_logits(losses, present)
        z = tf.nn.softmax(tf.convert_to_tensor(self.logits))
        ratio = tf.where(present, z / (losses + self.epsilon), 0.0)
        weights = tf.math.divide_no_nan(ratio, tf.reduce_sum(ratio))
        weights = tf.stop_gradient(weights)
        return tf.reduce_sum(weights * losses), weights

    def _step_logits(self, losses, present):
        finite = tf.reduce_all(tf.math.is_finite(losses))
        previous = tf.convert_to_tensor(self.previous_losses)
        known = present & (tf.convert_to_tensor(self.previous_present) > 0)
        delta = tf.where(
            known,
            tf.math.log(previous + self.epsilon) - tf.math.log(losses + self.epsilon),
            0.0,
        )
        logits = tf.convert_to_tensor(self.logits)
        z = tf.nn.softmax(logits)
        # J_z^T delta, J_z = diag(z) - z z^T (symmetric).
        grad = z * (delta - tf.reduce_sum(z * delta)) + self.decay * logits
        step = tf.convert_to_tensor(self.updates) + 1.0
        if self.optimizer == "adam":
            m = BETA_1 * tf.convert_to_tensor(self.adam_m) + (1.0 - BETA_1) * grad
            v = BETA_2 * tf.convert_to_tensor(self.adam_v) + (1.0 - BETA_2) * grad**2
            m_hat = m / (1.0 - tf.pow(BETA_1, step))
            v_hat = v / (1.0 - tf.pow(BETA_2, step))
            direction = m_hat / (tf.sqrt(v_hat) + ADAM_EPSILON)
        else:
            m, v, direction = self.adam_m, self.adam_v, grad
        # The first batch (or one after a task went missing) has no change to
        # learn from; a non-finite one is skipped by the model.
        learn = finite & tf.reduce_any(known)
        keep = finite

        def pick(condition, new, old):
            return tf.where(condition, new, tf.convert_to_tensor(old))

        self.logits.assign(pick(learn, logits - self.learning_rate * direction, logits))
        self.adam_m.assign(pick(learn, m, self.adam_m))
        self.adam_v.assign(pick(learn, v, self.adam_v))
        self.updates.assign(pick(learn, step, self.updates))
        self.previous_losses.assign(pick(keep, losses, previous))
        self.previous_present.assign(
            pick(keep, tf.cast(present, "float32"), self.previous_present)
        )

    def get_config(self):
        return {
            **super().get_config(),
            "learning_rate": self.learning_rate,
            "decay": self.decay,
            "optimizer": self.optimizer,
            "epsilon": self.epsilon,
        }
