"""Dynamic Weight Average (DWA).

Liu, Johns and Davison, "End-to-End Multi-Task Learning with Attention", CVPR
2019 (Eq. 7). Follows the official code: weights are recomputed once per epoch
from the ratio of each task's mean training loss in the last two epochs.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from kerasmtl.weighting.arguments import check_float
from kerasmtl.weighting.base import LossWeighting


@keras.saving.register_keras_serializable(package="kerasmtl")
class DynamicWeightAverage(LossWeighting):
    """Dynamic Weight Average (Liu et al., CVPR 2019).

    Formula:
    ```
    r_t(k-1) = L_t(k-1) / L_t(k-2)
    w_t(k)   = T * exp(r_t(k-1) / temperature) / sum_i exp(r_i(k-1) / temperature)
    L        = sum_t w_t(k) * L_t
    ```
    with `L_t(k)` the mean training loss of task t in epoch k; `w_t = 1` for
    the first two epochs. A task with no labels in an epoch, or a non-finite
    mean loss, keeps ratio 1.

    Args:
        temperature: float > 0. Softness of the weights. Defaults to `2.0`
            (the paper's value).

    Examples:

    >>> w = DynamicWeightAverage()
    >>> float(w({"a": 1.0, "b": 2.0}))
    3.0
    """

    def __init__(self, temperature: float = 2.0, **kwargs):
        super().__init__(**kwargs)
        self.temperature = check_float(
            "temperature", temperature, minimum=0, include_minimum=False
        )

    def build_state(self, num_tasks):
        def state(name, init="zeros", shape=(num_tasks,)):
            return self.add_weight(
                shape=shape, initializer=init, trainable=False, name=name
            )

        self.epoch_weights = state("epoch_weights", "ones")
        self.last_losses = state("last_losses")
        self.previous_losses = state("previous_losses")
        self.epochs_seen = state("epochs_seen", shape=())

    def combine(self, losses, present, training=False):
        weights = ops.cast(self.epoch_weights, "float32")
        return ops.sum(weights * losses), weights

    def on_epoch_end(self, epoch_losses):
        current = np.array(
            [float(epoch_losses.get(n, 0.0) or 0.0) for n in self.task_names]
        )
        last = keras.ops.convert_to_numpy(self.last_losses)
        self.previous_losses.assign(last)
        self.last_losses.assign(current)
        self.epochs_seen.assign(self.epochs_seen + 1.0)
        # float() refuses a MirroredVariable of a multi-worker strategy.
        if float(keras.ops.convert_to_numpy(self.epochs_seen)) >= 2:
            self.epoch_weights.assign(
                dwa_weights(current, last, self.temperature).astype("float32")
            )

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


def dwa_weights(last: np.ndarray, previous: np.ndarray, temperature: float) -> np.ndarray:
    """DWA weights from two epochs' mean losses (ratio 1 where undefined)."""
    last, previous = np.asarray(last, float), np.asarray(previous, float)
    # A non-finite epoch mean (an epoch with skipped non-finite steps) would
    # turn every weight into NaN for good.
    defined = (previous > 0) & (last > 0) & np.isfinite(previous) & np.isfinite(last)
    ratio = np.where(defined, last / np.where(defined, previous, 1.0), 1.0)
    z = np.exp((ratio - ratio.max()) / temperature)
    return len(ratio) * z / z.sum()
