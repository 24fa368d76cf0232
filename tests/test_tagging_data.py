"""Tagged corpora: container, vocabularies, encoding, arrays, tf.data pipelines
and the synthetic corpus."""

import collections
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasmtl.data.text.container import (
    TaggedCorpus,
    concatenate_corpora,
    merge_corpora,
)
from kerasmtl.data.text.pipeline import encode_tags, tagging_dataset, to_arrays
from kerasmtl.data.text.synthetic import (
    synthetic_tag_vocabularies,
    synthetic_tagged_corpus,
)
from kerasmtl.data.text.vocabularies import (
    build_char_vocabulary,
    build_vocabulary,
    string_lookup,
    tag_vocabularies,
    tag_vocabulary,
)

TAGS = {"pos": ["DET", "NOUN", "VERB"], "ner": ["O", "B-PER"]}


def small_corpus():
    return TaggedCorpus(
        [["the", "cat", "sat"], ["Ann", "sat"], ["the", "dog"]],
        {
            "pos": [["DET", "NOUN", "VERB"], ["NOUN", "VERB"], None],
            "ner": [["O", "O", "O"], ["B-PER", "O"], ["O", "O"]],
        },
        ids=["a", "b", "c"],
    )


# -- container --------------------------------------------------------------------


@pytest.mark.parametrize(
    "tokens, tags, message",
    [
        ([["a"], []], None, r"Sentence 1 has no tokens"),
        ([["a", ""]], None, r"Sentence 0 has the token ''.*empty string is the padding"),
        ([["a", "b"]], {"ner": [["O"]]}, r"Task 'ner', sentence 0: 1 tags for 2 tokens"),
        ([["a"]], {"ner": [["O"], ["O"]]}, r"tags for 2 sentences, but the corpus has 1"),
        ([["a"]], {"ner-tags": [["O"]]}, r"Invalid task name 'ner-tags'"),
        ([["a"]], {"ner": [[""]]}, r"invalid tag ''"),
        ([["a", "b"]], {"pos": [["DET", "NOUN "]]},
         r"Task 'pos', sentence 0: invalid tag 'NOUN '.*without surrounding whitespace"),
    ],
)
def test_corpus_validation(tokens, tags, message):
    with pytest.raises(ValueError, match=message):
        TaggedCorpus(tokens, tags)


def test_corpus_views_and_stats():
    corpus = small_corpus()
    assert len(corpus) == 3 and corpus.num_tokens == 7
    assert corpus.tag_set("pos") == ["DET", "NOUN", "VERB"]
    assert corpus[1] == (["Ann", "sat"], {"pos": ["NOUN", "VERB"], "ner": ["B-PER", "O"]})
    assert corpus[1:].ids == ["b", "c"]
    stats = corpus.stats()
    assert stats["max_length"] == 3
    assert stats["tasks"]["pos"] == {
        "labelled_sentences": 2, "tags": {"DET": 1, "NOUN": 2, "VERB": 2}
    }
    with pytest.raises(ValueError, match=r"Unknown task 'chunk'.*\['pos', 'ner'\]"):
        corpus.tag_set("chunk")


def test_split_is_reproducible_and_partitions():
    corpus = synthetic_tagged_corpus(50, seed=3)
    rest, held = corpus.split(0.2, seed=7)
    assert (len(rest), len(held)) == (40, 10)
    assert sorted(rest.ids + held.ids) == sorted(corpus.ids)
    # Each part keeps corpus order.
    assert rest.ids == [i for i in corpus.ids if i in set(rest.ids)]
    assert corpus.split(0.2, seed=7)[1] == held
    assert corpus.split(0.2, seed=8)[1] != held
    with pytest.raises(ValueError, match=r"Expected a float in \(0, 1\)"):
        corpus.split(1.0)


