"""`LossWeighting`: the base of loss-level weighting layers.

A weighting layer maps a dict of per-task scalar losses to one scalar. It is
built once for the model's task names (in order), keeps its current per-task
weights in a non-trainable variable (reported by `MultiTaskModel` as
`weight/<task>`), and may learn (trainable variables, e.g. uncertainty) or keep
state across epochs (`on_epoch_end`, called by `MultiTaskModel.fit`).

`present` is 1.0 for a task with at least one known label in the batch and 0.0
otherwise; methods whose formula would reward an absent task (a log-variance
term, a log of a zero loss) leave it out.
"""

from __future__ import annotations

import keras
from keras import ops


class LossWeighting(keras.layers.Layer):
    """Base class: subclasses implement `combine(losses, present, training)`."""

    def __init__(self, **kwargs):
        # Loss arithmetic stays in float32 under a mixed-precision policy, as
        # Keras keeps losses and loss scaling in float32.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.task_names: list[str] = []

    def build(self, losses_shape):
        if not isinstance(losses_shape, dict) or not losses_shape:
            raise ValueError(
                f"{type(self).__name__} expects a dict of per-task losses keyed by "
                f"task name. Received: {losses_shape!r}"
            )
        self.task_names = list(losses_shape)
        self.task_weights = self.add_weight(
            shape=(len(self.task_names),),
            initializer="ones",
            trainable=False,
            name="task_weights",
        )
        self.build_state(len(self.task_names))
        self.built = True

    def build_state(self, num_tasks: int) -> None:
        """Creates the method's own variables."""

    def __call__(self, losses, present=None, training=None, **kwargs):
        # Plain numbers are welcome (doctests, callbacks); Keras layers take tensors.
        def as_tensors(values):
            if values is None:
                return None
            if not isinstance(values, dict):
                raise ValueError(
                    f"{type(self).__name__} expects a dict of per-task losses keyed "
                    f"by task name. Received: {type(values).__name__}"
                )
            return {k: ops.convert_to_tensor(v, "float32") for k, v in values.items()}

        return super().__call__(
            as_tensors(losses), as_tensors(present), training=training, **kwargs
        )

    def call(self, losses, present=None, training=False):
        missing = [n for n in self.task_names if n not in losses]
        if missing:
            raise ValueError(
                f"{type(self).__name__} was built for tasks {self.task_names} but "
                f"received no loss for {missing}."
            )
        stacked = ops.stack([ops.cast(losses[n], "float32") for n in self.task_names])
        if present is None:
            present_vec = ops.ones_like(stacked)
        else:
            present_vec = ops.stack(
                [ops.cast(present[n], "float32") for n in self.task_names]
            )
        total, weights = self.combine(stacked, present_vec, training=training)
        self.task_weights.assign(ops.stop_gradient(ops.cast(weights, "float32")))
        return total

    def combine(self, losses, present, training=False):
        """Returns `(total_loss, weights)` from `[T]` losses and presence."""
        raise NotImplementedError

    def compute_output_spec(self, losses, present=None, training=False):
        return keras.KerasTensor((), dtype="float32")

    def current_weights(self) -> dict[str, float]:
        values = keras.ops.convert_to_numpy(self.task_weights)
        return {n: float(v) for n, v in zip(self.task_names, values)}

    def on_epoch_end(self, epoch_losses: dict[str, float]) -> None:
        """Called with the epoch's mean per-task training losses."""
