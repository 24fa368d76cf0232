"""`CrossStitch`: learned linear mixing of the activations of task towers.

Misra, Shrivastava, Gupta and Hebert, "Cross-stitch Networks for Multi-task
Learning", CVPR 2016. Each task's activation after the unit is a linear
combination of all towers' activations at that depth:

```
x'_t = sum_s alpha[t, s] * x_s
```

The paper initialises `alpha` with `alpha_S` on the diagonal (a tower's own
activations) and `alpha_D` off it, with `alpha_S + alpha_D = 1` for two tasks;
we generalise to `alpha_D = (1 - alpha_S) / (T - 1)` so that every row sums to
one. `alpha_S = 1` makes the unit the identity: independent towers.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="kerasmtl")
class CrossStitch(keras.layers.Layer):
    """Cross-stitch unit: mixes the same-depth activations of `T` towers.

    Called on a list of `T >= 2` tensors of one shape `(batch, ..., channels)`;
    returns a list of `T` tensors of that shape.

    Two granularities (the paper's Section 3 discusses both): one `T x T`
    matrix `alpha` for the whole layer (`per_channel=False`, as in the paper's
    experiments), or one matrix per channel, `alpha` of shape
    `(T, T, channels)` (`per_channel=True`).

    Args:
        self_weight: float in [0, 1]. Initial `alpha_S`, the weight of a
            tower's own activations; the rest, `1 - alpha_S`, is split evenly
            over the other towers. The paper's best initialisation was
            `(alpha_S, alpha_D) = (0.9, 0.1)`. Defaults to `0.9`.
        per_channel: bool. One mixing matrix per channel instead of one for the
            whole layer. Defaults to `False`.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Examples:

    >>> unit = CrossStitch(self_weight=0.75)
    >>> a, b = unit([ops.ones((1, 2)), ops.zeros((1, 2))])
    >>> a.numpy().tolist(), b.numpy().tolist()
    ([[0.75, 0.75]], [[0.25, 0.25]])
    """

    def __init__(self, self_weight: float = 0.9, per_channel: bool = False, **kwargs):
        super().__init__(**kwargs)
        if isinstance(self_weight, bool) or not isinstance(self_weight, (int, float)) or (
            not 0.0 <= self_weight <= 1.0
        ):
            raise ValueError(
                f"Invalid value for argument `self_weight` of layer '{self.name}'. "
                f"Expected a float in [0, 1]. Received: self_weight={self_weight!r}"
            )
        self.self_weight = float(self_weight)
        self.per_channel = bool(per_channel)

    def build(self, input_shape):
        shapes = [tuple(s) for s in input_shape] if isinstance(input_shape, list) else []
        if len(shapes) < 2 or not all(isinstance(s, tuple) for s in shapes):
            raise ValueError(
                f"Cross-stitch unit '{self.name}' is called on a list of at least two "
                f"tower activations. Received input shape {input_shape}."
            )
        for i, shape in enumerate(shapes[1:], start=1):
            if len(shape) != len(shapes[0]) or any(
                a is not None and b is not None and a != b
                for a, b in zip(shape[1:], shapes[0][1:])
            ):
                raise ValueError(
                    f"Cross-stitch unit '{self.name}' mixes activations of one shape; "
                    f"tower 0 gives {shapes[0]}, tower {i} gives {shape}. Stitch only "
                    "after layers whose outputs have the same shape in every tower."
                )
        num_towers = len(shapes)
        channels = shapes[0][-1]
        if self.per_channel and channels is None:
            raise ValueError(
                f"Cross-stitch unit '{self.name}' with per_channel=True needs a known "
                f"channel axis. Received shape {shapes[0]}."
            )
        other = (1.0 - self.self_weight) / (num_towers - 1)
        init = np.full((num_towers, num_towers), other, "float32")
        np.fill_diagonal(init, self.self_weight)
        if self.per_channel:
            init = np.repeat(init[:, :, None], channels, axis=2)
        self.alpha = self.add_weight(
            name="alpha",
            shape=init.shape,
            initializer=lambda shape, dtype=None: ops.cast(init, dtype or "float32"),
        )

    def call(self, inputs):
        alpha = ops.cast(self.alpha, inputs[0].dtype)
        outputs = []
        for t in range(len(inputs)):
            mixed = 0.0
            for s, x in enumerate(inputs):
                mixed = mixed + alpha[t, s] * x
            outputs.append(mixed)
        return outputs

    def compute_output_shape(self, input_shape):
        return [tuple(s) for s in input_shape]

    def get_config(self):
        return {
            **super().get_config(),
            "self_weight": self.self_weight,
            "per_channel": self.per_channel,
        }