def test_rename_unlabelled_concatenate_merge():
    corpus = small_corpus()
    assert corpus.rename_tasks({"pos": "upos"}).tasks == ["upos", "ner"]
    pos_only = TaggedCorpus([["Hi"]], {"pos": [["INTJ"]]}, ids=["d"])
    assert pos_only.with_unlabelled_task("ner").tags["ner"] == [None]
    both = concatenate_corpora(corpus, pos_only)
    assert len(both) == 4 and both.tags["ner"][3] is None and both.ids[3] == "d"

    ner = TaggedCorpus([["the", "dog"], ["Ann", "sat"]], {"ent": [["O", "O"], ["B-PER", "O"]]},
                       ids=["c", "b"])
    merged = merge_corpora(corpus, ner)
    assert merged.tags["ent"] == [None, ["B-PER", "O"], ["O", "O"]]
    other = TaggedCorpus([["Ann", "ran"]], {"x": [["N", "V"]]}, ids=["b"])
    with pytest.raises(ValueError, match=r"Sentence id 'b' has different tokens"):
        merge_corpora(corpus, other)
    with pytest.raises(ValueError, match=r"Tasks \['ner', 'pos'\] are in two corpora"):
        merge_corpora(corpus, corpus)


# -- vocabularies -----------------------------------------------------------------


def test_build_vocabulary_order_and_limits():
    corpus = TaggedCorpus([["b", "a", "c", "a"], ["B", "c", "[UNK]", "d"]])
    # a:2 c:2 then ties of 1 by string ('B' < 'b' < 'd'); '[UNK]' left out.
    assert build_vocabulary(corpus) == ["a", "c", "B", "b", "d"]
    assert build_vocabulary(corpus, min_count=2) == ["a", "c"]
    assert build_vocabulary(corpus, max_size=3) == ["a", "c", "B"]
    # Lowercased, '[UNK]' is the ordinary word '[unk]'.
    assert build_vocabulary(corpus, lowercase=True) == ["a", "b", "c", "[unk]", "d"]
    assert build_char_vocabulary(TaggedCorpus([["Éa", "aa"]]), lowercase=True) == ["a", "é"]
    with pytest.raises(ValueError, match=r"`min_count`. Expected an int >= 1"):
        build_vocabulary(corpus, min_count=0)


def test_string_lookup_layout():
    lookup = string_lookup(["the", "cat"])
    ids = lookup(tf.constant([["the", "cat", "zebra", ""]]))
    assert ids.numpy().tolist() == [[2, 3, 1, 0]]
    assert lookup.vocabulary_size() == 4


def test_tag_vocabulary_puts_outside_first():
    corpus = small_corpus()
    assert tag_vocabulary(corpus, "ner") == ["O", "B-PER"]
    dev = TaggedCorpus([["Rome"]], {"ner": [["B-LOC"]], "pos": [["PROPN"]]})
    assert tag_vocabularies([corpus, dev]) == {
        "pos": ["DET", "NOUN", "PROPN", "VERB"], "ner": ["O", "B-LOC", "B-PER"]
    }


# -- encoding and arrays ------------------------------------------------------------


def test_encode_tags_masks_missing_and_names_unknown_tags():
    encoded = encode_tags(small_corpus(), TAGS)
    assert [a.tolist() for a in encoded["pos"]] == [[0, 1, 2], [1, 2], [-1, -1]]
    assert [a.tolist() for a in encoded["ner"]] == [[0, 0, 0], [1, 0], [0, 0]]
    with pytest.raises(
        ValueError,
        match=r"Unknown tag 'B-PER' for task 'ner' in sentence 1 \(id 'b'\)\. "
        r"Known tags \(1\): \['O'\]",
    ):
        encode_tags(small_corpus(), {"ner": ["O"]})
    with pytest.raises(ValueError, match=r"Task 'chunk' .*corpus\.with_unlabelled_task\('chunk'\)"):
        encode_tags(small_corpus(), {"chunk": ["B-NP"]})


