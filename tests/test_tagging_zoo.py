"""The joint POS + NER zoo models (`zoo/tagging.py`): built from a corpus'
vocabularies, trained on a `tagging_dataset`, single-task subsets, the
SavedModel that tags raw token strings, and the `--data` training recipe."""

import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasmtl as mtl
import zoo
from harness import assert_finite_logs
from kerasmtl.data import text as tagging_data
from kerasmtl.layers.text import WORD_SHAPES, CharacterEncoder, WordDropout, WordShape
from zoo.training import load_training_data

SIZES = {
    "pos_ner_bilstm_crf": {"word_dim": 8, "char_dim": 4, "char_filters": 4, "lstm_units": 4},
    "pos_ner_transformer": {"word_dim": 8, "char_dim": 4, "char_filters": 4,
                            "num_layers": 1, "num_heads": 2, "ff_dim": 8, "max_length": 32},
}
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "ud_ewt_uner"
# "Qwzyxt" is in no vocabulary and "ë" in no character vocabulary.
SENTENCE = ["John", "lives", "in", "Paris", "."]
SHORT = ["Zoë", "Qwzyxt"]


def tiny_corpus():
    """24 synthetic sentences (a quarter without NER labels), their tag
    vocabularies and the factory arguments that depend on the data."""
    train = mtl.data.synthetic_tagged_corpus(24, seed=0, missing_ner_rate=0.25)
    tags = tagging_data.tag_vocabularies(train, tasks=["pos", "ner"])
    kwargs = {
        "vocabulary": tagging_data.build_vocabulary(train, lowercase=True),
        "char_vocabulary": tagging_data.build_char_vocabulary(train),
        "pos_tags": tags["pos"],
        "ner_tags": tags["ner"],
    }
    return train, tags, kwargs


def padded(sentences):
    """The models' input: `{"tokens": [batch, time]}` padded with ""."""
    width = max(len(s) for s in sentences)
    return {"tokens": tf.constant([s + [""] * (width - len(s)) for s in sentences])}


def as_str(tensor):
    return tensor.numpy().astype(str).tolist()


@pytest.mark.parametrize("name", [
    # ~12 s each: the Transformer one runs with -m large
    pytest.param(n, marks=pytest.mark.large) if n == "pos_ner_transformer" else n
    for n in sorted(SIZES)
])
def test_builds_from_corpus_vocabularies_and_trains_on_a_tagging_dataset(name):
    train, tags, kwargs = tiny_corpus()
    model = zoo.create_model(name, **kwargs, **SIZES[name])
    assert model.task_names == ["pos", "ner"]
    assert model.get_task("ner").crf and not model.get_task("pos").crf
    # Index 0 is padding, 1 the OOV word, then the vocabulary.
    assert model.get_layer("word_embedding").input_dim == len(kwargs["vocabulary"]) + 2
    lookup = model.get_layer("word_lookup")
    first = kwargs["vocabulary"][0]
    assert lookup(tf.constant([["", "qwzyxt", first]])).numpy().tolist() == [[0, 1, 2]]

    # One batch per epoch: one shape, so the train step is traced only once.
    dataset = tagging_data.tagging_dataset(train, tags, batch_size=24, shuffle=True)
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    history = model.fit(dataset, epochs=3, verbose=0)
    assert_finite_logs(history)
    logs = history.history
    assert {"loss/pos", "loss/ner", "pos/accuracy", "ner/entity_f1"} <= set(logs)
    assert logs["loss"][-1] < logs["loss"][0]

    x, y = next(iter(dataset))
    outputs = model(x)
    batch, time = y["pos"].shape
    assert outputs["pos"].shape == (batch, time, len(tags["pos"]))
    assert outputs["ner"].shape == (batch, time, len(tags["ner"]))


