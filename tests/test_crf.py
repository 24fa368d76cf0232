"""Linear-chain CRF: forward algorithm and Viterbi against brute-force
enumeration of every tag path, masks, gradients, graph modes, the layer."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasmtl.layers.crf import (
    CRF,
    crf_log_partition,
    crf_negative_log_likelihood,
    crf_sequence_score,
    viterbi_decode,
)

K = 3
# Real positions of five sentences of length 4: full, padded, empty, with a
# hole, with leading padding.
MASK = np.array(
    [[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 1, 1], [0, 1, 1, 0]], bool
)


def random_crf(seed=0, batch=5, time=4):
    rng = np.random.default_rng(seed)
    emissions = rng.normal(size=(batch, time, K)).astype("float32")
    weights = (
        rng.normal(size=(K, K)).astype("float32"),
        rng.normal(size=K).astype("float32"),
        rng.normal(size=K).astype("float32"),
    )
    return emissions, weights


def path_score(emissions, path, weights):
    transitions, start, end = weights
    return (
        start[path[0]]
        + end[path[-1]]
        + sum(emissions[t, y] for t, y in enumerate(path))
        + sum(transitions[a, b] for a, b in zip(path, path[1:]))
    )


def brute_force(emissions, weights):
    """log Z, best path and its score of one sentence, over all K^n paths."""
    paths = list(itertools.product(range(K), repeat=len(emissions)))
    scores = np.array([path_score(emissions, p, weights) for p in paths], "float64")
    return np.log(np.exp(scores).sum()), list(paths[scores.argmax()]), scores.max()


def test_log_partition_and_viterbi_match_enumeration():
    emissions, weights = random_crf()
    log_z = crf_log_partition(emissions, MASK, *weights).numpy()
    tags, best = (t.numpy() for t in viterbi_decode(emissions, MASK, *weights))
    for b in range(len(MASK)):
        real = emissions[b][MASK[b]]
        if not len(real):  # a sentence without tokens
            assert log_z[b] == 0.0 and best[b] == 0.0
            assert tags[b].tolist() == [-1] * 4
            continue
        want_z, want_path, want_best = brute_force(real, weights)
        np.testing.assert_allclose(log_z[b], want_z, rtol=1e-5)
        np.testing.assert_allclose(best[b], want_best, rtol=1e-5)
        assert tags[b][MASK[b]].tolist() == want_path
        assert (tags[b][~MASK[b]] == -1).all()


@pytest.mark.parametrize("length", [1, 2, 3])
def test_shorter_sentences_without_mask(length):
    emissions, weights = random_crf(seed=length, batch=2, time=length)
    log_z = crf_log_partition(emissions, None, *weights).numpy()
    tags = viterbi_decode(emissions, None, *weights)[0].numpy()
    for b in range(2):
        want_z, want_path, _ = brute_force(emissions[b], weights)
        np.testing.assert_allclose(log_z[b], want_z, rtol=1e-5)
        assert tags[b].tolist() == want_path


def test_sequence_score_and_nll_by_hand():
    emissions, weights = random_crf(seed=3)
    tags = np.array([[0, 1, 2, 1], [2, 2, 0, 0], [1, 1, 1, 1], [0, 2, 1, 0], [2, 0, 1, 1]])
    score = crf_sequence_score(emissions, tags, MASK, *weights).numpy()
    nll = crf_negative_log_likelihood(emissions, tags, MASK, *weights).numpy()
    for b in range(len(MASK)):
        path = tags[b][MASK[b]].tolist()
        if not path:
            assert score[b] == 0.0 and nll[b] == 0.0
            continue
        want = path_score(emissions[b][MASK[b]], path, weights)
        np.testing.assert_allclose(score[b], want, rtol=1e-5)
        log_z = brute_force(emissions[b][MASK[b]], weights)[0]
        np.testing.assert_allclose(nll[b], log_z - want, rtol=1e-5)
        assert nll[b] > 0


def test_gradients_are_finite_and_nonzero():
    emissions, (transitions, start, end) = random_crf(seed=4)
    tags = np.zeros((5, 4), "int32")
    variables = [tf.Variable(w) for w in (transitions, start, end)]
    with tf.GradientTape() as tape:
        nll = crf_negative_log_likelihood(emissions, tags, MASK, *variables)
        loss = tf.reduce_sum(nll)
    for grad in tape.gradient(loss, variables):
        assert np.all(np.isfinite(grad.numpy()))
        assert np.abs(grad.numpy()).max() > 1e-3
    # A batch without any real token: zero loss, zero (finite) gradients.
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(
            crf_negative_log_likelihood(emissions, tags, np.zeros_like(MASK), *variables)
        )
    assert float(loss) == 0.0
    for grad in tape.gradient(loss, variables):
        assert grad is None or not np.any(grad.numpy())


def test_padding_never_changes_the_tags_of_real_tokens():
    # Switching tags costs 5, and the padded positions strongly favour tag 2:
    # decoded over all positions, the padding would drag the sentence to tag 2.
    transitions = np.full((K, K), -5.0, "float32") + 5.0 * np.eye(K, dtype="float32")
    weights = (transitions, np.zeros(K, "float32"), np.zeros(K, "float32"))
    short = np.array([[[1.0, 0.0, 0.0], [1.0, 0.5, 0.0]]], "float32")
    padded = np.concatenate([short, np.full((1, 3, K), [0.0, 0.0, 9.0], "float32")], 1)
    alone = viterbi_decode(short, None, *weights)[0].numpy()
    mask = np.array([[1, 1, 0, 0, 0]], bool)
    tags = viterbi_decode(padded, mask, *weights)[0].numpy()
    assert alone.tolist() == [[0, 0]]
    assert tags.tolist() == [[0, 0, -1, -1, -1]]
    unmasked = viterbi_decode(padded, None, *weights)[0].numpy()
    assert unmasked.tolist() == [[2, 2, 2, 2, 2]]  # why the mask matters


def test_graph_modes_with_unknown_shapes_and_xla():
    emissions, weights = random_crf(seed=5)
    tags = np.array([[0, 1, 2, 1]] * 5, "int32")
    transitions = tf.Variable(weights[0])
    spec = [
        tf.TensorSpec((None, None, K), tf.float32),
        tf.TensorSpec((None, None), tf.int32),
        tf.TensorSpec((None, None), tf.bool),
    ]

    def step(e, y, m):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(
                crf_negative_log_likelihood(e, y, m, transitions, *weights[1:])
            )
        grad = tape.gradient(loss, transitions)
        return loss, grad, viterbi_decode(e, m, transitions, *weights[1:])[0]

    eager = step(emissions, tags, MASK)
    traced = tf.function(step, input_signature=spec)(emissions, tags, MASK)
    # Keras compiles train steps with XLA on GPUs: the loop's gradient must
    # compile there too.
    compiled = tf.function(step, jit_compile=True)(emissions, tags, MASK)
    for got in (traced, compiled):
        np.testing.assert_allclose(got[0], eager[0], rtol=1e-5)
        np.testing.assert_allclose(got[1], eager[1], rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(got[2], eager[2])


def test_layer_shapes_mask_and_config():
    layer = CRF(4, name="ner")
    inputs = keras.Input((None, 6))
    masked = keras.layers.Masking()(inputs)
    outputs = layer(masked)
    assert tuple(outputs.shape) == (None, None, 4)
    assert {w.name: tuple(w.shape) for w in layer.weights} == {
        "kernel": (6, 4),
        "bias": (4,),
        "transitions": (4, 4),
        "start_transitions": (4,),
        "end_transitions": (4,),
    }
    model = keras.Model(inputs, outputs)
    x = np.ones((2, 3, 6), "float32")
    x[0, 2] = 0.0  # masked by Masking
    out = model(x)
    assert keras.src.backend.get_keras_mask(out).numpy().tolist() == [
        [True, True, False],
        [True, True, True],
    ]
    assert layer.decode(out, np.array([[1, 1, 0], [1, 1, 1]], bool)).numpy()[0, 2] == -1
    clone = CRF.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


def test_layer_is_float32_under_mixed_precision():
    keras.config.set_dtype_policy("mixed_float16")
    try:
        layer = CRF(3)
        out = layer(np.ones((1, 2, 4), "float16"))
    finally:
        keras.config.set_dtype_policy("float32")
    assert out.dtype == "float32" and layer.transitions.dtype == "float32"
    nll = layer.negative_log_likelihood(tf.cast(out, "float16"), np.zeros((1, 2), "int32"))
    assert nll.dtype == tf.float32


def test_invalid_num_tags():
    with pytest.raises(ValueError, match="num_tags.*int >= 1.*0"):
        CRF(0)
