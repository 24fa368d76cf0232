"""Layers of multi-label heads: the output layer that stores decision
thresholds, and a label-attention head that lets labels interact.

- `MultiLabelOutput`: logits -> per-label probabilities (sigmoid, float32). It
  holds a non-trainable `thresholds` weight, one per label, so `.keras` files
  and exported SavedModels carry the (calibrated) decision thresholds.
- `LabelAttentionHead`: features -> one logit per label, through a learned
  query per label that attends over the features (ML-Decoder / Query2Label
  style).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="kerasmtl")
class MultiLabelOutput(keras.layers.Layer):
    """Sigmoid output of a multi-label head, with stored decision thresholds.

    Takes logits `(batch, num_labels)` and returns probabilities (computed in
    float32, also under mixed precision). The weight `thresholds`
    `(num_labels,)` is non-trainable: `MultiLabel` tasks read it for their
    serving predictions and metrics, and `kerasmtl.calibration` writes it.

    Args:
        thresholds: float or sequence of floats in (0, 1). Initial decision
            threshold(s): one for every label, or one per label. Defaults to
            `0.5`.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Examples:

    >>> layer = MultiLabelOutput(thresholds=[0.3, 0.6])
    >>> probs = layer(np.zeros((1, 2), "float32"))
    >>> probs.numpy().tolist()
    [[0.5, 0.5]]
    >>> print(np.asarray(layer.thresholds))
    [0.3 0.6]
    """

    def __init__(self, thresholds: float | Sequence[float] = 0.5, **kwargs):
        super().__init__(**kwargs)
        values = np.asarray(thresholds, dtype="float64")
        if values.ndim > 1 or values.size == 0 or not np.all((values > 0) & (values < 1)):
            raise ValueError(
                f"Invalid value for argument `thresholds` of layer '{self.name}'. "
                "Expected a float in (0, 1) or a list of floats in (0, 1), one per "
                f"label. Received: thresholds={thresholds!r}"
            )
        self.initial_thresholds = (
            float(values) if values.ndim == 0 else [float(v) for v in values]
        )

    def build(self, input_shape):
        num_labels = input_shape[-1]
        if num_labels is None:
            raise ValueError(
                f"Layer '{self.name}' needs a known number of labels (the last "
                f"axis of its input). Received input shape {tuple(input_shape)}."
            )
        init = np.asarray(self.initial_thresholds, "float32")
        if init.ndim == 1 and init.shape[0] != num_labels:
            raise ValueError(
                f"Layer '{self.name}' has {init.shape[0]} thresholds but its input "
                f"has {num_labels} labels (shape {tuple(input_shape)}). Give one "
                "threshold, or one per label."
            )
        self.thresholds = self.add_weight(
            name="thresholds",
            shape=(num_labels,),
            initializer=keras.initializers.Constant(np.broadcast_to(init, (num_labels,))),
            trainable=False,
            dtype="float32",
        )

    def call(self, inputs):
        return ops.sigmoid(ops.cast(inputs, "float32"))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "thresholds": self.initial_thresholds}


@keras.saving.register_keras_serializable(package="kerasmtl")
class LabelAttentionHead(keras.layers.Layer):
    """Label-attention head: one learned query per label attends over features.

    A simplified one-layer decoder in the style of ML-Decoder (Ridnik et al.,
    "ML-Decoder: Scalable and Versatile Classification Head", WACV 2023) and
    Query2Label (Liu et al., "Query2Label: A Simple Transformer Way to
    Multi-Label Classification", arXiv 2021); it follows neither paper's code.
    Each label `l` has an embedding `e_l` (`embed_dim`). The features (a
    `(batch, N, D)` sequence or spatial map, or `(batch, D)` vectors read as
    one token) are projected to `embed_dim`; then, post-norm as in the
    Transformer:

    ```
    h = LayerNorm(e + CrossAttention(queries=e, keys=values=features))
    h = LayerNorm(h + SelfAttention(h))          # label-label interaction
    h = LayerNorm(h + FFN(h))
    logit_l = <h_l, w_l> + b_l                   # one linear map per label
    ```

    The per-label projection is ML-Decoder's "group fully connected" with one
    label per group. Unlike Query2Label, cross-attention comes before
    self-attention: on one token every query reads the same features, and
    self-attention afterwards is what lets labels condition on each other
    (on fixed query embeddings it would be the same for every example). With a
    sequence the self-attention is optional, as in ML-Decoder, which drops it.
    No positional encoding is added to the features. A Keras mask on a sequence
    input (e.g. from `Embedding(mask_zero=True)`) keeps the queries off padding.

    Args:
        num_labels: int >= 1. Number of labels (logits out).
        embed_dim: int. Size of the label embeddings and attention. Defaults to `64`.
        num_heads: int. Attention heads; must divide `embed_dim`. Defaults to `4`.
        ffn_dim: int or None. Hidden size of the feed-forward block. Defaults
            to `None` (`2 * embed_dim`).
        dropout: float in [0, 1). Dropout on the attention weights. Defaults to `0.0`.
        self_attention: bool or `"auto"`. Add label-label self-attention;
            `"auto"` adds it for vector inputs only. Defaults to `"auto"`.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Examples:

    >>> head = LabelAttentionHead(num_labels=3, embed_dim=8, num_heads=2)
    >>> tuple(head(np.zeros((2, 5), "float32")).shape)
    (2, 3)
    >>> head = LabelAttentionHead(num_labels=3, embed_dim=8, num_heads=2)
    >>> tuple(head(np.zeros((2, 7, 5), "float32")).shape)
    (2, 3)
    """

    def __init__(
        self,
        num_labels: int,
        embed_dim: int = 64,
        num_heads: int = 4,
        ffn_dim: int | None = None,
        dropout: float = 0.0,
        self_attention: bool | str = "auto",
        **kwargs,
    ):
        super().__init__(**kwargs)
        for arg, value in (("num_labels", num_labels), ("embed_dim", embed_dim),
                           ("num_heads", num_heads)):
            _check_positive_int(self.name, arg, value)
        if ffn_dim is not None:
            _check_positive_int(self.name, "ffn_dim", ffn_dim)
        if embed_dim % num_heads:
            raise ValueError(
                f"Invalid arguments of layer '{self.name}': `num_heads` must divide "
                f"`embed_dim`. Received: embed_dim={embed_dim}, num_heads={num_heads}"
            )
        if not (isinstance(dropout, (int, float)) and 0.0 <= dropout < 1.0):
            raise ValueError(
                f"Invalid value for argument `dropout` of layer '{self.name}'. "
                f"Expected a float in [0, 1). Received: dropout={dropout!r}"
            )
        if self_attention not in (True, False, "auto"):
            raise ValueError(
                f"Invalid value for argument `self_attention` of layer '{self.name}'. "
                f"Expected True, False or 'auto'. Received: self_attention={self_attention!r}"
            )
        self.num_labels = int(num_labels)
        self.embed_dim = int(embed_dim)
        self.num_heads = int(num_heads)
        self.ffn_dim = None if ffn_dim is None else int(ffn_dim)
        self.dropout = float(dropout)
        self.self_attention = self_attention

    def build(self, input_shape):
        if len(input_shape) not in (2, 3) or input_shape[-1] is None:
            raise ValueError(
                f"Layer '{self.name}' expects features of shape (batch, D) or "
                f"(batch, N, D) with D known. Received input shape "
                f"{tuple(input_shape)}. Flatten or pool other feature maps first."
            )
        self._vector_input = len(input_shape) == 2
        self._use_self_attention = (
            self._vector_input if self.self_attention == "auto" else self.self_attention
        )
        labels, dim = self.num_labels, self.embed_dim
        tokens = 1 if self._vector_input else input_shape[1]
        key_dim = dim // self.num_heads
        self.label_embeddings = self.add_weight(
            name="label_embeddings", shape=(labels, dim), initializer="glorot_uniform"
        )
        self.input_projection = keras.layers.Dense(dim, name="input_projection",
                                                   dtype=self.dtype_policy)
        self.input_projection.build(input_shape)
        self.cross_attention = keras.layers.MultiHeadAttention(
            self.num_heads, key_dim, dropout=self.dropout, name="cross_attention",
            dtype=self.dtype_policy,
        )
        self.cross_attention.build((None, labels, dim), (None, tokens, dim))
        self.cross_norm = keras.layers.LayerNormalization(name="cross_norm",
                                                          dtype=self.dtype_policy)
        self.cross_norm.build((None, labels, dim))
        if self._use_self_attention:
            self.label_self_attention = keras.layers.MultiHeadAttention(
                self.num_heads, key_dim, dropout=self.dropout,
                name="label_self_attention", dtype=self.dtype_policy,
            )
            self.label_self_attention.build((None, labels, dim), (None, labels, dim))
            self.self_norm = keras.layers.LayerNormalization(name="self_norm",
                                                             dtype=self.dtype_policy)
            self.self_norm.build((None, labels, dim))
        hidden = self.ffn_dim or 2 * dim
        self.ffn_inner = keras.layers.Dense(hidden, activation="relu", name="ffn_inner",
                                            dtype=self.dtype_policy)
        self.ffn_inner.build((None, labels, dim))
        self.ffn_outer = keras.layers.Dense(dim, name="ffn_outer", dtype=self.dtype_policy)
        self.ffn_outer.build((None, labels, hidden))
        self.ffn_norm = keras.layers.LayerNormalization(name="ffn_norm",
                                                        dtype=self.dtype_policy)
        self.ffn_norm.build((None, labels, dim))
        self.output_kernel = self.add_weight(
            name="output_kernel", shape=(labels, dim), initializer="glorot_uniform"
        )
        self.output_bias = self.add_weight(
            name="output_bias", shape=(labels,), initializer="zeros"
        )

    def call(self, inputs, training=None, mask=None):
        memory = self.input_projection(inputs)
        attention_mask = None
        if self._vector_input:
            memory = ops.expand_dims(memory, 1)
        elif mask is not None:
            # (batch, N) -> (batch, num_labels, N): no query attends to padding.
            attention_mask = ops.repeat(
                ops.expand_dims(ops.cast(mask, "bool"), 1), self.num_labels, axis=1
            )
        batch = ops.shape(memory)[0]
        queries = ops.cast(self.label_embeddings, memory.dtype)
        queries = ops.broadcast_to(
            ops.expand_dims(queries, 0), (batch, self.num_labels, self.embed_dim)
        )
        h = self.cross_norm(
            queries
            + self.cross_attention(
                queries, memory, attention_mask=attention_mask, training=training
            )
        )
        if self._use_self_attention:
            h = self.self_norm(h + self.label_self_attention(h, h, training=training))
        h = self.ffn_norm(h + self.ffn_outer(self.ffn_inner(h)))
        kernel = ops.cast(self.output_kernel, h.dtype)
        return ops.sum(h * kernel, axis=-1) + ops.cast(self.output_bias, h.dtype)

    def compute_mask(self, inputs, mask=None):
        return None  # one logit per label: nothing left to mask

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_labels)

    def get_config(self):
        return {
            **super().get_config(),
            "num_labels": self.num_labels,
            "embed_dim": self.embed_dim,
            "num_heads": self.num_heads,
            "ffn_dim": self.ffn_dim,
            "dropout": self.dropout,
            "self_attention": self.self_attention,
        }


def _check_positive_int(layer_name, arg, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(
            f"Invalid value for argument `{arg}` of layer '{layer_name}'. Expected "
            f"an int >= 1. Received: {arg}={value!r}"
        )
