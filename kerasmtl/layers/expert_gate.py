"""`ExpertGate`: a softmax gate that mixes the outputs of several experts.

The gate of a mixture of experts (Shazeer et al. 2017; per task in MMoE, Ma et
al. KDD 2018, and in CGC/PLE, Tang et al. RecSys 2020): a linear map of the gate
input followed by a softmax over experts gives one weight per expert, and the
output is the weighted sum of the experts' outputs. The layer returns the
weights too, so a model keeps them as an inspectable tensor
(`kerasmtl.sharing.gate_weights`).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kerasmtl")
class ExpertGate(keras.layers.Layer):
    """Softmax gate over experts; returns `(mixture, gate_weights)`.

    Called on a list `[gate_input, expert_1, ..., expert_E]`. All expert
    outputs have one shape `(batch, *positions, units)`. The gate input has
    shape `(batch, *gate_positions, features)`:

    - when `gate_positions` equals the experts' `positions` (e.g. both are the
      tokens of a sentence), the gate is computed per position: weights
      `(batch, *positions, E)`;
    - otherwise the gate input is averaged over its positions first and the
      gate is per example: weights `(batch, E)`.

    Formula:
    ```
    g = softmax(x W + b)            # over the E experts
    y = sum_e g_e * expert_e
    ```

    Args:
        num_experts: int >= 1. Number of experts mixed.
        expert_names: sequence of str or None. Names of the mixed experts, in
            the order of the gate's weights (read by inspection tools).
            Defaults to `None`.
        kernel_initializer: initializer of the gate's kernel. Defaults to
            `"glorot_uniform"`.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Examples:

    >>> gate = ExpertGate(num_experts=2, kernel_initializer="zeros")
    >>> x = ops.ones((1, 3))
    >>> e1, e2 = ops.zeros((1, 4)), ops.ones((1, 4))
    >>> mixture, weights = gate([x, e1, e2])
    >>> weights.numpy().tolist(), mixture.numpy().tolist()
    ([[0.5, 0.5]], [[0.5, 0.5, 0.5, 0.5]])
    """

    def __init__(
        self,
        num_experts: int,
        expert_names: Sequence[str] | None = None,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(num_experts, bool) or not isinstance(num_experts, int) or (
            num_experts < 1
        ):
            raise ValueError(
                f"Invalid value for argument `num_experts` of layer '{self.name}'. "
                f"Expected an int >= 1. Received: num_experts={num_experts!r}"
            )
        if expert_names is not None and len(expert_names) != num_experts:
            raise ValueError(
                f"Layer '{self.name}' has num_experts={num_experts} but "
                f"{len(expert_names)} expert_names. Give one name per expert."
            )
        self.num_experts = num_experts
        self.expert_names = None if expert_names is None else list(expert_names)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.per_position = False

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) < 2:
            raise ValueError(
                f"Layer '{self.name}' is called on [gate_input, expert_1, ...]. "
                f"Received input shape {input_shape}."
            )
        gate_shape, *expert_shapes = (tuple(s) for s in input_shape)
        if len(expert_shapes) != self.num_experts:
            raise ValueError(
                f"Layer '{self.name}' has num_experts={self.num_experts} but was "
                f"called on {len(expert_shapes)} expert outputs."
            )
        first = expert_shapes[0]
        for i, shape in enumerate(expert_shapes[1:], start=1):
            if not _compatible(shape, first):
                raise ValueError(
                    f"The experts mixed by gate '{self.name}' have different output "
                    f"shapes: expert 0 gives {first}, expert {i} gives {shape}. "
                    "Every expert must output the same shape."
                )
        if gate_shape[-1] is None:
            raise ValueError(
                f"The input of gate '{self.name}' needs a known last axis. "
                f"Received shape {gate_shape}."
            )
        self.per_position = len(gate_shape) > 2 and _compatible(
            gate_shape[1:-1], first[1:-1]
        )
        self.kernel = self.add_weight(
            name="kernel",
            shape=(gate_shape[-1], self.num_experts),
            initializer=self.kernel_initializer,
        )
        self.bias = self.add_weight(
            name="bias", shape=(self.num_experts,), initializer="zeros"
        )

    def call(self, inputs):
        gate_input, *experts = inputs
        if not self.per_position and len(gate_input.shape) > 2:
            gate_input = ops.mean(gate_input, axis=tuple(range(1, len(gate_input.shape) - 1)))
        gate_input = ops.cast(gate_input, self.compute_dtype)
        weights = ops.softmax(ops.matmul(gate_input, self.kernel) + self.bias, axis=-1)
        stacked = ops.stack(experts, axis=-1)  # (batch, *positions, units, E)
        broadcast = weights
        while len(broadcast.shape) < len(stacked.shape):
            broadcast = ops.expand_dims(broadcast, -2)
        mixture = ops.sum(stacked * ops.cast(broadcast, stacked.dtype), axis=-1)
        return mixture, weights

    def get_config(self):
        return {
            **super().get_config(),
            "num_experts": self.num_experts,
            "expert_names": self.expert_names,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


def _compatible(a, b) -> bool:
    return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b))
