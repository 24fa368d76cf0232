"""Linear-chain conditional random field: the math, and the `CRF` layer.

A linear-chain CRF scores a tag path `y_1..y_n` of a sentence as

```
score(y) = start[y_1] + sum_t emissions[t, y_t]
           + sum_{t>1} transitions[y_{t-1}, y_t] + end[y_n]
p(y | x) = exp(score(y)) / Z,   log Z = logsumexp over all K^n paths
```

`log Z` comes from the forward algorithm (a log-sum-exp recursion over time,
a `keras.ops.while_loop`) and the best path from Viterbi decoding (two
`keras.ops.scan`s), so they run inside `tf.function`, XLA-compiled train steps
and exported SavedModels (no Python loop over time at run time). All of it is computed in float32, whatever
the dtype policy.

Masks: positions where `mask` is False are *skipped*: every function here
treats a sentence as the sub-sequence of its unmasked positions (the
transition after a skipped position links its two unmasked neighbours). For
the usual padding at the end this is plain sequence-length masking; it also
means that padding can never change the scores or tags of real positions. A
sentence with no unmasked position has `log Z = 0`, score 0 and no tags.
"""

from __future__ import annotations

import numbers

import keras
from keras import ops

from kerasmtl.autograph import skip_autograph


@skip_autograph
def crf_log_partition(emissions, mask, transitions, start_transitions, end_transitions):
    """Log-partition `log Z` of each sentence, by the forward algorithm.

    Args:
        emissions: float tensor `[batch, time, num_tags]`. Per-token tag scores.
        mask: bool tensor `[batch, time]` or None. True at real positions.
            `None` means every position is real.
        transitions: float tensor `[num_tags, num_tags]`; `[i, j]` scores tag
            `j` following tag `i`.
        start_transitions: float tensor `[num_tags]`. Score of the first tag.
        end_transitions: float tensor `[num_tags]`. Score of the last tag.

    Returns:
        float32 tensor `[batch]`.

    Examples:

    >>> import numpy as np
    >>> e = np.zeros((1, 2, 2), "float32")  # 4 paths, all scored 0
    >>> z = crf_log_partition(e, None, np.zeros((2, 2)), np.zeros(2), np.zeros(2))
    >>> round(float(z[0]), 4)  # log 4
    1.3863
    """
    emissions, mask, lengths, _ = _left_align(emissions, mask)
    transitions, start, end = _weights(transitions, start_transitions, end_transitions)
    steps = _pack_steps(emissions, mask)
    num_steps = ops.shape(steps)[0]

    def step(t, alpha):
        emit, real, is_first = _unpack_step(steps[t])
        # alpha[b, i] + transitions[i, j], summed out over the previous tag i.
        following = ops.logsumexp(alpha[:, :, None] + transitions[None], axis=1)
        new = ops.where(is_first, start[None] + emit, following + emit)
        return t + 1, ops.where(real, new, alpha)

    # A while loop with `maximum_iterations` (not `ops.scan`): XLA can only
    # differentiate TensorFlow loops whose trip count it knows.
    _, alpha = ops.while_loop(
        lambda t, _: t < num_steps,
        step,
        (0, ops.zeros_like(emissions[:, 0, :])),
        maximum_iterations=num_steps,
    )
    log_z = ops.logsumexp(alpha + end[None], axis=1)
    return ops.where(lengths > 0, log_z, 0.0)


@skip_autograph
def crf_sequence_score(
    emissions, tags, mask, transitions, start_transitions, end_transitions
):
    """Unnormalised score of the given tag path of each sentence.

    Args:
        emissions: float tensor `[batch, time, num_tags]`.
        tags: int tensor `[batch, time]`. Tag ids; values at masked positions
            are ignored.
        mask: bool tensor `[batch, time]` or None (all real).
        transitions, start_transitions, end_transitions: as for
            `crf_log_partition`.

    Returns:
        float32 tensor `[batch]`.
    """
    emissions, aligned_mask, lengths, order = _left_align(emissions, mask)
    transitions, start, end = _weights(transitions, start_transitions, end_transitions)
    num_tags = ops.shape(emissions)[-1]
    tags = ops.clip(ops.cast(tags, "int32"), 0, num_tags - 1)
    tags = ops.take_along_axis(tags, order, axis=1)
    real = ops.cast(aligned_mask, "float32")
    nonempty = ops.cast(lengths > 0, "float32")

    emitted = ops.take_along_axis(emissions, tags[:, :, None], axis=2)[:, :, 0]
    pair_ids = tags[:, :-1] * num_tags + tags[:, 1:]
    moved = ops.take(ops.reshape(transitions, (-1,)), pair_ids)
    last = ops.take_along_axis(tags, ops.maximum(lengths - 1, 0)[:, None], axis=1)[:, 0]
    return (
        ops.sum(emitted * real, axis=1)
        + ops.sum(moved * real[:, 1:], axis=1)
        + (ops.take(start, tags[:, 0]) + ops.take(end, last)) * nonempty
    )


