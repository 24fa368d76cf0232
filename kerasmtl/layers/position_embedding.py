"""`PositionEmbedding`: learned absolute positions added to a sequence."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kerasmtl")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned embedding of each position to `[batch, time, dim]` inputs.

    Self-attention is blind to order; this gives each position its own
    trainable vector (as BERT). The input's Keras mask passes through.

    Args:
        max_length: int. Longest sequence supported. A longer input fails at
            call time; split long sentences beforehand.

    Examples:

    >>> layer = PositionEmbedding(8)
    >>> tuple(layer(ops.zeros((2, 5, 4))).shape)
    (2, 5, 4)
    """

    def __init__(self, max_length: int, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(max_length, int) or max_length < 1:
            raise ValueError(
                "Invalid value for argument `max_length` of PositionEmbedding. "
                f"Expected an int >= 1. Received: max_length={max_length!r}"
            )
        self.max_length = max_length
        self.supports_masking = True

    def build(self, input_shape):
        self.positions = self.add_weight(
            name="positions",
            shape=(self.max_length, input_shape[-1]),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )

    def call(self, inputs):
        length = ops.shape(inputs)[1]
        return inputs + ops.cast(ops.expand_dims(self.positions[:length], 0), inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "max_length": self.max_length}
