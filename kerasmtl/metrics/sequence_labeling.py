"""Entity-level scores of sequence labelling (NER, chunking), conlleval-style.

Two faces of one definition:

- plain functions on Python lists: `extract_entities(tags, scheme)` and
  `entity_scores(true_seqs, pred_seqs, scheme)`, for evaluation scripts;
- Keras metrics `EntityPrecision`, `EntityRecall`, `EntityF1` (thin
  subclasses of `EntityCounts`) on tag-id tensors, built from graph ops only
  (vectorised chunk start/end detection, no `py_function`), so they update
  inside a compiled train step, XLA included.

Chunks follow the rules of conlleval.pl (CoNLL-2000, Tjong Kim Sang), with the
IOBES extension used by the IOBES variants of that script: a tag is `O` or
`<prefix>-<type>` (split at the first hyphen, as conlleval does), and

```
a chunk starts at tag y after tag x iff  y != O and (y in {B, S} or x in {O, E, S}
                                                     or type(x) != type(y))
a chunk ends at tag x before tag y  iff  x != O and (x in {E, S} or y in {B, S, O}
                                                     or type(x) != type(y))
```

Sentence boundaries count as `O`. So ill-formed sequences are read the way
conlleval reads them: `O I-PER` starts a PER chunk, `B-PER I-LOC` is two
chunks, `B-PER B-PER` is two adjacent chunks, an `E-PER` after `O` is a
one-token chunk. For IOB2 these are exactly conlleval.pl's rules. An entity is
`(type, start, end)` with `end` inclusive; a predicted entity is correct only
if its type and both boundaries match a true one. Scores are micro-averaged
over entities, as fractions in [0, 1], and 0 where undefined.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from kerasmtl.autograph import skip_autograph

SCHEMES = {"IOB2": ("B", "I"), "IOBES": ("B", "I", "E", "S")}
_PREFIX_CODES = {"O": 0, "B": 1, "I": 2, "E": 3, "S": 4}


def check_scheme(scheme: str, where: str = "") -> str:
    """Returns the canonical name of `scheme` ("IOB2" or "IOBES")."""
    canonical = scheme.upper() if isinstance(scheme, str) else scheme
    if canonical not in SCHEMES:
        raise ValueError(
            f"Invalid tagging scheme {scheme!r}{where}. Expected 'IOB2' (also "
            "called BIO: B-TYPE begins an entity, I-TYPE continues it) or "
            "'IOBES' (adds E-TYPE ending and S-TYPE single-token entities)."
        )
    return canonical


def split_tag(tag: str, scheme: str = "IOB2", where: str = "") -> tuple[str, str]:
    """`(prefix, type)` of a tag: `("O", "")` or e.g. `("B", "PER")`.

    Raises a ValueError if the tag is not `O` or `<prefix>-<type>` with a
    prefix of `scheme`.

    Examples:

    >>> split_tag("B-PER")
    ('B', 'PER')
    >>> split_tag("I-NAME-OF-SHIP")  # conlleval splits at the first hyphen
    ('I', 'NAME-OF-SHIP')
    """
    scheme = check_scheme(scheme, where)
    if tag == "O":
        return "O", ""
    prefix, hyphen, kind = tag.partition("-") if isinstance(tag, str) else ("", "", "")
    if not hyphen or prefix not in SCHEMES[scheme] or not kind:
        allowed = ", ".join(f"{p}-TYPE" for p in SCHEMES[scheme])
        raise ValueError(
            f"Invalid tag {tag!r}{where} for the {scheme} scheme. Expected 'O' or "
            f"one of {allowed} (e.g. 'B-PER')."
        )
    return prefix, kind


def _chunk_starts(prev, cur) -> bool:
    (p, pt), (c, ct) = prev, cur
    return c != "O" and (c in ("B", "S") or p in ("O", "E", "S") or pt != ct)


def _chunk_ends(prev, cur) -> bool:
    (p, pt), (c, ct) = prev, cur
    return p != "O" and (p in ("E", "S") or c in ("B", "S", "O") or pt != ct)


def extract_entities(tags: Sequence[str], scheme: str = "IOB2") -> list[tuple[str, int, int]]:
    """The entities of one sentence's tags, as conlleval chunks them.

    Args:
        tags: sequence of str. One tag per token.
        scheme: str. `"IOB2"` or `"IOBES"`. Defaults to `"IOB2"`.

    Returns:
        list of `(type, start, end)`, `end` inclusive, in sentence order.

    Examples:

    >>> extract_entities(["B-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG"])
    [('PER', 0, 1), ('LOC', 3, 3), ('LOC', 4, 4), ('ORG', 5, 5)]
    >>> extract_entities(["B-PER", "E-PER", "S-LOC", "E-LOC"], "IOBES")
    [('PER', 0, 1), ('LOC', 2, 2), ('LOC', 3, 3)]
    """
    parsed = [split_tag(t, scheme, f" at position {i}") for i, t in enumerate(tags)]
    entities, start, prev = [], None, ("O", "")
    for i, cur in enumerate([*parsed, ("O", "")]):  # the sentence end acts as O
        if start is not None and _chunk_ends(prev, cur):
            entities.append((prev[1], start, i - 1))
            start = None
        if _chunk_starts(prev, cur):
            start = i
        prev = cur
    return entities


def entity_scores(
    true_seqs: Sequence[Sequence[str]],
    pred_seqs: Sequence[Sequence[str]],
    scheme: str = "IOB2",
    per_type: bool = False,
) -> dict:
    """Micro-averaged entity precision, recall and F1 over sentences.

    Args:
        true_seqs: sequence of sentences, each a sequence of true tags.
        pred_seqs: the predicted tags, same lengths.
        scheme: str. `"IOB2"` or `"IOBES"`. Defaults to `"IOB2"`.
        per_type: bool. Whether to add `"per_type"`: the same scores for
            each entity type. Defaults to `False`.

    Returns:
        dict with `"precision"`, `"recall"`, `"f1"` (fractions in [0, 1], 0
        when undefined) and the counts `"true"`, `"predicted"`, `"correct"`.

    Examples:

    >>> true = [["B-PER", "I-PER", "O", "B-LOC"]]
    >>> pred = [["B-PER", "I-PER", "O", "B-ORG"]]
    >>> s = entity_scores(true, pred)
    >>> s["correct"], s["true"], s["predicted"], s["f1"]
    (1, 2, 2, 0.5)
    """
    if len(true_seqs) != len(pred_seqs):
        raise ValueError(
            f"entity_scores got {len(true_seqs)} true and {len(pred_seqs)} "
            "predicted sentences; pass one predicted tag sequence per sentence."
        )
    found_true, found_pred, correct = Counter(), Counter(), Counter()
    for i, (true, pred) in enumerate(zip(true_seqs, pred_seqs)):
        if len(true) != len(pred):
            raise ValueError(
                f"Sentence {i} has {len(true)} true tags and {len(pred)} predicted "
                "tags; pass one predicted tag per token."
            )
        true_entities = extract_entities(true, scheme)
        pred_entities = extract_entities(pred, scheme)
        found_true.update(e[0] for e in true_entities)
        found_pred.update(e[0] for e in pred_entities)
        correct.update(e[0] for e in set(true_entities) & set(pred_entities))
    scores = _scores(sum(correct.values()), sum(found_true.values()), sum(found_pred.values()))
    if per_type:
        scores["per_type"] = {
            kind: _scores(correct[kind], found_true[kind], found_pred[kind])
            for kind in sorted(set(found_true) | set(found_pred))
        }
    return scores


def _scores(correct: int, true: int, predicted: int) -> dict:
    precision = correct / predicted if predicted else 0.0
    recall = correct / true if true else 0.0
    f1 = 2 * correct / (true + predicted) if true + predicted else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "true": true,
        "predicted": predicted,
        "correct": correct,
    }


# -- graph ops ----------------------------------------------------------------

_CODES = "OBIES"  # the prefix of each code in _PREFIX_CODES
_START_TABLE = np.array(
    [_chunk_starts((p, "T"), (c, "T")) for p in _CODES for c in _CODES], bool
)
_END_TABLE = np.array([_chunk_ends((p, "T"), (c, "T")) for p in _CODES for c in _CODES], bool)


def tag_tables(tags: Sequence[str], scheme: str) -> tuple[np.ndarray, np.ndarray]:
    """Per tag id: its prefix code (O=0, B=1, I=2, E=3, S=4) and its type id
    (-1 for `O`); the constant tables the graph-mode counting gathers from."""
    parsed = [split_tag(t, scheme, f" (tag id {i})") for i, t in enumerate(tags)]
    types = sorted({kind for p, kind in parsed if p != "O"})
    prefixes = np.array([_PREFIX_CODES[p] for p, _ in parsed], "int32")
    type_ids = np.array([types.index(k) if p != "O" else -1 for p, k in parsed], "int32")
    return prefixes, type_ids


@skip_autograph
def count_entities(
    y_true, y_pred, prefixes, type_ids, sample_weight=None
) -> tuple:
    """Weighted counts `(true, predicted, correct)` of entities in a batch.

    Graph ops only. Positions where `y_true` or `y_pred` is negative, or the
    sample weight is 0, count as `O` (padding, missing labels); each entity
    counts with the sample weight of its first token.

    Args:
        y_true: int tensor `[batch, time]`. True tag ids, `-1` for padding.
        y_pred: int tensor `[batch, time]` of predicted tag ids, or scores
            `[batch, time, num_tags]` (their argmax is taken).
        prefixes, type_ids: int arrays from `tag_tables`.
        sample_weight: optional float tensor `[batch]` or `[batch, time]`.

    Returns:
        three float32 scalars.
    """
    y_true = ops.cast(ops.convert_to_tensor(y_true), "int32")
    y_pred = ops.convert_to_tensor(y_pred)
    if len(y_pred.shape) == len(y_true.shape) + 1:
        y_pred = ops.argmax(y_pred, axis=-1)
    y_pred = ops.cast(y_pred, "int32")
    real = ops.logical_and(y_true >= 0, y_pred >= 0)
    weights = ops.ones(ops.shape(y_true), "float32")
    if sample_weight is not None:
        sample_weight = ops.cast(ops.convert_to_tensor(sample_weight), "float32")
        while len(sample_weight.shape) < len(y_true.shape):
            sample_weight = ops.expand_dims(sample_weight, -1)
        weights = weights * sample_weight
        real = ops.logical_and(real, weights > 0)
    true_start, true_end, true_type = _chunks(y_true, real, prefixes, type_ids)
    pred_start, pred_end, pred_type = _chunks(y_pred, real, prefixes, type_ids)
    same = ops.logical_and(
        ops.logical_and(true_start, pred_start),
        ops.logical_and(true_type == pred_type, true_end == pred_end),
    )

    def total(flags):
        return ops.sum(ops.where(flags, weights, 0.0))

    return total(true_start), total(pred_start), total(same)


def _chunks(ids, real, prefixes, type_ids):
    """Chunk starts (bool `[batch, time]`), the end position of the chunk
    starting at each start, and the type at each position."""
    safe = ops.clip(ids, 0, len(prefixes) - 1)
    prefix = ops.where(real, ops.take(ops.convert_to_tensor(prefixes), safe), 0)
    kind = ops.where(real, ops.take(ops.convert_to_tensor(type_ids), safe), -1)
    # Neighbours, with O (prefix 0, type -1) beyond the sentence edges.
    prev_prefix = ops.pad(prefix[:, :-1], [[0, 0], [1, 0]])
    prev_kind = ops.pad(kind[:, :-1], [[0, 0], [1, 0]], constant_values=-1)
    next_prefix = ops.pad(prefix[:, 1:], [[0, 0], [0, 1]])
    next_kind = ops.pad(kind[:, 1:], [[0, 0], [0, 1]], constant_values=-1)
    inside = prefix != 0
    # The prefix rules as 5x5 tables (previous x current prefix code), made
    # from the plain functions above so both faces share one definition; a
    # change of type between neighbours is checked separately.
    starts = ops.logical_or(
        ops.take(_START_TABLE, prev_prefix * 5 + prefix),
        ops.logical_and(inside, prev_kind != kind),
    )
    ends = ops.logical_or(
        ops.take(_END_TABLE, prefix * 5 + next_prefix),
        ops.logical_and(inside, next_kind != kind),
    )
    # Starts and ends alternate along a row (s1 <= e1 < s2 <= e2 ...), so the
    # k-th start's chunk ends at the k-th end: sorting puts each row's end
    # positions first, in order, and the k-th is gathered for each start.
    length = ops.shape(ids)[1]
    positions = ops.arange(length, dtype="int32")[None, :]
    end_positions = ops.sort(ops.where(ends, positions, positions + length), axis=1)
    rank = ops.clip(ops.cumsum(ops.cast(starts, "int32"), axis=1) - 1, 0, length - 1)
    chunk_end = ops.take_along_axis(end_positions, rank, axis=1)
    return starts, ops.where(starts, chunk_end, -1), kind


@keras.saving.register_keras_serializable(package="kerasmtl")
class EntityCounts(keras.metrics.Metric):
    """Running counts of true, predicted and correct entities (conlleval).

    `update_state(y_true, y_pred, sample_weight=None)` takes true tag ids
    `[batch, time]` (`-1` marks padding and missing labels) and predicted tag
    ids `[batch, time]` or tag scores `[batch, time, num_tags]`; positions
    with sample weight 0 are ignored. `result()` is a dict of the counts and
    the precision, recall and F1; `EntityPrecision`, `EntityRecall` and
    `EntityF1` report one of them.

    Args:
        tags: list of str. The tag of each tag id, e.g. `["O", "B-PER",
            "I-PER"]`.
        scheme: str. `"IOB2"` or `"IOBES"`. Defaults to `"IOB2"`.
        name: str. The metric's name.
        dtype: the metric's dtype.

    Examples:

    >>> m = EntityF1(["O", "B-PER", "I-PER"])
    >>> m.update_state([[1, 2, 0, -1]], [[1, 2, 1, 2]])  # last token is padding
    >>> round(float(m.result()), 4)  # 1 correct of 1 true and 2 predicted
    0.6667
    """

    def __init__(self, tags: Sequence[str], scheme: str = "IOB2", name="entity_counts", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.scheme = check_scheme(scheme, f" of metric '{name}'")
        self.tags = list(tags)
        self._prefixes, self._type_ids = tag_tables(self.tags, self.scheme)
        self.true_entities = self.add_variable(shape=(), initializer="zeros", name="true_entities")
        self.predicted_entities = self.add_variable(
            shape=(), initializer="zeros", name="predicted_entities"
        )
        self.correct_entities = self.add_variable(
            shape=(), initializer="zeros", name="correct_entities"
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        self.update_counts(self.count(y_true, y_pred, sample_weight))

    def count(self, y_true, y_pred, sample_weight=None):
        """This batch's `(true, predicted, correct)` entity counts, without
        updating the state (metrics on the same tags can share them)."""
        return count_entities(y_true, y_pred, self._prefixes, self._type_ids, sample_weight)

    def update_counts(self, counts):
        """Adds `(true, predicted, correct)` counts from `count` to the state."""
        for variable, value in zip(
            (self.true_entities, self.predicted_entities, self.correct_entities), counts
        ):
            variable.assign_add(ops.cast(value, self.dtype))

    def _precision(self):
        return ops.divide_no_nan(self.correct_entities, self.predicted_entities)

    def _recall(self):
        return ops.divide_no_nan(self.correct_entities, self.true_entities)

    def _f1(self):
        return ops.divide_no_nan(
            2.0 * self.correct_entities, self.true_entities + self.predicted_entities
        )

    def result(self):
        return {
            "precision": self._precision(),
            "recall": self._recall(),
            "f1": self._f1(),
            "true": ops.convert_to_tensor(self.true_entities),
            "predicted": ops.convert_to_tensor(self.predicted_entities),
            "correct": ops.convert_to_tensor(self.correct_entities),
        }

    def get_config(self):
        return {**super().get_config(), "tags": list(self.tags), "scheme": self.scheme}


@keras.saving.register_keras_serializable(package="kerasmtl")
class EntityPrecision(EntityCounts):
    """Entity precision: correct / predicted entities (see `EntityCounts`)."""

    def __init__(self, tags, scheme="IOB2", name="entity_precision", dtype=None):
        super().__init__(tags, scheme, name=name, dtype=dtype)

    def result(self):
        return self._precision()


@keras.saving.register_keras_serializable(package="kerasmtl")
class EntityRecall(EntityCounts):
    """Entity recall: correct / true entities (see `EntityCounts`)."""

    def __init__(self, tags, scheme="IOB2", name="entity_recall", dtype=None):
        super().__init__(tags, scheme, name=name, dtype=dtype)

    def result(self):
        return self._recall()


@keras.saving.register_keras_serializable(package="kerasmtl")
class EntityF1(EntityCounts):
    """Entity F1: 2 correct / (true + predicted entities) (see `EntityCounts`)."""

    def __init__(self, tags, scheme="IOB2", name="entity_f1", dtype=None):
        super().__init__(tags, scheme, name=name, dtype=dtype)

    def result(self):
        return self._f1()