@pytest.mark.large  # ~16 s
def test_fit_on_bucketed_batches_raises_no_keras_warning():
    train, tags, kwargs = tiny_corpus()
    dataset = tagging_data.tagging_dataset(train, tags, batch_size=5, shuffle=True,
                                           bucket_boundaries=[4, 8])
    # Bucketing used to leave the length unknown ("Your input ran out of
    # data" after each first epoch) and the model's bare tensor input did not
    # match the dataset's {"tokens": ...} ("The structure of `inputs` doesn't
    # match").
    assert int(dataset.cardinality()) == sum(1 for _ in dataset)
    model = zoo.create_model("pos_ner_bilstm_crf", **kwargs, **SIZES["pos_ner_bilstm_crf"])
    model.compile(optimizer="adam")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(dataset, validation_data=dataset, epochs=2, verbose=0)
        model.evaluate(dataset, verbose=0)
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "ran out of data" in m or "structure of `inputs`" in m], (
        messages)


@pytest.mark.parametrize("name", sorted(SIZES))
def test_tasks_subset_builds_a_single_task_model(name):
    _, tags, kwargs = tiny_corpus()
    pos = mtl.tasks.Tagging("pos", tags=tags["pos"])
    ner = mtl.tasks.Tagging("ner", tags=tags["ner"], scheme="IOB2", crf=True)
    for task in (pos, ner):
        model = zoo.create_model(name, tasks=[task], **kwargs, **SIZES[name])
        assert model.task_names == [task.name]
        outputs = model(padded([SENTENCE]))
        assert list(outputs) == [task.name]
        assert outputs[task.name].shape == (1, 5, task.num_tags)
        assert sorted(model.postprocess(outputs)) == [
            f"{task.name}_prediction", f"{task.name}_tags"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A tiny BiLSTM-CRF with strong random CRF transitions (so that decoding
    through padding would change the tags), exported and reloaded."""
    keras.utils.set_random_seed(1)
    _, tags, kwargs = tiny_corpus()
    model = zoo.create_model("pos_ner_bilstm_crf", **kwargs,
                             **SIZES["pos_ner_bilstm_crf"])
    crf = model.get_layer("ner")
    rng = np.random.default_rng(0)
    for weight in (crf.transitions, crf.start_transitions, crf.end_transitions):
        weight.assign(3.0 * rng.normal(size=weight.shape))
    path = mtl.export.export_saved_model(model, tmp_path_factory.mktemp("export"))
    serve = tf.saved_model.load(path).signatures["serving_default"]
    return model, tags, serve


def test_saved_model_tags_raw_token_strings_including_unknown_words(served):
    model, tags, serve = served
    batch = padded([SENTENCE, SHORT])
    outputs = serve(**batch)
    assert {"pos", "ner", "pos_tags", "ner_tags", "pos_prediction",
            "ner_prediction"} <= set(outputs)
    for task in ("pos", "ner"):
        strings = outputs[f"{task}_tags"]
        assert strings.dtype == tf.string and strings.shape == (2, 5)
        # Real tokens, unknown words and unknown characters included, get
        # tags of the task's vocabulary.
        assert set(as_str(strings)[0]) <= set(tags[task])
        assert set(as_str(strings)[1][:2]) <= set(tags[task])
        assert np.all(np.isfinite(outputs[task].numpy()))
    # The same numbers as the Keras model in-process.
    np.testing.assert_allclose(outputs["ner"].numpy(), model(batch)["ner"].numpy(),
                               atol=1e-5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a string"):
        serve(tokens=tf.constant([[1, 2]]))


@pytest.mark.parametrize("name", sorted(SIZES))
def test_padding_gets_empty_tags_and_does_not_change_tags_in_process(name):
    _, _, kwargs = tiny_corpus()
    model = zoo.create_model(name, **kwargs, **SIZES[name])
    together = model.postprocess(model(padded([SENTENCE, SHORT])))
    alone = model.postprocess(model(padded([SHORT])))
    for task in ("pos", "ner"):
        assert as_str(together[f"{task}_tags"])[1] == [*as_str(alone[f"{task}_tags"])[0], "", "", ""]


def test_saved_model_padding_gets_empty_tags_and_does_not_change_tags(served):
    _, _, serve = served
    together = serve(**padded([SENTENCE, SHORT]))
    alone = serve(**padded([SHORT]))
    for task in ("pos", "ner"):
        assert as_str(together[f"{task}_tags"])[1][2:] == ["", "", ""]
        assert together[f"{task}_prediction"].numpy()[1, 2:].tolist() == [-1] * 3
        assert as_str(together[f"{task}_tags"])[1][:2] == as_str(alone[f"{task}_tags"])[0]


def test_transformer_encoder_block_ignores_padding_and_passes_the_mask_on():
    keras.utils.set_random_seed(0)
    block = mtl.layers.TransformerEncoderBlock(num_heads=2, ff_dim=8)
    ids = keras.Input((None,), dtype="int32")
    x = block(keras.layers.Embedding(5, 4, mask_zero=True)(ids))
    # The mean pools real tokens only if the block hands the mask on; the real
    # tokens' outputs match only if attention skips the padding keys.
    model = keras.Model(ids, keras.layers.GlobalAveragePooling1D()(x))
    np.testing.assert_allclose(model(np.array([[1, 2, 0, 0]])), model(np.array([[1, 2]])),
                               atol=1e-5)
    # Called directly (no Keras mask on the tensor), the `mask` argument is
    # what keeps attention off the padding.
    tokens = np.random.default_rng(0).normal(size=(1, 4, 4)).astype("float32")
    np.testing.assert_allclose(
        block(tokens, mask=np.array([[True, True, False, False]]))[:, :2],
        block(tokens[:, :2]), atol=1e-5)
    clone = mtl.layers.TransformerEncoderBlock.from_config(block.get_config())
    assert clone.get_config() == block.get_config()
    assert (clone.num_heads, clone.ff_dim) == (2, 8)
    with pytest.raises(ValueError, match=r"`ff_dim`.*Received: ff_dim=0"):
        mtl.layers.TransformerEncoderBlock(num_heads=2, ff_dim=0)
    with pytest.raises(ValueError, match=r"input width 5 is not divisible by num_heads=2"):
        mtl.layers.TransformerEncoderBlock(num_heads=2, ff_dim=8)(np.zeros((1, 3, 5)))


def test_character_encoder_zeroes_and_masks_padding_tokens():
    encoder = CharacterEncoder(list("ab"), embedding_dim=2, filters=3)
    tokens = tf.constant([["ab", "", "zz"]])  # "zz": unknown characters
    features = encoder(tokens).numpy()
    assert features.shape == (1, 3, 3)
    assert np.all(features[0, 1] == 0.0) and np.any(features[0, [0, 2]] != 0.0)
    assert encoder.compute_mask(tokens).numpy().tolist() == [[True, False, True]]
    clone = CharacterEncoder.from_config(encoder.get_config())
    assert clone.get_config() == encoder.get_config()
    with pytest.raises(ValueError, match=r"`filters`.*Received: filters=0"):
        CharacterEncoder(list("ab"), filters=0)


@pytest.mark.parametrize("kernel_size", [2, 3, 5])
def test_compact_character_encoder_matches_the_full_width_one(kernel_size):
    # compact=True encodes distinct tokens once over as many character slots
    # as the longest needs; the features and gradients must be the full-width
    # layer's: tokens shorter than, one short of, equal to and longer than
    # max_chars, repeats, padding and unknown characters.
    kwargs = {"embedding_dim": 4, "filters": 5, "kernel_size": kernel_size, "max_chars": 6}
    full = CharacterEncoder(list("abcdef"), compact=False, **kwargs)
    compact = CharacterEncoder(list("abcdef"), **kwargs)
    full.build((None, None))
    compact.build((None, None))
    compact.set_weights(full.get_weights())
    batches = [
        [["ab", "", "abcdefab", "a"], ["abcde", "ab", "zz", ""]],
        [["a", "b"], ["", "a"]],  # short tokens only: 1-2 character slots
        [["abcdef", "fedcba"], ["abcde", "é"]],
    ]
    for batch in batches:
        tokens = tf.constant(batch)
        with tf.GradientTape(persistent=True) as tape:
            a, b = full(tokens), compact(tokens)
            loss_a, loss_b = tf.reduce_sum(a * a), tf.reduce_sum(b * b)
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-6, atol=1e-6)
        for ga, gb in zip(tape.gradient(loss_a, full.trainable_weights),
                          tape.gradient(loss_b, compact.trainable_weights)):
            np.testing.assert_allclose(tf.convert_to_tensor(gb).numpy(),
                                       tf.convert_to_tensor(ga).numpy(), rtol=1e-5, atol=1e-6)


def test_character_bilstm_reads_each_token_s_characters_only():
    # encoder="bilstm": each token's features are the last states of an LSTM
    # each way over its own characters, as if run on the unpadded sequence;
    # padding characters (shorter tokens, the batch's longest) change nothing,
    # padding tokens get zeros, compact and full width agree.
    kwargs = {"embedding_dim": 3, "filters": 4, "max_chars": 6, "encoder": "bilstm"}
    compact = CharacterEncoder(list("abcdef"), **kwargs)
    full = CharacterEncoder(list("abcdef"), compact=False, **kwargs)
    compact.build((None, None))
    full.build((None, None))
    full.set_weights(compact.get_weights())
    tokens = tf.constant([["ab", "", "abcdefab"], ["cab", "zz", ""]])
    features = compact(tokens).numpy()
    np.testing.assert_allclose(full(tokens).numpy(), features, rtol=1e-5, atol=1e-6)
    assert np.all(features[0, 1] == 0.0) and np.all(features[1, 2] == 0.0)
    for (row, col), token in {(0, 0): "ab", (0, 2): "abcdef", (1, 0): "cab",
                              (1, 1): "zz"}.items():
        ids = compact.lookup(tf.constant([list(token)]))
        alone = compact.rnn(compact.embedding(ids)).numpy()[0]  # no padding at all
        np.testing.assert_allclose(features[row, col], alone, rtol=1e-5, atol=1e-6)
    assert CharacterEncoder.from_config(compact.get_config()).encoder == "bilstm"
    with pytest.raises(ValueError, match=r"`filters` must be even.*Received: filters=3"):
        CharacterEncoder(list("ab"), filters=3, encoder="bilstm")
    with pytest.raises(ValueError, match=r'Expected "cnn" or "bilstm".*encoder=\'rnn\''):
        CharacterEncoder(list("ab"), encoder="rnn")


def test_tagger_with_a_character_bilstm_round_trips_and_exports(tmp_path):
    # char_encoder="bilstm" in the zoo tagger: the .keras file and the
    # SavedModel give the in-process scores.
    keras.utils.set_random_seed(0)
    _, _, kwargs = tiny_corpus()
    model = zoo.create_model("pos_ner_bilstm_crf", **kwargs, char_encoder="bilstm",
                             **SIZES["pos_ner_bilstm_crf"])
    assert model.get_layer("char_bilstm").encoder == "bilstm"
    batch = padded([SENTENCE, SHORT])
    expected = model(batch)
    model.save(tmp_path / "tagger.keras")
    reloaded = keras.saving.load_model(tmp_path / "tagger.keras")
    serve = tf.saved_model.load(mtl.export.export_saved_model(
        model, tmp_path / "export")).signatures["serving_default"]
    served = serve(**batch)
    for task in ("pos", "ner"):
        np.testing.assert_allclose(reloaded(batch)[task].numpy(), expected[task].numpy(),
                                   atol=1e-5)
        np.testing.assert_allclose(served[task].numpy(), expected[task].numpy(), atol=1e-5)


def test_synthetic_training_recipe_returns_datasets_and_model_arguments():
    data = load_training_data("pos_ner_bilstm_crf", "synthetic", batch_size=16, seed=0)
    assert "3000 train / 500 dev" in data.summary
    assert isinstance(data.train, tf.data.Dataset) and isinstance(data.dev, tf.data.Dataset)
    assert [t.name for t in data.tasks] == ["pos", "ner"]
    assert data.tasks[1].crf and data.tasks[1].scheme == "IOB2"
    assert sorted(data.model_kwargs) == ["char_vocabulary", "ner_tags", "pos_tags", "vocabulary"]
    expected = mtl.data.synthetic_tag_vocabularies()
    assert data.model_kwargs["pos_tags"] == expected["pos"]
    assert data.model_kwargs["ner_tags"] == expected["ner"]
    vocabulary = data.model_kwargs["vocabulary"]
    assert "the" in vocabulary and all(w == w.lower() for w in vocabulary)

    model = zoo.create_model("pos_ner_bilstm_crf", tasks=data.tasks, **data.model_kwargs,
                             **SIZES["pos_ner_bilstm_crf"])
    x, y = next(iter(data.train))
    assert x["tokens"].dtype == tf.string and x["tokens"].shape[0] <= 16
    outputs = model(x)
    assert outputs["ner"].shape[:2] == y["ner"].shape
    assert outputs["pos"].shape[:2] == y["pos"].shape


@pytest.mark.parametrize(
    "spec, message",
    [
        ("no/such/folder", r"--data 'no/such/folder' is neither 'synthetic', "
                           r"'tfds:conll2003' nor a ud_ewt_uner folder"),
        ("tfds:wikiann", r"Unknown tfds corpus 'wikiann'.*tfds:conll2003"),
    ],
)
def test_bad_data_spec_errors_clearly(spec, message):
    with pytest.raises(ValueError, match=message):
        load_training_data("pos_ner_bilstm_crf", spec, batch_size=8, seed=0)


def test_folder_without_joined_files_is_a_bad_data_spec(tmp_path):
    with pytest.raises(ValueError, match=r"nor a ud_ewt_uner folder \(one holding joined/"):
        load_training_data("pos_ner_bilstm_crf", str(tmp_path), batch_size=8, seed=0)


@pytest.mark.large
def test_train_zoo_model_on_synthetic_trains_evaluates_and_exports(tmp_path):
    from zoo.training import train_zoo_model

    lines = []
    result = train_zoo_model("pos_ner_bilstm_crf", "synthetic", epochs=1,
                             export_dir=str(tmp_path / "export"), print_fn=lines.append)
    assert set(result["report"]) == {"pos", "ner"}
    assert result["report"]["pos"]["accuracy"] > 0.5
    assert (tmp_path / "export" / "1").is_dir()
    assert any(line.startswith("  ner ") for line in lines)


@pytest.mark.large
def test_ud_ewt_uner_recipe():
    if not (SHARED / "joined").is_dir():
        pytest.skip(f"no UD-EWT/UNER data at {SHARED}")
    data = load_training_data("pos_ner_bilstm_crf", str(SHARED), batch_size=32, seed=0)
    assert "12543 train / 2001 dev" in data.summary
    assert len(data.model_kwargs["pos_tags"]) == 17
    assert data.model_kwargs["ner_tags"] == [
        "O", "B-LOC", "B-ORG", "B-PER", "I-LOC", "I-ORG", "I-PER"]


def test_word_dropout_replaces_known_words_in_training_only(tmp_path):
    ids = tf.constant(np.tile(np.arange(10, dtype="int64"), (200, 1)))
    layer = WordDropout(0.3, seed=0)
    np.testing.assert_array_equal(layer(ids).numpy(), ids.numpy())
    dropped = layer(ids, training=True).numpy()
    kept_ids = dropped[:, :2]
    np.testing.assert_array_equal(kept_ids, ids.numpy()[:, :2])  # padding, OOV
    changed = dropped[:, 2:] != ids.numpy()[:, 2:]
    assert np.all(dropped[:, 2:][changed] == 1)  # replaced by the OOV id
    assert 0.25 < changed.mean() < 0.35
    assert WordDropout.from_config(layer.get_config()).rate == 0.3
    with pytest.raises(ValueError, match=r"`rate`.*\[0, 1\).*rate=1"):
        WordDropout(1.0)
    # in a zoo tagger: built, saved and loaded with its config
    model = zoo.create_model("pos_ner_bilstm_crf", word_dim=8, char_filters=4,
                             lstm_units=4, word_dropout=0.1)
    assert model.get_layer("word_dropout").rate == 0.1
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.get_layer("word_dropout").rate == 0.1


def _python_word_shape(token):
    # Reimers and Gurevych's casing rule, with str methods (the reference).
    if not token:
        return "padding"
    digits = sum(c.isdigit() for c in token)
    if token.isdigit():
        return "numeric"
    if digits / len(token) > 0.5:
        return "mainly_numeric"
    if token.islower():
        return "all_lower"
    if token.isupper():
        return "all_upper"
    if token[0].isupper():
        return "initial_upper"
    if digits:
        return "contains_digit"
    return "other"


def test_word_shape_matches_python_casing_rules_in_graph_and_saved_model(tmp_path):
    tokens = ["", "Paris", "paris", "PARIS", "1999", "12:30", "A4", "x1y2z",
              "McDonald", "iPhone", "3Com", ",", "--", "Zoë", "ÉTÉ", "été", "e.g.",
              "U.S.", "١٢٣", "$5", "D'Arcy"]
    expected = [_python_word_shape(t) for t in tokens]
    layer = WordShape()
    got = layer(tf.constant([tokens])).numpy()[0]
    assert [WORD_SHAPES[i] for i in got] == expected
    assert layer(tf.constant([tokens])).dtype == tf.int32

    # in a zoo tagger, saved (.keras) and exported: the same features
    model = zoo.create_model("pos_ner_bilstm_crf", word_dim=8, char_filters=4,
                             lstm_units=4, casing_dim=3)
    assert model.get_layer("casing_embedding").output_dim == 3
    assert model.get_layer("token_features").output.shape[-1] == 8 + 4 + 3
    batch = padded([SENTENCE, SHORT])
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded(batch)["ner"].numpy(), model(batch)["ner"].numpy(),
                               atol=1e-6)
    path = mtl.export.export_saved_model(model, str(tmp_path / "export"))
    serve = tf.saved_model.load(path).signatures["serving_default"]
    np.testing.assert_allclose(serve(**batch)["ner"].numpy(), model(batch)["ner"].numpy(),
                               atol=1e-5)


def test_variational_dropout_drops_the_same_features_at_every_token(tmp_path):
    model = zoo.create_model("pos_ner_bilstm_crf", word_dim=8, char_filters=4,
                             lstm_units=4, dropout=0.5, variational_dropout=True,
                             recurrent_dropout=0.25)
    for name in ("token_dropout", "bilstm_dropout_0"):
        assert isinstance(model.get_layer(name), keras.layers.SpatialDropout1D)
    assert model.get_layer("bilstm_0").forward_layer.recurrent_dropout == 0.25
    features = model.get_layer("token_features").output
    both = keras.Model(model.inputs, [features, model.get_layer("token_dropout")(features)])
    batch = padded([SENTENCE, SHORT])
    keras.utils.set_random_seed(0)
    before, after = (t.numpy()[0, :len(SENTENCE)] for t in both(batch, training=True))
    # One mask per sentence: each feature is scaled by 0 (dropped) or by
    # 1 / (1 - 0.5) at every token where it is nonzero, never a mix.
    scale = np.where(before != 0, after / np.where(before != 0, before, 1), np.nan)
    per_feature = [np.unique(np.round(col[~np.isnan(col)], 4)) for col in scale.T]
    assert all(len(values) <= 1 for values in per_feature), per_feature
    assert {float(v[0]) for v in per_feature if len(v)} == {0.0, 2.0}
    # Inference is deterministic, and the settings survive saving.
    np.testing.assert_array_equal(model(batch)["ner"].numpy(), model(batch)["ner"].numpy())
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.get_layer("bilstm_dropout_0"), keras.layers.SpatialDropout1D)
    np.testing.assert_allclose(loaded(batch)["ner"].numpy(), model(batch)["ner"].numpy(),
                               atol=1e-6)


def test_numpy_string_arrays_are_taken_by_fit_evaluate_and_predict():
    # Keras' array adapter refuses numpy string arrays ("Invalid dtype:
    # str96"); the model turns them into tf.string tensors.
    x, y = zoo.registry.get_entry("pos_ner_bilstm_crf").example_data()
    model = zoo.create_model("pos_ner_bilstm_crf", word_dim=8, char_filters=4, lstm_units=4)
    model.compile(optimizer="adam")
    tokens = x["tokens"].numpy()  # bytes, dtype object
    as_str = tokens.astype(str)  # dtype <U..
    model.fit({"tokens": as_str}, y, epochs=1, batch_size=4, verbose=0,
              validation_data=({"tokens": tokens}, y))
    assert np.isfinite(model.evaluate({"tokens": as_str}, y, verbose=0)[0])
    want = model.predict(x, verbose=0)
    for given in (tokens, as_str, as_str.astype(object)):
        got = model.predict({"tokens": given}, verbose=0)
        for name in want:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
