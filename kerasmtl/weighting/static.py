"""Fixed weights: `Equal` (every task 1.0) and `Static` (user-given)."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from kerasmtl.weighting.base import LossWeighting


@keras.saving.register_keras_serializable(package="kerasmtl")
class Equal(LossWeighting):
    """Equal weighting: the plain sum of the task losses.

    Formula:
    ```
    L = sum_t L_t
    ```

    Examples:

    >>> w = Equal()
    >>> float(w({"a": 1.0, "b": 2.5}))
    3.5
    """

    def combine(self, losses, present, training=False):
        return ops.sum(losses), ops.ones_like(losses)


@keras.saving.register_keras_serializable(package="kerasmtl")
class Static(LossWeighting):
    """Static weighting with fixed, user-given weights.

    Formula:
    ```
    L = sum_t w_t * L_t
    ```

    Args:
        weights: dict mapping every task name to a float >= 0.

    Examples:

    >>> w = Static({"a": 1.0, "b": 0.5})
    >>> float(w({"a": 1.0, "b": 2.0}))
    2.0
    """

    def __init__(self, weights: dict[str, float], **kwargs):
        super().__init__(**kwargs)
        if not isinstance(weights, dict) or not weights:
            raise ValueError(
                "Invalid value for argument `weights`. Expected a dict mapping each "
                f"task name to a float. Received: weights={weights!r}"
            )
        for name, value in weights.items():
            if not isinstance(value, (int, float, np.floating)) or value < 0:
                raise ValueError(
                    f"Invalid weight for task '{name}'. Expected a float >= 0. "
                    f"Received: {value!r}"
                )
        self.weights_by_task = {k: float(v) for k, v in weights.items()}

    def build(self, losses_shape):
        names = list(losses_shape)
        if set(names) != set(self.weights_by_task):
            raise ValueError(
                f"Static weights name tasks {sorted(self.weights_by_task)} but the "
                f"model's tasks are {sorted(names)}. Give one weight per task."
            )
        super().build(losses_shape)

    def combine(self, losses, present, training=False):
        weights = ops.convert_to_tensor(
            [self.weights_by_task[n] for n in self.task_names], dtype="float32"
        )
        return ops.sum(weights * losses), weights

    def get_config(self):
        return {**super().get_config(), "weights": dict(self.weights_by_task)}