@skip_autograph
def crf_negative_log_likelihood(
    emissions, tags, mask, transitions, start_transitions, end_transitions
):
    """`log Z - score(tags)` per sentence (0 for a sentence with no real token).

    Args: as for `crf_sequence_score`.

    Returns:
        float32 tensor `[batch]`, >= 0.
    """
    weights = (transitions, start_transitions, end_transitions)
    return crf_log_partition(emissions, mask, *weights) - crf_sequence_score(
        emissions, tags, mask, *weights
    )


@skip_autograph
def viterbi_decode(emissions, mask, transitions, start_transitions, end_transitions):
    """Best tag path of each sentence, by Viterbi decoding.

    Args:
        emissions: float tensor `[batch, time, num_tags]`.
        mask: bool tensor `[batch, time]` or None (all real).
        transitions, start_transitions, end_transitions: as for
            `crf_log_partition`.

    Returns:
        `(tags, score)`: int32 `[batch, time]` tag ids, `-1` at masked
        positions, and the float32 `[batch]` score of that path (0 for an
        empty sentence).

    Examples:

    >>> import numpy as np
    >>> e = np.array([[[1.0, 0.0], [0.0, 0.6]]], "float32")
    >>> stay = np.array([[0.0, -1.0], [-1.0, 0.0]], "float32")  # switching costs 1
    >>> tags, _ = viterbi_decode(e, None, stay, np.zeros(2), np.zeros(2))
    >>> tags.numpy().tolist()  # 1 + 0 beats 1 - 1 + 0.6
    [[0, 0]]
    """
    mask = _mask_or_all(emissions, mask)
    emissions, aligned_mask, lengths, order = _left_align(emissions, mask)
    transitions, start, end = _weights(transitions, start_transitions, end_transitions)
    num_tags = ops.shape(emissions)[-1]
    # Back-pointers of skipped positions point every tag to itself, so the
    # backtrace passes through them unchanged.
    identity = ops.broadcast_to(
        ops.arange(num_tags, dtype="int32")[None], ops.shape(emissions[:, 0, :])
    )

    def forward(carry, inputs):
        score, _ = carry
        emit, real, is_first = _unpack_step(inputs)
        candidates = score[:, :, None] + transitions[None]
        best_previous = ops.cast(ops.argmax(candidates, axis=1), "int32")
        new = ops.where(is_first, start[None] + emit, ops.max(candidates, axis=1) + emit)
        score = ops.where(real, new, score)
        pointers = ops.where(
            ops.logical_and(real, ops.logical_not(is_first)),
            best_previous,
            identity,
        )
        return (score, pointers), (score, pointers)

    (score, _), (_, pointers) = ops.scan(
        forward,
        (ops.zeros_like(emissions[:, 0, :]), identity),
        _pack_steps(emissions, aligned_mask),
    )
    final = score + end[None]
    best_score = ops.where(lengths > 0, ops.max(final, axis=1), 0.0)
    last_tag = ops.cast(ops.argmax(final, axis=1), "int32")

    def backward(tag, step_pointers):
        previous = ops.take_along_axis(step_pointers, tag[:, None], axis=1)[:, 0]
        return previous, tag

    _, path = ops.scan(backward, last_tag, pointers, reverse=True)
    path = ops.moveaxis(path, 0, 1)
    # Back from the left-aligned order to the original positions.
    path = ops.take_along_axis(path, ops.argsort(order, axis=1), axis=1)
    return ops.where(mask, path, -1), best_score