def test_to_arrays_padding_and_long_sentences():
    x, y = to_arrays(small_corpus(), TAGS)
    assert x.shape == (3, 3) and x.tolist()[1] == ["Ann", "sat", ""]
    assert y["pos"].dtype == np.int32
    assert y["pos"].tolist() == [[0, 1, 2], [1, 2, -1], [-1, -1, -1]]
    with pytest.raises(ValueError, match=r"Sentence 0 \(id 'a'\) has 3 tokens, more than "
                       r"max_length=2 .*on_long='split'"):
        to_arrays(small_corpus(), TAGS, max_length=2)
    x, y = to_arrays(small_corpus(), TAGS, max_length=2, on_long="split")
    # "the cat sat" -> "the cat" + "sat": no token lost.
    assert x.tolist() == [["the", "cat"], ["sat", ""], ["Ann", "sat"], ["the", "dog"]]
    assert y["ner"].tolist() == [[0, 0], [0, -1], [1, 0], [0, 0]]
    # Keras takes the strings as a tf.string tensor.
    assert string_lookup(["sat"])(tf.constant(x)).numpy()[1].tolist() == [2, 0]


# -- tf.data pipelines ---------------------------------------------------------------


def rows(dataset, key="tokens"):
    """Every (tokens, pos, ner) row of a dataset, with padding stripped."""
    out = []
    for x, y in dataset:
        tokens = x[key].numpy()
        for i in range(tokens.shape[0]):
            n = int((tokens[i] != b"").sum())
            assert (tokens[i, n:] == b"").all()
            assert all((y[t].numpy()[i, n:] == -1).all() for t in y)
            out.append((
                tuple(t.decode() for t in tokens[i, :n]),
                tuple(y["pos"].numpy()[i, :n].tolist()),
                tuple(y["ner"].numpy()[i, :n].tolist()),
            ))
    return out


def expected_rows(corpus, vocabularies):
    encoded = encode_tags(corpus, vocabularies)
    return [
        (tuple(s), tuple(p.tolist()), tuple(n.tolist()))
        for s, p, n in zip(corpus.tokens, encoded["pos"], encoded["ner"])
    ]


def test_dataset_batches_are_padded_per_batch():
    ds = tagging_dataset(small_corpus(), TAGS, batch_size=2, input_key="words")
    assert ds.element_spec == (
        {"words": tf.TensorSpec((None, None), tf.string)},
        {"pos": tf.TensorSpec((None, None), tf.int32),
         "ner": tf.TensorSpec((None, None), tf.int32)},
    )
    (x1, y1), (x2, y2) = list(ds)
    assert x1["words"].numpy().tolist() == [[b"the", b"cat", b"sat"], [b"Ann", b"sat", b""]]
    assert y1["pos"].numpy().tolist() == [[0, 1, 2], [1, 2, -1]]
    # The last, smaller batch is padded to its own longest sentence.
    assert x2["words"].shape == (1, 2) and y2["pos"].numpy().tolist() == [[-1, -1]]


@pytest.mark.parametrize("buckets", [None, [6, 9]])
def test_dataset_yields_every_sentence_exactly_once(buckets):
    corpus = synthetic_tagged_corpus(61, seed=5, missing_ner_rate=0.3)
    vocabularies = synthetic_tag_vocabularies()
    ds = tagging_dataset(corpus, vocabularies, batch_size=8, shuffle=True, seed=1,
                         bucket_boundaries=buckets)
    got = rows(ds)
    assert collections.Counter(got) == collections.Counter(expected_rows(corpus, vocabularies))
    assert got != expected_rows(corpus, vocabularies)  # shuffled
    assert rows(tagging_dataset(corpus, vocabularies, 8, shuffle=True, seed=1,
                                bucket_boundaries=buckets)) == got  # seeded
    if buckets:
        for x, _ in ds:
            lengths = (x["tokens"].numpy() != b"").sum(axis=1)
            assert len({int(np.searchsorted(buckets, n, side="right")) for n in lengths}) == 1
            assert len(lengths) <= 8


