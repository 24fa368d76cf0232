"""`Tagging`: per-token losses and checks by hand, CRF binding, joint POS + NER
training, `.keras` round trip, and SavedModel export that decodes a padded
sentence exactly as the sentence alone."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasmtl as mtl
from harness import assert_finite_logs, run_model_saving_test
from kerasmtl.export import export_saved_model
from kerasmtl.layers.crf import crf_negative_log_likelihood
from kerasmtl.tasks.tagging import Tagging

POS_TAGS = ["NOUN", "VERB", "DET", "PROPN"]
NER_TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]

# A memorisable corpus over 14 words, 0 = padding:
# 1 john 2 mary 3 smith 4 paris 5 new 6 york 7 visits 8 likes 9 sees 10 the
# 11 a 12 city 13 dog 14 park
TOKENS = np.array(
    [
        [1, 3, 7, 4, 0, 0],  # john smith visits paris
        [2, 8, 5, 6, 0, 0],  # mary likes new york
        [10, 13, 9, 2, 0, 0],  # the dog sees mary
        [1, 7, 10, 14, 0, 0],  # john visits the park
        [2, 3, 8, 10, 12, 0],  # mary smith likes the city
        [11, 13, 7, 5, 6, 0],  # a dog visits new york
    ],
    "int32",
)
POS = np.array(
    [
        [3, 3, 1, 3, -1, -1],
        [3, 1, 3, 3, -1, -1],
        [2, 0, 1, 3, -1, -1],
        [3, 1, 2, 0, -1, -1],
        [3, 3, 1, 2, 0, -1],
        [2, 0, 1, 3, 3, -1],
    ],
    "int32",
)
NER = np.array(
    [
        [1, 2, 0, 3, -1, -1],
        [1, 0, 3, 4, -1, -1],
        [0, 0, 0, 1, -1, -1],
        [1, 0, 0, 0, -1, -1],
        [1, 2, 0, 0, 0, -1],
        [0, 0, 0, 3, 4, -1],
    ],
    "int32",
)


def pos_ner_model():
    pos = Tagging("pos", tags=POS_TAGS)
    ner = Tagging("ner", tags=NER_TAGS, scheme="IOB2", crf=True)
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    h = keras.layers.Embedding(20, 8, mask_zero=True)(tokens)
    h = keras.layers.Bidirectional(keras.layers.LSTM(4, return_sequences=True))(h)
    return mtl.sharing.hard_sharing(tokens, h, [pos, ner])


def crf_model(num_tags=3, dim=2):
    """A CRF head straight on float features, weights easy to set."""
    task = Tagging("ner", num_tags, crf=True)
    inputs = keras.Input((None, dim), name="features")
    return mtl.MultiTaskModel(inputs, {"ner": task.build_head(inputs)}, tasks=[task])


# -- spec, config, errors -----------------------------------------------------


def test_shapes_metrics_and_config_round_trip():
    ner = Tagging("ner", tags=NER_TAGS, scheme="iob2", crf=True, hidden_layers=[4])
    pos = Tagging("pos", 17, loss_weight=0.5)
    assert (ner.num_tags, ner.scheme, ner.primary_metric) == (5, "IOB2", "entity_f1")
    assert (pos.output_shape, pos.label_shape, pos.primary_metric) == ((None, 17), (None,), "accuracy")
    assert [m.name for m in ner.default_metrics()] == [
        "accuracy", "entity_precision", "entity_recall", "entity_f1"
    ]
    assert [m.name for m in pos.default_metrics()] == ["accuracy"]
    for task in (ner, pos):
        clone = mtl.tasks.deserialize(mtl.tasks.serialize(task))
        assert type(clone) is Tagging and clone.get_config() == task.get_config()


def test_token_accuracy_is_exact_over_batches_of_different_lengths():
    # Keras's mean metrics weight a [batch, time] sample weight by 1 / time:
    # over a short and a long batch the accuracy must still be the token
    # accuracy (every labelled token once).
    task = Tagging("pos", 3)
    metric = task.default_metrics()[0]
    rng = np.random.default_rng(0)
    correct = total = 0
    for length, rows in ((2, 5), (9, 3)):
        y = rng.integers(0, 3, (rows, length)).astype("int32")
        y[0, length // 2:] = -1  # padding
        scores = rng.random((rows, length, 3)).astype("float32")
        task.update_metrics([metric], y, scores)
        known = y >= 0
        correct += int((scores.argmax(-1) == y)[known].sum())
        total += int(known.sum())
    np.testing.assert_allclose(float(metric.result()), correct / total, rtol=1e-6)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Tagging("t"), "needs `num_tags` or `tags`"),
        (lambda: Tagging("t", 3, tags=["a", "b"]), "num_tags=3 and 2 tags"),
        (lambda: Tagging("t", 1), r"`num_tags` of task 't'.*int >= 2.*1"),
        (lambda: Tagging("t", tags=["O", "B-X", "O"]), r"\['O'\] appear more than once"),
        (lambda: Tagging("ner", tags=["O", "B-PER", "X-PER"], scheme="IOB2"),
         r"Invalid tag 'X-PER' \(tag id 2\) of task 'ner' for the IOB2 scheme"),
        (lambda: Tagging("ner", tags=["O", "E-PER"], scheme="IOB2"), r"'E-PER'.*B-TYPE, I-TYPE"),
        (lambda: Tagging("ner", tags=["O", "PER"], scheme="IOBES"), r"Invalid tag 'PER'"),
        (lambda: Tagging("ner", 5, scheme="IOB2"), r"scheme='IOB2' but no `tags`"),
        (lambda: Tagging("ner", tags=NER_TAGS, scheme="BILOU"),
         r"Invalid tagging scheme 'BILOU' of task 'ner'"),
        (lambda: Tagging("ner", 5, crf=True, loss="mse"), r"crf=True.*loss='mse'"),
        (lambda: Tagging("ner", 5, crf="yes"), r"`crf` of task 'ner'.*bool"),
        (lambda: Tagging("pos", 5).metric_from_identifier("entity_f1"),
         r"'entity_f1' of task 'pos' needs entity tags"),
    ],
)
def test_invalid_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_label_value_errors():
    pos = Tagging("pos", tags=NER_TAGS)
    with pytest.raises(
        ValueError,
        match=r"'pos'.*unknown tag in the training labels.*\[5, 7\].*num_tags=5",
    ):
        pos.check_label_values(np.array([[0, 5, 7, -1], [5, 1, 1, 1]]))
    with pytest.raises(ValueError, match=r"'pos'.*\[-2\]"):
        pos.check_label_values(np.array([[-2, 0]]))
    with pytest.raises(ValueError, match=r"'pos'.*not integer ids"):
        pos.check_label_values(np.array([[0.5, 1.0]]))
    with pytest.raises(ValueError, match=r"'pos'.*shape \(None,\).*\(batch, time\)"):
        pos.check_label_values(np.array([0, 1]))
    pos.check_label_values(np.array([[0, -1, 2, -1]]))  # softmax: gaps are fine


def test_crf_labels_must_be_whole_sentences():
    ner = Tagging("ner", tags=NER_TAGS, crf=True)
    # Trailing padding and wholly unlabelled sentences are fine.
    ner.check_label_values(np.array([[1, 2, -1, -1], [-1, -1, -1, -1], [0, 0, 0, 0]]))
    with pytest.raises(ValueError, match=r"'ner' \(CRF tagging\) have a gap: sentence 1.*whole tag sequences"):
        ner.check_label_values(np.array([[1, 2, -1, -1], [1, -1, 2, -1]]))
    with pytest.raises(ValueError, match=r"gap: sentence 0"):
        ner.check_label_values(np.array([[-1, 1, 2]]))


def test_unbound_crf_task_says_what_to_do():
    ner = Tagging("ner", 3, crf=True)
    with pytest.raises(ValueError, match=r"'ner' \(CRF tagging\) is not bound.*get_task\('ner'\)"):
        ner.masked_loss(np.zeros((1, 2), "int32"), np.zeros((1, 2, 3), "float32"))
    with pytest.raises(ValueError, match="not bound"):
        ner.postprocess(np.zeros((1, 2, 3), "float32"))
    inputs = keras.Input((None, 2))
    dense_head = {"ner": keras.layers.Dense(3, name="ner")(inputs)}
    with pytest.raises(ValueError, match=r"crf=True but the model's layer 'ner' is a Dense"):
        mtl.MultiTaskModel(inputs, dense_head, tasks=[ner])


# -- losses by hand -------------------------------------------------------------


def test_softmax_loss_is_masked_token_cross_entropy():
    task = Tagging("pos", 3)
    probs = np.array(
        [[[0.7, 0.2, 0.1], [0.3, 0.3, 0.4], [0.2, 0.3, 0.5]], [[0.1, 0.1, 0.8]] * 3], "float32"
    )
    # Known labels: (0, 0) -> 0.7 and (0, 1) -> 0.4: (-ln 0.7 - ln 0.4) / 2
    mean, count = task.masked_loss(np.array([[0, 2, -1], [-1, -1, -1]]), probs)
    assert float(count) == 2.0
    np.testing.assert_allclose(float(mean), (0.356675 + 0.916291) / 2, atol=1e-5)
    mean, count = task.masked_loss(np.full((2, 3), -1), probs)
    assert float(mean) == 0.0 and float(count) == 0.0


def test_crf_loss_is_sentence_nll_per_labelled_token():
    model = crf_model()
    task, layer = model.get_task("ner"), model.get_layer("ner")
    rng = np.random.default_rng(0)
    for weight in layer.weights:
        weight.assign(rng.normal(size=weight.shape))
    x = rng.normal(size=(3, 4, 2)).astype("float32")
    labels = np.array([[0, 1, 2, 1], [2, 2, -1, -1], [-1, -1, -1, -1]])
    emissions = model(x)["ner"]
    nll = crf_negative_log_likelihood(emissions, labels, labels >= 0, *layer._crf_weights())
    mean, count = task.masked_loss(labels, emissions)
    assert float(count) == 6.0  # 4 + 2 labelled tokens; sentence 2 has none
    np.testing.assert_allclose(float(mean), float(nll[0] + nll[1]) / 6, rtol=1e-6)
    # Per-sentence sample weights weigh sentence NLLs and token counts alike.
    mean, count = task.compute_loss(labels, emissions, sample_weight=np.array([1.0, 3.0, 5.0]))
    assert float(count) == 10.0
    np.testing.assert_allclose(float(mean), float(nll[0] + 3 * nll[1]) / 10, rtol=1e-6)


def test_crf_loss_without_transitions_equals_softmax_loss():
    # With zero transitions the CRF factorises into a softmax per token: both
    # losses are then the same number (same scale, same reduction).
    model = crf_model()
    task = model.get_task("ner")
    x = np.random.default_rng(1).normal(size=(2, 3, 2)).astype("float32")
    labels = np.array([[0, 1, 2], [1, 1, -1]])
    emissions = model(x)["ner"]
    crf_mean, crf_count = task.masked_loss(labels, emissions)
    soft_mean, soft_count = Tagging("pos", 3).masked_loss(labels, tf.nn.softmax(emissions))
    assert float(crf_count) == float(soft_count) == 5.0
    np.testing.assert_allclose(float(crf_mean), float(soft_mean), rtol=1e-5)


def test_crf_batch_without_labels_gives_zero_loss_and_gradient():
    model = crf_model()
    task = model.get_task("ner")
    x = np.ones((2, 3, 2), "float32")
    with tf.GradientTape() as tape:
        mean, count = task.masked_loss(np.full((2, 3), -1), model(x)["ner"])
    grads = tape.gradient(mean, model.trainable_weights)
    assert float(mean) == 0.0 and float(count) == 0.0
    assert all(g is None or not np.any(g.numpy()) for g in grads)


# -- post-processing -----------------------------------------------------------


def test_softmax_postprocess_reads_explicit_or_keras_mask():
    task = Tagging("pos", tags=POS_TAGS)
    probs = np.eye(4, dtype="float32")[[[3, 1, 0], [2, 2, 2]]]
    mask = np.array([[True, True, False], [True, True, True]])
    out = task.postprocess(probs, mask=mask)
    assert out["pos_prediction"].dtype == tf.int32
    assert out["pos_prediction"].numpy().tolist() == [[3, 1, -1], [2, 2, 2]]
    assert out["pos_tags"].numpy().tolist() == [[b"PROPN", b"VERB", b""], [b"DET"] * 3]
    tensor = tf.constant(probs)
    keras.src.backend.set_keras_mask(tensor, tf.constant(mask))
    assert task.postprocess(tensor)["pos_prediction"].numpy().tolist() == [[3, 1, -1], [2, 2, 2]]
    no_mask = task.postprocess(probs)  # every position is a token
    assert no_mask["pos_prediction"].numpy().tolist() == [[3, 1, 0], [2, 2, 2]]
    assert "x_tags" not in Tagging("x", 4).postprocess(probs)


# -- in a multi-task model -------------------------------------------------------


def test_pos_and_crf_ner_train_jointly():
    model = pos_ner_model()
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    history = model.fit(TOKENS, {"pos": POS, "ner": NER}, epochs=16, batch_size=6, verbose=0)
    logs = history.history
    assert_finite_logs(history)
    assert logs["loss"][-1] < 0.3 * logs["loss"][0]
    assert logs["loss/ner"][-1] < 0.3 * logs["loss/ner"][0]
    assert logs["pos/accuracy"][0] < 0.5 < 0.95 < logs["pos/accuracy"][-1]
    assert logs["ner/accuracy"][0] < 0.5 < 0.95 < logs["ner/accuracy"][-1]
    assert logs["ner/entity_f1"][0] < 0.5 < 0.9 < logs["ner/entity_f1"][-1]

    # Batches without NER labels, in the same compiled train step: the NER
    # loss is exactly 0 and the CRF gets zero gradients, while POS (and the
    # shared trunk) still train.
    no_ner = {"pos": POS, "ner": np.full_like(NER, -1)}
    logs = model.fit(TOKENS, no_ner, epochs=1, batch_size=6, verbose=0).history
    assert_finite_logs(logs)
    assert logs["loss/ner"] == [0.0] and logs["loss/pos"][0] > 0.0
    crf, pos_head = model.get_layer("ner"), model.get_layer("pos")
    with tf.GradientTape() as tape:
        labels = {k: tf.constant(v) for k, v in no_ner.items()}
        loss = model.compute_loss(TOKENS, labels, model(TOKENS, training=True))
    crf_grads, pos_grads = tape.gradient(loss, [crf.trainable_weights, pos_head.trainable_weights])
    assert all(not np.any(g.numpy()) for g in crf_grads)
    assert all(np.isfinite(g.numpy()).all() and np.any(g.numpy()) for g in pos_grads)


def test_keras_round_trip_and_export_decode_padding_like_alone(tmp_path):
    model = pos_ner_model()
    rng = np.random.default_rng(0)
    crf = model.get_layer("ner")
    for weight in (crf.transitions, crf.start_transitions, crf.end_transitions):
        weight.assign(3.0 * rng.normal(size=weight.shape))
    batch = np.array([[1, 7, 4, 0, 0, 0], [2, 3, 8, 5, 6, 12]], "int32")
    alone = batch[:1, :3]

    def check(padded, single):
        for task in ("pos", "ner"):
            ids, tags = padded[f"{task}_prediction"], padded[f"{task}_tags"]
            assert ids[0, :3].tolist() == single[f"{task}_prediction"][0].tolist()
            assert tags[0, :3].tolist() == single[f"{task}_tags"][0].tolist()
            assert ids[0, 3:].tolist() == [-1] * 3 and tags[0, 3:].tolist() == [b""] * 3
            assert (ids[1] >= 0).all()

    def numpy(outputs):
        return {k: v.numpy() for k, v in outputs.items()}

    eager = numpy(model.postprocess(model(batch)))
    check(eager, numpy(model.postprocess(model(alone))))
    # Padding reaches post-processing as the Keras mask of the output (and
    # test_crf shows that decoding through padding would change the tags).
    mask = keras.src.backend.get_keras_mask(model(batch)["ner"])
    np.testing.assert_array_equal(mask.numpy(), batch > 0)

    loaded = run_model_saving_test(model, batch, tmp_path)
    reloaded = numpy(loaded.postprocess(loaded(batch)))
    for key in eager:
        np.testing.assert_array_equal(reloaded[key], eager[key], err_msg=key)

    serving = tf.saved_model.load(export_saved_model(model, tmp_path / "export"))
    serve = serving.signatures["serving_default"]
    served = numpy(serve(tokens=tf.constant(batch)))
    check(served, numpy(serve(tokens=tf.constant(alone))))
    for key in eager:
        np.testing.assert_array_equal(served[key], eager[key], err_msg=key)
    np.testing.assert_allclose(served["ner"], model(batch)["ner"].numpy(), atol=1e-5)


@pytest.mark.large
def test_train_step_compiles_with_xla():
    # Keras compiles train steps with XLA on GPUs (jit_compile="auto"): the
    # CRF loss gradient, Viterbi and entity counting must all compile.
    model = pos_ner_model()
    model.compile(optimizer=keras.optimizers.Adam(0.05), jit_compile=True)
    logs = model.fit(TOKENS, {"pos": POS, "ner": NER}, epochs=16, batch_size=6, verbose=0).history
    assert_finite_logs(logs)
    assert logs["loss"][-1] < 0.3 * logs["loss"][0]
    assert logs["ner/entity_f1"][-1] > 0.9