@keras.saving.register_keras_serializable(package="kerasmtl")
class CRF(keras.layers.Layer):
    """Linear-chain CRF output layer: emission scores plus learned transitions.

    The layer projects features `[batch, time, dim]` to emission scores
    `[batch, time, num_tags]` (a Dense projection inside the layer) and holds
    the CRF's transition weights: `transitions` `[num_tags, num_tags]` and the
    boundary vectors `start_transitions`, `end_transitions` `[num_tags]` (so it
    can learn, e.g., that no sentence starts with `I-`). Its output is the
    emissions; the loss (`negative_log_likelihood`) and decoding (`decode`)
    use the transitions. It passes the Keras mask of its input through to its
    output, which is how a `Tagging` task's post-processing learns which
    positions are padding. Computes in float32 unless another `dtype` is given,
    since log-space sums over long sentences need the precision.

    Args:
        num_tags: int. Number of tags, at least 1.
        kernel_initializer: initializer of the projection kernel. Defaults to
            `"glorot_uniform"`.
        bias_initializer: initializer of the projection bias. Defaults to
            `"zeros"`.
        transitions_initializer: initializer of the three transition weights.
            Defaults to `"zeros"` (training starts from independent per-token
            scores).
        kernel_regularizer: optional regularizer of the projection kernel.
        transitions_regularizer: optional regularizer of the transitions.
        **kwargs: `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Examples:

    >>> import numpy as np
    >>> crf = CRF(3)
    >>> emissions = crf(np.ones((2, 4, 5), "float32"))
    >>> tuple(emissions.shape), tuple(crf.transitions.shape)
    ((2, 4, 3), (3, 3))
    >>> crf.decode(emissions).shape
    TensorShape([2, 4])
    """

    def __init__(
        self,
        num_tags: int,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        transitions_initializer="zeros",
        kernel_regularizer=None,
        transitions_regularizer=None,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if isinstance(num_tags, bool) or not isinstance(num_tags, numbers.Integral) or num_tags < 1:
            raise ValueError(
                "Invalid value for argument `num_tags` of CRF layer "
                f"'{self.name}'. Expected an int >= 1. Received: num_tags={num_tags!r}"
            )
        self.num_tags = int(num_tags)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.transitions_initializer = keras.initializers.get(transitions_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.transitions_regularizer = keras.regularizers.get(transitions_regularizer)
        self.supports_masking = True

    def build(self, input_shape):
        k = self.num_tags
        self.kernel = self.add_weight(
            name="kernel",
            shape=(input_shape[-1], k),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )
        self.bias = self.add_weight(name="bias", shape=(k,), initializer=self.bias_initializer)
        self.transitions = self.add_weight(
            name="transitions",
            shape=(k, k),
            initializer=self.transitions_initializer,
            regularizer=self.transitions_regularizer,
        )
        self.start_transitions = self.add_weight(
            name="start_transitions", shape=(k,), initializer=self.transitions_initializer
        )
        self.end_transitions = self.add_weight(
            name="end_transitions", shape=(k,), initializer=self.transitions_initializer
        )

    def call(self, inputs, mask=None):
        return ops.add(ops.matmul(inputs, self.kernel), self.bias)

    def compute_mask(self, inputs, mask=None):
        return mask

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.num_tags)

    def _crf_weights(self):
        return self.transitions, self.start_transitions, self.end_transitions

    def negative_log_likelihood(self, emissions, tags, mask=None):
        """Per-sentence CRF negative log-likelihood `[batch]` of `tags`."""
        return crf_negative_log_likelihood(emissions, tags, mask, *self._crf_weights())

    def decode(self, emissions, mask=None):
        """Viterbi tag ids `[batch, time]` (int32, -1 at masked positions)."""
        return viterbi_decode(emissions, mask, *self._crf_weights())[0]

    def get_config(self):
        return {
            **super().get_config(),
            "num_tags": self.num_tags,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "transitions_initializer": keras.initializers.serialize(
                self.transitions_initializer
            ),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "transitions_regularizer": keras.regularizers.serialize(
                self.transitions_regularizer
            ),
        }


def _weights(transitions, start, end):
    return tuple(ops.cast(ops.convert_to_tensor(w), "float32") for w in (transitions, start, end))


def _mask_or_all(emissions, mask):
    if mask is None:
        return ops.ones(ops.shape(emissions)[:2], dtype="bool")
    return ops.cast(mask, "bool")


def _left_align(emissions, mask):
    """Moves each row's real positions to the front, keeping their order.

    Returns float32 emissions, the left-aligned mask (a prefix of length
    `lengths`), `lengths` and the permutation `order` used (`aligned[:, k] =
    original[:, order[:, k]]`). Skipping masked positions then reduces to
    plain sequence-length masking.
    """
    emissions = ops.cast(ops.convert_to_tensor(emissions), "float32")
    mask = _mask_or_all(emissions, mask)
    positions = ops.arange(ops.shape(mask)[1], dtype="int32")[None, :]
    # Unique keys: real positions first, each group in time order.
    keys = ops.where(mask, positions, positions + ops.shape(mask)[1])
    order = ops.cast(ops.argsort(keys, axis=1), "int32")
    lengths = ops.sum(ops.cast(mask, "int32"), axis=1)
    emissions = ops.take_along_axis(emissions, order[:, :, None], axis=1)
    return emissions, positions < lengths[:, None], lengths, order


def _pack_steps(emissions, mask):
    """One time-major float tensor `[time, batch, num_tags + 2]` holding each
    step's emissions, real-position flag and first-step flag.

    Keras' TensorFlow `scan` fails on several `xs` tensors whose time length
    is unknown when tracing, so the per-step inputs travel as one tensor.
    """
    shape = ops.shape(mask)
    first = ops.broadcast_to((ops.arange(shape[1]) == 0)[None, :], shape)
    flags = ops.stack([ops.cast(mask, "float32"), ops.cast(first, "float32")], axis=-1)
    return ops.moveaxis(ops.concatenate([emissions, flags], axis=-1), 1, 0)


def _unpack_step(inputs):
    """`(emissions [batch, K], real [batch, 1], is_first [batch, 1])`."""
    return inputs[:, :-2], inputs[:, -2:-1] > 0.5, inputs[:, -1:] > 0.5
