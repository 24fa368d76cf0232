"""Vocabularies of a `TaggedCorpus`: words and characters for a
`keras.layers.StringLookup` (`build_vocabulary`, `build_char_vocabulary`,
`string_lookup`), and the tags of each task (`tag_vocabulary`,
`tag_vocabularies`).

Pipelines yield the raw token strings, not ids: a model maps them with a
`keras.layers.StringLookup` built from `build_vocabulary` (see `string_lookup`),
so its exported SavedModel takes strings.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

import keras

from kerasmtl.data.text.container import OOV_TOKEN, PAD_TOKEN, TaggedCorpus


def _as_corpora(corpus) -> list[TaggedCorpus]:
    if isinstance(corpus, TaggedCorpus):
        return [corpus]
    corpora = list(corpus)
    if not all(isinstance(c, TaggedCorpus) for c in corpora):
        raise ValueError("Expected a TaggedCorpus or a sequence of TaggedCorpus.")
    return corpora


def _ranked(counts: collections.Counter, min_count: int, max_size: int | None):
    if min_count < 1:
        raise ValueError(
            f"Invalid value for argument `min_count`. Expected an int >= 1. "
            f"Received: min_count={min_count}"
        )
    if max_size is not None and max_size < 1:
        raise ValueError(
            f"Invalid value for argument `max_size`. Expected an int >= 1 or "
            f"None. Received: max_size={max_size}"
        )
    # Most frequent first, ties broken by the string, so the same corpus
    # always gives the same list (and the same embedding rows).
    ranked = sorted(
        (item for item, n in counts.items() if n >= min_count),
        key=lambda item: (-counts[item], item),
    )
    return ranked if max_size is None else ranked[:max_size]


def build_vocabulary(
    corpus: TaggedCorpus | Sequence[TaggedCorpus],
    min_count: int = 1,
    max_size: int | None = None,
    lowercase: bool = False,
) -> list[str]:
    """Word vocabulary for `keras.layers.StringLookup(vocabulary=...)`.

    The list holds neither the padding token `""` nor the OOV token `"[UNK]"`:
    with `StringLookup(vocabulary=vocab, mask_token="")` (see `string_lookup`)
    index 0 is padding, index 1 is every out-of-vocabulary token (words rarer
    than `min_count`, past `max_size`, or unseen in `corpus`), and
    `vocab[k]` is index `k + 2`.

    Args:
        corpus: `TaggedCorpus` or a list of them (e.g. train only: words seen
            only in dev should stay OOV to measure OOV accuracy honestly).
        min_count: int >= 1. Keep words seen at least this often. Defaults to 1.
        max_size: int or None. Keep at most this many words (the most frequent).
            Defaults to `None` (all).
        lowercase: bool. Count lowercased words. The model must then lowercase
            its input before the lookup (`tf.strings.lower`). Defaults to
            `False`.

    Returns:
        list of str, most frequent first, ties in string order.

    Examples:

    >>> corpus = TaggedCorpus([["the", "cat"], ["the", "dog"]])
    >>> build_vocabulary(corpus)
    ['the', 'cat', 'dog']
    >>> build_vocabulary(corpus, min_count=2)
    ['the']
    """
    counts = collections.Counter()
    for c in _as_corpora(corpus):
        for sentence in c.tokens:
            counts.update([t.lower() for t in sentence] if lowercase else sentence)
    counts.pop(OOV_TOKEN, None)
    return _ranked(counts, min_count, max_size)


def build_char_vocabulary(
    corpus: TaggedCorpus | Sequence[TaggedCorpus],
    min_count: int = 1,
    max_size: int | None = None,
    lowercase: bool = False,
) -> list[str]:
    """Character vocabulary (Unicode code points) for a character-level
    `StringLookup`.

    Characters are Python string elements, i.e. code points: split tokens in
    the model with `tf.strings.unicode_split(tokens, "UTF-8")` (not
    `bytes_split`, which would cut non-ASCII characters into bytes). OOV and
    padding work as in `build_vocabulary`.

    Args:
        corpus: `TaggedCorpus` or a list of them.
        min_count: int >= 1. Defaults to 1.
        max_size: int or None. Defaults to `None`.
        lowercase: bool. Defaults to `False`.

    Returns:
        list of single-character str, most frequent first, ties in order.

    Examples:

    >>> build_char_vocabulary(TaggedCorpus([["aab", "ça"]]))
    ['a', 'b', 'ç']
    """
    counts = collections.Counter()
    for c in _as_corpora(corpus):
        for sentence in c.tokens:
            for token in sentence:
                counts.update(token.lower() if lowercase else token)
    return _ranked(counts, min_count, max_size)


def string_lookup(
    vocabulary: Sequence[str], num_oov_indices: int = 1, name: str | None = None
) -> keras.layers.StringLookup:
    """A `StringLookup` for token (or character) strings padded with `""`.

    Index 0 is the padding `""` (the mask token), indices `1..num_oov_indices`
    are out-of-vocabulary strings, then `vocabulary` in order; the layer's
    `vocabulary_size()` is `len(vocabulary) + 1 + num_oov_indices`.

    Examples:

    >>> import tensorflow as tf
    >>> lookup = string_lookup(["the", "cat"])
    >>> lookup(tf.constant([["the", "dog", ""]])).numpy().tolist()
    [[2, 1, 0]]
    """
    return keras.layers.StringLookup(
        vocabulary=list(vocabulary),
        mask_token=PAD_TOKEN,
        oov_token=OOV_TOKEN,
        num_oov_indices=num_oov_indices,
        name=name,
    )


def tag_vocabulary(
    corpus: TaggedCorpus | Sequence[TaggedCorpus], task: str, outside: str = "O"
) -> list[str]:
    """The tags of `task` in `corpus`: `outside` (IOB's `"O"`) first when it
    occurs, then the others sorted. Position `k` is label id `k`.

    Pass all splits (e.g. `[train, dev]`) so that a tag seen only in dev does
    not make `encode_tags` fail.

    Examples:

    >>> corpus = TaggedCorpus([["Ann", "sings"]], {"ner": [["B-PER", "O"]]})
    >>> tag_vocabulary(corpus, "ner")
    ['O', 'B-PER']
    """
    tags = set()
    for c in _as_corpora(corpus):
        tags.update(c.tag_set(task))
    ordered = sorted(tags - {outside})
    return [outside, *ordered] if outside in tags else ordered


def tag_vocabularies(
    corpus: TaggedCorpus | Sequence[TaggedCorpus],
    tasks: Sequence[str] | None = None,
    outside: str = "O",
) -> dict[str, list[str]]:
    """`{task: tag_vocabulary(corpus, task)}` for `tasks` (default: every task
    of `corpus`, or of any of the corpora given)."""
    corpora = _as_corpora(corpus)
    if tasks is None:
        tasks = list(dict.fromkeys(t for c in corpora for t in c.tasks))
    return {task: tag_vocabulary(corpora, task, outside) for task in tasks}
