"""Entity chunking and scores: worked examples read the way conlleval.pl reads
them, and the graph-mode Keras metrics against the plain functions."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasmtl.metrics.sequence_labeling import (
    EntityCounts,
    EntityF1,
    EntityPrecision,
    EntityRecall,
    entity_scores,
    extract_entities,
)

IOB2_TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
IOBES_TAGS = ["O", "B-PER", "I-PER", "E-PER", "S-PER", "B-LOC", "I-LOC", "E-LOC", "S-LOC"]


@pytest.mark.parametrize(
    "tags, expected",
    [
        # Well formed.
        ("B-PER I-PER O B-LOC", [("PER", 0, 1), ("LOC", 3, 3)]),
        # conlleval: O followed by I starts a chunk; so does the sentence start.
        ("O I-PER I-PER O", [("PER", 1, 2)]),
        ("I-LOC I-LOC", [("LOC", 0, 1)]),
        # A type change ends the chunk and starts another: B-PER I-LOC is two.
        ("B-PER I-LOC", [("PER", 0, 0), ("LOC", 1, 1)]),
        ("B-LOC I-PER I-PER", [("LOC", 0, 0), ("PER", 1, 2)]),
        # B after B (or I) of the same type: adjacent entities.
        ("B-PER B-PER", [("PER", 0, 0), ("PER", 1, 1)]),
        ("B-PER I-PER B-PER", [("PER", 0, 1), ("PER", 2, 2)]),
        # A chunk running to the sentence end is closed there.
        ("O B-LOC I-LOC", [("LOC", 1, 2)]),
        ("O O", []),
        # Types with hyphens: conlleval splits at the first hyphen.
        ("B-WORK-OF-ART I-WORK-OF-ART", [("WORK-OF-ART", 0, 1)]),
    ],
)
def test_iob2_chunks_like_conlleval(tags, expected):
    assert extract_entities(tags.split(), "IOB2") == expected


@pytest.mark.parametrize(
    "tags, expected",
    [
        ("B-PER I-PER E-PER S-LOC O", [("PER", 0, 2), ("LOC", 3, 3)]),
        # E without B: O followed by E starts a one-token chunk.
        ("O E-PER O", [("PER", 1, 1)]),
        # E ends its chunk, so E E is two chunks, and S always stands alone.
        ("E-PER E-PER", [("PER", 0, 0), ("PER", 1, 1)]),
        ("S-PER S-PER", [("PER", 0, 0), ("PER", 1, 1)]),
        ("B-PER S-PER", [("PER", 0, 0), ("PER", 1, 1)]),
        ("S-PER I-PER E-PER", [("PER", 0, 0), ("PER", 1, 2)]),
        # B without its E runs to the next chunk boundary or the sentence end.
        ("B-LOC I-LOC", [("LOC", 0, 1)]),
        ("B-LOC I-LOC O", [("LOC", 0, 1)]),
        ("B-LOC E-PER", [("LOC", 0, 0), ("PER", 1, 1)]),
    ],
)
def test_iobes_chunks(tags, expected):
    assert extract_entities(tags.split(), "IOBES") == expected


def test_entity_scores_worked_example():
    true = [
        "B-PER I-PER O B-LOC".split(),
        "B-LOC I-LOC I-LOC".split(),
        "O O".split(),
    ]
    pred = [
        "B-PER I-PER O B-PER".split(),  # PER right, LOC typed as PER
        "B-LOC I-LOC O".split(),  # right type, wrong end
        "O I-PER".split(),  # a spurious PER (I after O starts a chunk)
    ]
    # conlleval.pl: "found: 4 phrases; correct: 1", 3 phrases in the corpus:
    # precision 25.00%, recall 33.33%, FB1 28.57.
    scores = entity_scores(true, pred, "IOB2", per_type=True)
    assert (scores["true"], scores["predicted"], scores["correct"]) == (3, 4, 1)
    assert scores["precision"] == pytest.approx(0.25)
    assert scores["recall"] == pytest.approx(1 / 3)
    assert scores["f1"] == pytest.approx(2 / 7)
    assert scores["per_type"]["PER"] == {
        "precision": pytest.approx(1 / 3), "recall": 1.0, "f1": pytest.approx(0.5),
        "true": 1, "predicted": 3, "correct": 1,
    }
    assert scores["per_type"]["LOC"]["predicted"] == 1
    assert scores["per_type"]["LOC"]["f1"] == 0.0


def test_ill_formed_prediction_that_conlleval_counts_correct():
    # I-PER I-PER is read as one PER chunk at (0, 1): the same as B-PER I-PER.
    scores = entity_scores([["B-PER", "I-PER"]], [["I-PER", "I-PER"]])
    assert scores["correct"] == 1 and scores["f1"] == 1.0
    # B-PER B-PER is two chunks, neither matching (0, 1).
    scores = entity_scores([["B-PER", "I-PER"]], [["B-PER", "B-PER"]])
    assert (scores["true"], scores["predicted"], scores["correct"]) == (1, 2, 0)


def test_undefined_scores_are_zero():
    scores = entity_scores([["O", "O"]], [["O", "O"]])
    assert scores["precision"] == scores["recall"] == scores["f1"] == 0.0


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: extract_entities(["B-PER"], "BILOU"), "Invalid tagging scheme 'BILOU'"),
        (lambda: extract_entities(["O", "E-PER"], "IOB2"), r"'E-PER' at position 1.*IOB2"),
        (lambda: extract_entities(["PER"], "IOB2"), r"Invalid tag 'PER'"),
        (lambda: extract_entities(["B-"], "IOB2"), r"Invalid tag 'B-'"),
        (lambda: entity_scores([["O"]], [["O", "O"]]), r"Sentence 0 has 1 true tags and 2"),
        (lambda: entity_scores([["O"]], []), r"1 true and 0 predicted"),
        (lambda: EntityF1(["O", "X-PER"]), r"'X-PER' \(tag id 1\)"),
    ],
)
def test_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# conlleval.pl's chunk rules (prevTag, tag) as written in the script, with
# the E/S pairs of its IOBES variant; for IOB2 tags only the B/I/O pairs apply.
_PERL_ENDS = {("B", "B"), ("B", "O"), ("B", "S"), ("I", "B"), ("I", "S"), ("I", "O"),
              ("E", "E"), ("E", "I"), ("E", "O"), ("E", "S"), ("E", "B"),
              ("S", "E"), ("S", "I"), ("S", "O"), ("S", "S"), ("S", "B")}
_PERL_STARTS = {("B", "B"), ("I", "B"), ("O", "B"), ("S", "B"), ("E", "B"),
                ("B", "S"), ("I", "S"), ("O", "S"), ("S", "S"), ("E", "S"),
                ("O", "I"), ("S", "I"), ("E", "I"), ("S", "E"), ("E", "E"), ("O", "E")}


def _perl_end(prev, prev_type, tag, kind):
    return (prev, tag) in _PERL_ENDS or (prev != "O" and prev_type != kind)


def _perl_start(prev, prev_type, tag, kind):
    return (prev, tag) in _PERL_STARTS or (tag != "O" and prev_type != kind)


def conlleval_counts(true_seqs, pred_seqs):
    """(true, predicted, correct): conlleval.pl's main loop, line by line,
    sentences separated by a boundary line read as O O."""
    def split(tag):
        return tuple(tag.split("-", 1)) if "-" in tag else (tag, "")

    lines = []
    for true, pred in zip(true_seqs, pred_seqs):
        lines += [(split(t), split(p)) for t, p in zip(true, pred)] + [(("O", ""), ("O", ""))]
    found_true = found_pred = correct = 0
    in_correct = False
    last_c, last_g = ("O", ""), ("O", "")
    for c, g in lines:
        if in_correct:
            end_c, end_g = _perl_end(*last_c, *c), _perl_end(*last_g, *g)
            if end_c and end_g and last_g[1] == last_c[1]:
                in_correct = False
                correct += 1
            elif end_c != end_g or g[1] != c[1]:
                in_correct = False
        start_c, start_g = _perl_start(*last_c, *c), _perl_start(*last_g, *g)
        if start_c and start_g and g[1] == c[1]:
            in_correct = True
        found_true += start_c
        found_pred += start_g
        last_c, last_g = c, g
    return found_true, found_pred, correct + in_correct


@pytest.mark.parametrize("tags", [IOB2_TAGS, IOBES_TAGS])
def test_plain_scores_match_conlleval_main_loop(tags):
    rng = np.random.default_rng(2)
    true_seqs = [list(rng.choice(tags, size=rng.integers(0, 8))) for _ in range(300)]
    pred_seqs = [[t if rng.random() < 0.7 else str(rng.choice(tags)) for t in s]
                 for s in true_seqs]
    scheme = "IOBES" if "S-PER" in tags else "IOB2"
    scores = entity_scores(true_seqs, pred_seqs, scheme)
    want = conlleval_counts(true_seqs, pred_seqs)
    assert (scores["true"], scores["predicted"], scores["correct"]) == want
    assert 0 < want[2] < want[1]


def _random_batch(rng, tags, batch=16, time=7):
    """Random tag ids, ill-formed sequences included, with -1 padding."""
    y_true = rng.integers(0, len(tags), size=(batch, time))
    y_pred = np.where(rng.random((batch, time)) < 0.7, y_true, rng.integers(0, len(tags), (batch, time)))
    lengths = rng.integers(0, time + 1, size=batch)
    padding = np.arange(time)[None] >= lengths[:, None]
    return np.where(padding, -1, y_true), np.where(padding, -1, y_pred), lengths


@pytest.mark.parametrize("scheme, tags", [("IOB2", IOB2_TAGS), ("IOBES", IOBES_TAGS)])
def test_graph_metrics_agree_with_plain_functions(scheme, tags):
    rng = np.random.default_rng(0)
    metrics = [EntityCounts(tags, scheme), EntityPrecision(tags, scheme),
               EntityRecall(tags, scheme), EntityF1(tags, scheme)]

    @tf.function(input_signature=[tf.TensorSpec((None, None), tf.int32)] * 2)
    def update(y_true, y_pred):
        for metric in metrics:
            metric.update_state(y_true, y_pred)

    true_seqs, pred_seqs = [], []
    for _ in range(3):
        y_true, y_pred, lengths = _random_batch(rng, tags)
        update(y_true, y_pred)
        for t, p, n in zip(y_true, y_pred, lengths):
            true_seqs.append([tags[i] for i in t[:n]])
            pred_seqs.append([tags[i] for i in p[:n]])
    want = entity_scores(true_seqs, pred_seqs, scheme)
    got = {k: float(v) for k, v in metrics[0].result().items()}
    assert want["true"] > 20 and 0 < want["correct"] < want["predicted"]
    for key in ("true", "predicted", "correct", "precision", "recall", "f1"):
        assert got[key] == pytest.approx(want[key], rel=1e-6), key
    assert float(metrics[1].result()) == pytest.approx(want["precision"], rel=1e-6)
    assert float(metrics[2].result()) == pytest.approx(want["recall"], rel=1e-6)
    assert float(metrics[3].result()) == pytest.approx(want["f1"], rel=1e-6)


def test_graph_metric_scores_masks_and_weights():
    metric = EntityCounts(IOB2_TAGS)
    y_true = np.array([[1, 2, 0, 3], [3, 4, 0, 0]])
    # Sentence 0 predicted exactly; sentence 1 with its LOC and a spurious PER.
    y_pred_ids = np.array([[1, 2, 0, 3], [3, 4, 1, 0]])
    scores = np.eye(len(IOB2_TAGS), dtype="float32")[y_pred_ids]  # argmax'd
    metric.update_state(y_true, scores, sample_weight=np.array([1.0, 2.0]))
    result = {k: float(v) for k, v in metric.result().items()}
    # weights: sentence 0 counts 1x (2 true, 2 correct), sentence 1 2x
    # (1 true, 2 predicted, 1 correct).
    assert (result["true"], result["predicted"], result["correct"]) == (4.0, 6.0, 4.0)
    metric.reset_state()
    # -1 in y_true and weight 0 both hide a position: the predicted B-PER at
    # the end of each sentence is padding and counts nowhere.
    metric.update_state(
        np.array([[1, 2, 0, -1]]), np.array([[1, 2, 0, 1]]),
        sample_weight=np.array([[1.0, 1.0, 1.0, 1.0]]),
    )
    metric.update_state(np.array([[1, 0]]), np.array([[1, 1]]), np.array([[1.0, 0.0]]))
    result = {k: float(v) for k, v in metric.result().items()}
    assert (result["true"], result["predicted"], result["correct"]) == (2.0, 2.0, 2.0)


def test_graph_metric_compiles_with_xla():
    rng = np.random.default_rng(1)
    y_true, y_pred, _ = _random_batch(rng, IOBES_TAGS)
    eager, compiled = EntityCounts(IOBES_TAGS, "IOBES"), EntityCounts(IOBES_TAGS, "IOBES")
    eager.update_state(y_true, y_pred)
    tf.function(compiled.update_state, jit_compile=True)(y_true, y_pred)
    for key, value in eager.result().items():
        assert float(compiled.result()[key]) == float(value), key


def test_metric_config_round_trip():
    metric = EntityF1(IOBES_TAGS, "iobes", name="ner_f1")
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(metric))
    assert type(clone) is EntityF1
    assert clone.get_config() == metric.get_config()
    assert clone.scheme == "IOBES" and clone.name == "ner_f1"
