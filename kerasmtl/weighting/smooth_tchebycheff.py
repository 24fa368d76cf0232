"""STCH: smooth Tchebycheff scalarisation of the task losses.

Lin, Zhang, Yang, Liu, Wang and Zhang, "Smooth Tchebycheff Scalarization for
Multi-Objective Optimization", ICML 2024. The Tchebycheff scalarisation
`max_t lambda_t (f_t - z_t)` (optimise the worst task relative to an ideal
point `z`) made smooth by a log-sum-exp of temperature `mu`:
`mu log sum_t exp(lambda_t (f_t - z_t) / mu)`, which tends to the max as
`mu -> 0`. In the paper's multi-task version (its official STCH_MTL code,
which LibMTL ports) the objectives are the log-losses normalised by a nadir
point, `f_t = log(L_t / nadir_t)`, with `z = 0` and `lambda_t = 1`: the
nadir is the mean training loss over one epoch (the last warm-up epoch),
and the warm-up epochs train on the sum of log-losses (`ScaleInvariant`).

Follows LibMTL (`STCH_mu=1`, `STCH_warmup_epoch=4`, the total times `T`,
`1e-20` inside the log). Departures: the total is the exact
`T mu logsumexp(f / mu)` (LibMTL subtracts the detached max of `f`, a
constant: same gradient); a task with no known label in a batch is left out
of that batch's log-sum-exp, of the warm-up sum and of the nadir mean (a task
with no label in the whole averaging epoch keeps nadir 1); a non-finite
batch (skipped by the model) is not averaged. Epochs are counted by
`on_epoch_end` (`MultiTaskModel.fit` calls it), and the epoch, the sums and
the nadir are variables, so they are saved with the model.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from kerasmtl.weighting.arguments import check_float, check_int
from kerasmtl.weighting.base import LossWeighting


@keras.saving.register_keras_serializable(package="kerasmtl")
class STCH(LossWeighting):
    """Smooth Tchebycheff scalarisation (Lin et al., ICML 2024).

    Formula:
    ```
    epoch <= warmup_epochs:  L = sum_t log(L_t + epsilon)
                             (in epoch == warmup_epochs, nadir_t = mean L_t)
    later:                   f_t = log(L_t / nadir_t + epsilon)
                             L = T * mu * log(sum_t exp(f_t / mu))
    ```
    `weight/<task>` reports `dL/dL_t`: `1 / L_t` during warm-up,
    `T softmax(f / mu)_t / L_t` after.

    Args:
        mu: float > 0. The smoothing temperature. Defaults to `1.0`
            (LibMTL's default).
        warmup_epochs: int >= 0. Epochs of log-loss training before the
            nadir is fixed; the nadir is the mean loss of epoch
            `warmup_epochs` (0-based), so STCH proper starts one epoch
            later. Defaults to `4` (LibMTL's default).
        epsilon: float > 0. Added inside the logs. Defaults to `1e-20`.

    Examples:

    >>> w = STCH(warmup_epochs=0)
    >>> round(float(w({"a": 1.0, "b": 4.0})), 4)  # warm-up: log 1 + log 4
    1.3863
    """

    def __init__(
        self,
        mu: float = 1.0,
        warmup_epochs: int = 4,
        epsilon: float = 1e-20,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.mu = check_float("mu", mu, minimum=0, include_minimum=False)
        self.warmup_epochs = check_int("warmup_epochs", warmup_epochs, minimum=0)
        self.epsilon = check_float("epsilon", epsilon, minimum=0, include_minimum=False)

    def build_state(self, num_tasks):
        def state(name, shape=(num_tasks,), init="zeros"):
            return self.add_weight(
                shape=shape,
                initializer=init,
                trainable=False,
                name=name,
                aggregation="only_first_replica",
            )

        self.epoch = state("epoch", shape=())
        self.loss_sums = state("loss_sums")
        self.loss_counts = state("loss_counts")

    def nadir(self):
        """The `[T]` nadir point: the mean losses of the averaging epoch."""
        counts = tf.convert_to_tensor(self.loss_counts)
        sums = tf.convert_to_tensor(self.loss_sums)
        # A task never seen (or with losses of exactly 0) keeps nadir 1.
        return tf.where((counts > 0) & (sums > 0), tf.math.divide_no_nan(sums, counts), 1.0)

    def combine(self, losses, present, training=False):
        losses = tf.convert_to_tensor(losses)
        known = tf.convert_to_tensor(present) > 0
        epoch = tf.convert_to_tensor(self.epoch)
        warming = epoch <= self.warmup_epochs
        if training:
            average = (
                tf.equal(epoch, float(self.warmup_epochs))
                & tf.reduce_all(tf.math.is_finite(losses))
            )
            take = tf.cast(known & average, "float32")
            self.loss_sums.assign_add(take * tf.stop_gradient(losses))
            self.loss_counts.assign_add(take)
        safe = tf.where(known, losses, 1.0)
        # Warm-up: the scale-invariant sum of log-losses.
        log_total = tf.reduce_sum(tf.where(known, tf.math.log(safe + self.epsilon), 0.0))
        log_weights = tf.where(known, 1.0 / (safe + self.epsilon), 0.0)
        # After: T mu logsumexp(f / mu) over the known tasks.
        nadir = self.nadir()
        scaled = tf.where(known, tf.math.log(safe / nadir + self.epsilon) / self.mu, -1e30)
        num_tasks = float(len(self.task_names))
        stch_total = num_tasks * self.mu * tf.reduce_logsumexp(scaled)
        soft = tf.where(known, tf.nn.softmax(scaled), 0.0)
        stch_weights = num_tasks * soft / (safe + self.epsilon * nadir)
        total = tf.where(warming, log_total, stch_total)
        weights = tf.where(warming, log_weights, stch_weights)
        # No task known: 0, not T mu (-1e30 / mu).
        total = tf.where(tf.reduce_any(known), total, 0.0)
        return total, weights

    def on_epoch_end(self, epoch_losses):
        self.epoch.assign_add(1.0)

    def get_config(self):
        return {
            **super().get_config(),
            "mu": self.mu,
            "warmup_epochs": self.warmup_epochs,
            "epsilon": self.epsilon,
        }