def test_dataset_splits_long_sentences_and_validates():
    corpus = synthetic_tagged_corpus(20, seed=2)
    vocabularies = synthetic_tag_vocabularies()
    ds = tagging_dataset(corpus, vocabularies, batch_size=4, max_length=5, on_long="split")
    chunks = rows(ds)
    assert max(len(r[0]) for r in chunks) == 5
    assert [t for r in chunks for t in r[0]] == [t for s in corpus.tokens for t in s]
    with pytest.raises(ValueError, match=r"Sentence 0 \(id 'synthetic-2-0'\) has \d+ tokens"):
        tagging_dataset(corpus, vocabularies, batch_size=4, max_length=3)
    with pytest.raises(ValueError, match=r"`bucket_boundaries`. Expected strictly increasing"):
        tagging_dataset(corpus, vocabularies, 4, bucket_boundaries=[8, 8])
    with pytest.raises(ValueError, match=r"`batch_size`. Expected an int >= 1"):
        tagging_dataset(corpus, vocabularies, 0)
    with pytest.raises(ValueError, match=r"`on_long`. Expected 'error' or 'split'"):
        tagging_dataset(corpus, vocabularies, 4, max_length=3, on_long="truncate")


# -- synthetic corpus ---------------------------------------------------------------


def test_synthetic_corpus_is_deterministic_and_consistent():
    start = time.perf_counter()
    corpus = synthetic_tagged_corpus(2000, seed=0, missing_ner_rate=0.25)
    assert time.perf_counter() - start < 2.0  # thousands of sentences, fast
    again = synthetic_tagged_corpus(2000, seed=0, missing_ner_rate=0.25)
    assert corpus == again
    assert synthetic_tagged_corpus(20, seed=1).tokens != corpus.tokens[:20]
    # Missingness does not change the sentences of a seed.
    assert synthetic_tagged_corpus(2000, seed=0).tokens == corpus.tokens
    unlabelled = sum(tags is None for tags in corpus.tags["ner"])
    assert 400 < unlabelled < 600
    assert all(tags is not None for tags in corpus.tags["pos"])
    assert tag_vocabularies(corpus) == synthetic_tag_vocabularies()

    pos_of = collections.defaultdict(set)
    for tokens, pos, ner in zip(corpus.tokens, corpus.tags["pos"], corpus.tags["ner"]):
        for k, (token, p) in enumerate(zip(tokens, pos)):
            pos_of[token].add(p)
            if ner is None:
                continue
            if ner[k] != "O":
                assert p == "PROPN"  # entities are PROPN spans
            if ner[k].startswith("I-"):
                assert ner[k - 1][2:] == ner[k][2:]  # valid IOB2
    assert pos_of["book"] == {"NOUN", "VERB"}  # context decides
    # A PROPN outside entities and a name of several entity types exist.
    assert "PROPN" in pos_of["Monday"]
    types = {n[2:] for tokens, ner in zip(corpus.tokens, corpus.tags["ner"]) if ner
             for t, n in zip(tokens, ner) if t == "Jordan"}
    assert types == {"PER", "LOC", "ORG"}


@pytest.mark.large
def test_bilstm_learns_synthetic_corpus():
    train = synthetic_tagged_corpus(1000, seed=0)
    test = synthetic_tagged_corpus(300, seed=1)
    vocabularies = synthetic_tag_vocabularies()
    vocab = build_vocabulary(train, min_count=2)
    inputs = keras.Input((None,), dtype="string", name="tokens")
    h = keras.layers.Embedding(len(vocab) + 2, 32, mask_zero=True)(
        string_lookup(vocab)(inputs))
    h = keras.layers.Bidirectional(keras.layers.LSTM(32, return_sequences=True))(h)
    outputs = {t: keras.layers.Dense(len(v), activation="softmax", name=t)(h)
               for t, v in vocabularies.items()}
    model = keras.Model(inputs, outputs)

    def masked_loss(y, p):
        mask = tf.cast(y >= 0, "float32")
        loss = keras.losses.sparse_categorical_crossentropy(tf.maximum(y, 0), p)
        return tf.reduce_sum(loss * mask) / tf.reduce_sum(mask)

    model.compile(keras.optimizers.Adam(0.01), {t: masked_loss for t in vocabularies})
    model.fit(tagging_dataset(train, vocabularies, 32, shuffle=True, bucket_boundaries=[8, 12]),
              epochs=6, verbose=0)
    x, y = to_arrays(test, vocabularies)
    predictions = model.predict(tf.constant(x), verbose=0)
    for task in vocabularies:
        known = y[task] >= 0
        accuracy = (predictions[task].argmax(-1)[known] == y[task][known]).mean()
        assert accuracy > 0.95, (task, accuracy)
