"""`TransformerEncoderBlock`: one post-norm Transformer encoder layer that
respects padding masks."""

from __future__ import annotations

import keras

from kerasmtl.layers.multilabel_heads import _check_positive_int


@keras.saving.register_keras_serializable(package="kerasmtl")
class TransformerEncoderBlock(keras.layers.Layer):
    """Self-attention and feed-forward with residuals and layer norms
    (Vaswani et al., NeurIPS 2017, post-norm).

    Padding (the input's Keras mask) is excluded from attention as keys and
    queries, and the mask passes through to the next layer. A plain
    functional `Add()([x, MultiHeadAttention()(x, x)])` loses the mask:
    Keras' attention layer does not return it.

    Args:
        num_heads: int. Attention heads; the input width must be divisible
            by it.
        ff_dim: int. Width of the feed-forward layer.
        dropout: float. Dropout on attention weights and the feed-forward
            output. Defaults to `0.0`.

    Examples:

    >>> import numpy as np
    >>> block = TransformerEncoderBlock(num_heads=2, ff_dim=8)
    >>> tuple(block(np.zeros((1, 3, 4), "float32")).shape)
    (1, 3, 4)
    """

    def __init__(self, num_heads: int, ff_dim: int, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        for arg, value in (("num_heads", num_heads), ("ff_dim", ff_dim)):
            _check_positive_int(self.name, arg, value)
        self.num_heads = int(num_heads)
        self.ff_dim = int(ff_dim)
        self.dropout = dropout
        self.supports_masking = True

    def build(self, input_shape):
        width = input_shape[-1]
        if width % self.num_heads:
            raise ValueError(
                f"TransformerEncoderBlock '{self.name}': input width {width} is not "
                f"divisible by num_heads={self.num_heads}. Use a num_heads that "
                "divides the width, or project the input to such a width (Dense) first."
            )
        # The sub-layers share the block's dtype policy: with
        # `dtype="mixed_float16"` on the block alone, float32 sub-layers would
        # add float32 to the float16 residual.
        policy = self.dtype_policy
        self.attention = keras.layers.MultiHeadAttention(
            self.num_heads, width // self.num_heads, dropout=self.dropout,
            name="attention", dtype=policy)
        self.attention.build(input_shape, input_shape)
        self.norm_1 = keras.layers.LayerNormalization(name="norm_1", dtype=policy)
        self.norm_1.build(input_shape)
        self.ff_1 = keras.layers.Dense(self.ff_dim, activation="gelu", name="ff_1",
                                       dtype=policy)
        self.ff_1.build(input_shape)
        self.ff_2 = keras.layers.Dense(width, name="ff_2", dtype=policy)
        self.ff_2.build((*input_shape[:-1], self.ff_dim))
        self.ff_dropout = keras.layers.Dropout(self.dropout, dtype=policy)
        self.norm_2 = keras.layers.LayerNormalization(name="norm_2", dtype=policy)
        self.norm_2.build(input_shape)

    def call(self, inputs, mask=None, training=None):
        attended = self.attention(inputs, inputs, query_mask=mask, value_mask=mask,
                                  training=training)
        x = self.norm_1(inputs + attended)
        hidden = self.ff_dropout(self.ff_2(self.ff_1(x)), training=training)
        return self.norm_2(x + hidden)

    def compute_mask(self, inputs, mask=None):
        return mask

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads,
                "ff_dim": self.ff_dim, "dropout": self.dropout}
