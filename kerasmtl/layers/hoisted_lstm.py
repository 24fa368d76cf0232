"""`HoistedLSTM`: a `keras.layers.LSTM` for sequences padded at the end, with
the input projection taken out of the time loop.

On the CPU, Keras's LSTM runs its generic RNN loop: at every time step the
cell multiplies the step's inputs by the input kernel, the state by the
recurrent kernel, and, with a mask, selects between the new and the carried
state. Two of those three are not recurrent:

- the input projection `x_t @ kernel + bias` of all steps is one matrix
  product before the loop (`[batch * time, features] @ [features, 4 * units]`,
  which the CPU's matrix kernels run far better than `time` small ones);
- when padding is at the end of each sequence, no real step ever follows a
  padded one, so the loop needs no mask: it runs unmasked, and the outputs at
  padded positions are zeroed afterwards. A backward layer (`go_backwards`,
  as in `Bidirectional`) first reverses each sequence within its own length,
  so that its padding is at the end too.

The loop is left with the recurrent product and the gates. Results are the
same cell's (gate order input, forget, cell, output; the same weights); only
float rounding differs. On the UD-EWT tagger's BiLSTM (128 units, batch 32,
about 24 steps) a train step of the layer is about 1.2x faster on 2 CPU cores
(`benchmarks/tagging_speed.py` measures the whole model).

`HoistedLSTM` keeps `LSTM`'s arguments, weights and config, so its weights
load into either. It takes its own path only where that is the same
computation: TensorFlow backend, no GPU (there `LSTM`'s cuDNN path runs),
`return_sequences=True` without `return_state` or `stateful`, no dropout on
the inputs or the recurrent state, not unrolled. Elsewhere it is `LSTM`.

Masks must be padding at the end of each sequence (`True...True
False...False`), as for cuDNN; a mask with a gap raises an error saying so
(XLA drops run-time asserts: under `jit_compile` it is not checked).
Outputs at padded positions are zero (Keras's loop repeats the last output
there; a masked consumer ignores both).
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kerasmtl")
class HoistedLSTM(keras.layers.LSTM):
    """`keras.layers.LSTM` with the input projection out of the time loop.

    Same arguments, weights and results as `keras.layers.LSTM` (module
    docstring: when its own path runs; outputs at masked positions are
    zero). Inside a `Bidirectional` wrapper both directions take it.

    Examples:

    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype("float32")
    >>> mask = np.array([[True] * 5, [True, True, False, False, False]])
    >>> hoisted = HoistedLSTM(4, return_sequences=True)
    >>> plain = keras.layers.LSTM(4, return_sequences=True)
    >>> _ = hoisted(x, mask=mask), plain(x, mask=mask)
    >>> plain.set_weights(hoisted.get_weights())
    >>> same = np.asarray(hoisted(x, mask=mask)) - np.asarray(plain(x, mask=mask))
    >>> bool(np.abs(same * mask[..., None]).max() < 1e-5)
    True
    """

    def _hoisted_path_applies(self) -> bool:
        if keras.backend.backend() != "tensorflow" or self.unroll:
            return False
        if not self.return_sequences or self.return_state or self.stateful:
            return False
        if self.dropout or self.recurrent_dropout:
            return False
        import tensorflow as tf

        # On a GPU, LSTM's own path runs cuDNN.
        return not tf.config.list_logical_devices("GPU")

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if not self._hoisted_path_applies():
            return super().inner_loop(sequences, initial_state, mask, training=training)
        import tensorflow as tf

        # Keras's own time loop (`backend.rnn`, what LSTM.inner_loop runs) has
        # no public name: private API, guarded by tests/test_hoisted_lstm.py
        # (outputs and gradients equal to keras.layers.LSTM's).
        from keras.src import backend as keras_backend

        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        batch, steps = tf.shape(sequences)[0], tf.shape(sequences)[1]
        if mask is None:
            lengths = tf.fill([batch], steps)
        else:
            lengths = _end_padded_lengths(mask, steps, self.name)
        if self.go_backwards:
            sequences = tf.reverse_sequence(sequences, lengths, seq_axis=1, batch_axis=0)
        cell = self.cell
        dtype = sequences.dtype
        projected = ops.matmul(sequences, ops.cast(cell.kernel, dtype))
        if cell.use_bias:
            projected = projected + ops.cast(cell.bias, dtype)
        recurrent_kernel = ops.cast(cell.recurrent_kernel, dtype)
        activation, recurrent_activation = cell.activation, cell.recurrent_activation

        def step(projected_t, states):
            h, c = states
            z = projected_t + ops.matmul(h, recurrent_kernel)
            i, f, g, o = ops.split(z, 4, axis=-1)
            c = recurrent_activation(f) * c + recurrent_activation(i) * activation(g)
            h = recurrent_activation(o) * activation(c)
            return h, [h, c]

        last, outputs, states = keras_backend.rnn(
            step, projected, list(initial_state), mask=None, unroll=False,
            input_length=sequences.shape[1], return_all_outputs=True)
        outputs = outputs * tf.sequence_mask(lengths, steps, dtype=outputs.dtype)[..., None]
        if self.go_backwards:
            # Keras's loop returns a backward layer's outputs in reversed time
            # order (Bidirectional turns them back): the same here.
            outputs = tf.reverse_sequence(outputs, lengths, seq_axis=1, batch_axis=0)
            outputs = tf.reverse(outputs, axis=[1])
        # `last` and `states` are the last padded step's; with
        # return_sequences and no return_state or stateful, RNN.call uses
        # neither.
        return last, outputs, states


def _end_padded_lengths(mask, steps, name):
    """Each sequence's length; an error where `mask` is not padding at the end."""
    import tensorflow as tf

    mask = tf.cast(mask, tf.bool)
    lengths = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)
    end_padded = tf.reduce_all(tf.equal(mask, tf.sequence_mask(lengths, steps)))
    check = tf.debugging.Assert(end_padded, [
        f"{name}: HoistedLSTM needs each sequence's mask to be padding at its "
        "end (True...True False...False); this mask has a False before a True. "
        "Put the padding after the real steps, or use keras.layers.LSTM."])
    with tf.control_dependencies([check]):
        return tf.identity(lengths)
