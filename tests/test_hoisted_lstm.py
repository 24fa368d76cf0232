"""HoistedLSTM: the same cell as keras.layers.LSTM (outputs and gradients at
real positions), zero at padding, Keras's own path where it does not apply, a
clear error for masks with gaps, and a saved model that round-trips."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasmtl.layers import HoistedLSTM

RNG = np.random.default_rng(0)
X = RNG.normal(size=(5, 7, 3)).astype("float32")
LENGTHS = np.array([7, 3, 1, 5, 0])
MASK = np.arange(7)[None] < LENGTHS[:, None]


def _pair(make):
    """The same layer built with HoistedLSTM and with LSTM, same weights."""
    hoisted, plain = make(HoistedLSTM), make(keras.layers.LSTM)
    hoisted(X, mask=MASK)
    plain(X, mask=MASK)
    plain.set_weights(hoisted.get_weights())
    return hoisted, plain


def _outputs_and_gradients(layer, weight):
    x = tf.constant(X)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, mask=MASK)
        loss = tf.reduce_sum(tf.sin(y) * weight)
    return y, tape.gradient(loss, [x, *layer.trainable_weights])


@pytest.mark.parametrize("make", [
    lambda cls: keras.layers.Bidirectional(cls(4, return_sequences=True)),
    lambda cls: cls(4, return_sequences=True),
    lambda cls: cls(4, return_sequences=True, go_backwards=True),
], ids=["bidirectional", "forward", "backward"])
def test_outputs_and_gradients_match_keras_lstm_at_real_positions(make):
    hoisted, plain = _pair(make)
    real = MASK[..., None].astype("float32")
    if getattr(hoisted, "go_backwards", False):
        real = real[:, ::-1]  # a lone backward layer returns reversed time
    y_h, g_h = _outputs_and_gradients(hoisted, real)
    y_p, g_p = _outputs_and_gradients(plain, real)
    np.testing.assert_allclose(np.asarray(y_h) * real, np.asarray(y_p) * real, atol=1e-5)
    for a, b in zip(g_h, g_p):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4)
    # Padding is zero, and a sequence of length 0 is all zero.
    assert np.all(np.asarray(y_h) * (1 - real) == 0)
    assert not np.any(np.asarray(y_h)[4])


@pytest.mark.parametrize("kwargs", [
    {"return_sequences": False},
    {"return_sequences": True, "return_state": True},
    {"return_sequences": True, "dropout": 0.5},
], ids=["last-output", "states", "dropout"])
def test_keras_own_path_where_the_hoisted_one_does_not_apply(kwargs):
    hoisted, plain = _pair(lambda cls: cls(4, **kwargs))
    # Keras's path repeats the last output at padding; the hoisted one would
    # give zeros there, so equality everywhere shows which path ran.
    for a, b in zip(keras.tree.flatten(hoisted(X, mask=MASK)),
                    keras.tree.flatten(plain(X, mask=MASK))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_a_mask_with_a_gap_is_refused_with_what_to_do():
    layer = HoistedLSTM(4, return_sequences=True, name="trunk_lstm")
    gap = np.ones((2, 7), bool)
    gap[1, 2] = False
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="trunk_lstm: HoistedLSTM needs .* padding at its end"):
        layer(X[:2], mask=gap)


def test_saved_model_round_trips_and_its_weights_load_into_keras_lstm(tmp_path):
    inputs = keras.Input((None, 3))
    masked = keras.layers.Masking(0.0)(inputs)
    outputs = keras.layers.Bidirectional(HoistedLSTM(4, return_sequences=True))(masked)
    model = keras.Model(inputs, outputs)
    x = X * MASK[..., None]
    path = tmp_path / "hoisted.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), atol=1e-6)

    plain_out = keras.layers.Bidirectional(keras.layers.LSTM(4, return_sequences=True))(masked)
    plain = keras.Model(inputs, plain_out)
    plain.set_weights(model.get_weights())
    real = MASK[..., None]
    np.testing.assert_allclose(np.asarray(plain(x)) * real, np.asarray(model(x)) * real,
                               atol=1e-5)


def test_mixed_precision_computes_in_float16():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        hoisted, plain = _pair(lambda cls: cls(4, return_sequences=True))
        y = hoisted(X, mask=MASK)
        assert y.dtype == "float16"
        real = MASK[..., None]
        np.testing.assert_allclose(np.asarray(y, "float32") * real,
                                   np.asarray(plain(X, mask=MASK), "float32") * real,
                                   atol=1e-2)
    finally:
        keras.mixed_precision.set_global_policy("float32")
