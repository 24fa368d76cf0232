"""Tagged corpora for sequence tagging: the container, vocabularies, label
encoding, numpy arrays and `tf.data` pipelines.

A `TaggedCorpus` holds sentences of token strings and, for each tagging task
(e.g. `"pos"`, `"ner"`), one tag string per token, or `None` for a sentence
with no labels for that task. Such a sentence is kept and its labels encoded as
`-1`, which the `Tagging` task masks: a missing label is masked, never dropped.

Pipelines yield the raw token strings, not ids: a model maps them with a
`keras.layers.StringLookup` built from `build_vocabulary` (see `string_lookup`),
so its exported SavedModel takes strings. The data flow:

```
corpus -> tag_vocabularies(corpus)
       -> tagging_dataset(corpus, tag_vocabs, batch_size)
       -> ({"tokens": string [B, T] padded ""}, {task: int32 [B, T] padded -1})
```
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterable, Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from kerasmtl.data.splits import split_indices

# Padding of the token strings; also `StringLookup`'s mask token, so padded
# positions map to index 0 and are masked by mask-aware layers.
PAD_TOKEN = ""
# Label of a padded position or of a missing tag (masked by the loss).
PAD_LABEL = -1
# `StringLookup`'s default OOV token; never put in a vocabulary, because
# StringLookup would list it twice and it maps to the OOV index anyway.
OOV_TOKEN = "[UNK]"

_TASK_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class TaggedCorpus:
    """Sentences of tokens with per-token tags for one or more tasks.

    Args:
        tokens: list of list of str. One list of tokens per sentence. Every
            sentence has at least one token and no token is the empty string
            (the padding value).
        tags: dict `{task_name: per_sentence}` where `per_sentence[i]` is a list
            of tag strings (non-empty, without surrounding whitespace) as long
            as `tokens[i]`, or `None` when sentence `i` has no labels for that
            task (encoded as all `-1`). Defaults to no tasks.
        ids: list of str, or None. One id per sentence (e.g. the CoNLL-U
            `sent_id`), used in error messages and by `merge_corpora`.
            Defaults to `None` (ids are the sentence indices).

    Examples:

    >>> corpus = TaggedCorpus(
    ...     [["Ann", "sings"], ["Bob", "runs", "fast"]],
    ...     {"pos": [["PROPN", "VERB"], ["PROPN", "VERB", "ADV"]],
    ...      "ner": [["B-PER", "O"], None]})
    >>> len(corpus), corpus.num_tokens, corpus.tasks
    (2, 5, ['pos', 'ner'])
    >>> corpus.tag_set("ner")
    ['B-PER', 'O']
    """

    def __init__(
        self,
        tokens: Sequence[Sequence[str]],
        tags: Mapping[str, Sequence[Sequence[str] | None]] | None = None,
        ids: Sequence[str] | None = None,
    ):
        self.tokens = [list(sentence) for sentence in tokens]
        self.ids = None if ids is None else [str(i) for i in ids]
        if self.ids is not None and len(self.ids) != len(self.tokens):
            raise ValueError(
                f"`ids` has {len(self.ids)} entries for {len(self.tokens)} "
                "sentences. Pass one id per sentence, or ids=None."
            )
        for i, sentence in enumerate(self.tokens):
            if not sentence:
                raise ValueError(
                    f"Sentence {self.describe(i)} has no tokens. A tagged "
                    "corpus holds only non-empty sentences; drop empty ones "
                    "before building it."
                )
            for token in sentence:
                if not isinstance(token, str) or token == PAD_TOKEN:
                    raise ValueError(
                        f"Sentence {self.describe(i)} has the token {token!r}. "
                        "Tokens must be non-empty strings: the empty string "
                        "is the padding value."
                    )
        self.tags: dict[str, list[list[str] | None]] = {}
        for task, per_sentence in (tags or {}).items():
            self.tags[task] = self._checked_tags(task, per_sentence)

    def _checked_tags(self, task, per_sentence):
        if not isinstance(task, str) or not _TASK_NAME.match(task):
            raise ValueError(
                f"Invalid task name {task!r}. Expected a letter followed by "
                "letters, digits or underscores (it names a model output), "
                "e.g. 'pos' or 'ner'."
            )
        per_sentence = list(per_sentence)
        if len(per_sentence) != len(self.tokens):
            raise ValueError(
                f"Task '{task}' has tags for {len(per_sentence)} sentences, but "
                f"the corpus has {len(self.tokens)}. Pass one tag list (or None "
                "for a sentence without labels) per sentence."
            )
        checked = []
        for i, (sentence, sentence_tags) in enumerate(zip(self.tokens, per_sentence)):
            if sentence_tags is None:
                checked.append(None)
                continue
            sentence_tags = list(sentence_tags)
            if len(sentence_tags) != len(sentence):
                raise ValueError(
                    f"Task '{task}', sentence {self.describe(i)}: "
                    f"{len(sentence_tags)} tags for {len(sentence)} tokens. "
                    "Give one tag per token, or None for an unlabelled sentence."
                )
            for tag in sentence_tags:
                # "DET " and "DET" would silently be two classes.
                if not isinstance(tag, str) or not tag or tag != tag.strip():
                    raise ValueError(
                        f"Task '{task}', sentence {self.describe(i)}: invalid "
                        f"tag {tag!r}. Tags are non-empty strings without "
                        "surrounding whitespace; strip them first."
                    )
            checked.append(sentence_tags)
        return checked

    # -- views ----------------------------------------------------------------

    @property
    def tasks(self) -> list[str]:
        """Task names, in insertion order."""
        return list(self.tags)

    @property
    def num_tokens(self) -> int:
        return sum(len(sentence) for sentence in self.tokens)

    def lengths(self) -> np.ndarray:
        """int64 `[N]`: the number of tokens of each sentence."""
        return np.array([len(sentence) for sentence in self.tokens], dtype="int64")

    def describe(self, index: int) -> str:
        """`index`, with the sentence id when there is one (for messages)."""
        if self.ids is None:
            return str(index)
        return f"{index} (id {self.ids[index]!r})"

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index):
        """An int gives `(tokens, {task: tags or None})`; a slice a corpus."""
        if isinstance(index, slice):
            return self.select(range(len(self))[index])
        return self.tokens[index], {task: tags[index] for task, tags in self.tags.items()}

    def __eq__(self, other) -> bool:
        if not isinstance(other, TaggedCorpus):
            return NotImplemented
        return (self.tokens, self.tags, self.ids) == (other.tokens, other.tags, other.ids)

    def __repr__(self) -> str:
        return (
            f"TaggedCorpus({len(self)} sentences, {self.num_tokens} tokens, "
            f"tasks={self.tasks})"
        )

    def tag_set(self, task: str) -> list[str]:
        """Sorted list of the tags of `task` that occur in the corpus."""
        self._check_task(task)
        return sorted({t for tags in self.tags[task] if tags is not None for t in tags})

    def stats(self) -> dict:
        """Counts: sentences, tokens, longest sentence, and per task the number
        of labelled sentences and of each tag."""
        lengths = self.lengths()
        tasks = {}
        for task, per_sentence in self.tags.items():
            counts = collections.Counter(
                t for tags in per_sentence if tags is not None for t in tags
            )
            tasks[task] = {
                "labelled_sentences": sum(tags is not None for tags in per_sentence),
                "tags": dict(sorted(counts.items())),
            }
        return {
            "sentences": len(self),
            "tokens": int(lengths.sum()),
            "max_length": int(lengths.max()) if len(self) else 0,
            "tasks": tasks,
        }

    # -- new corpora ----------------------------------------------------------

    def select(self, indices: Iterable[int]) -> TaggedCorpus:
        """The sentences at `indices`, in that order."""
        indices = [int(i) for i in indices]
        return TaggedCorpus(
            [self.tokens[i] for i in indices],
            {task: [tags[i] for i in indices] for task, tags in self.tags.items()},
            None if self.ids is None else [self.ids[i] for i in indices],
        )

    def split(self, fraction: float, seed: int = 0) -> tuple[TaggedCorpus, TaggedCorpus]:
        """Reproducible random split, e.g. `train, dev = corpus.split(0.1)`.

        Args:
            fraction: float in (0, 1). Share of sentences in the second part
                (rounded, at least one sentence in each part).
            seed: int. The same seed and corpus give the same split.

        Returns:
            `(rest, held_out)`, both keeping the corpus order.
        """
        rest, held_out = split_indices(len(self), fraction, seed, "sentence")
        return self.select(rest), self.select(held_out)

    def rename_tasks(self, mapping: Mapping[str, str]) -> TaggedCorpus:
        """A copy whose tasks `old` are called `mapping[old]`."""
        for old in mapping:
            self._check_task(old)
        tags = {mapping.get(task, task): tags for task, tags in self.tags.items()}
        if len(tags) != len(self.tags):
            raise ValueError(f"Renaming {dict(mapping)} merges two tasks into one.")
        return TaggedCorpus(self.tokens, tags, self.ids)

    def with_unlabelled_task(self, task: str) -> TaggedCorpus:
        """A copy that also has `task`, with every sentence unlabelled (so a
        pipeline yields all `-1` for it, e.g. POS-only data in a POS+NER model)."""
        if task in self.tags:
            raise ValueError(f"The corpus already has task '{task}'.")
        return TaggedCorpus(self.tokens, {**self.tags, task: [None] * len(self)}, self.ids)

    def _check_task(self, task):
        if task not in self.tags:
            raise ValueError(
                f"Unknown task '{task}'. This corpus has tasks {self.tasks}."
            )


def concatenate_corpora(*corpora: TaggedCorpus) -> TaggedCorpus:
    """The sentences of all `corpora` in order; tasks are the union, and a
    corpus without a task contributes unlabelled (`None`) sentences for it.

    Use it to train one model on data sets annotated for different tasks (e.g.
    a POS treebank and an NER corpus).

    Examples:

    >>> pos = TaggedCorpus([["Hi"]], {"pos": [["INTJ"]]})
    >>> ner = TaggedCorpus([["Rome"]], {"ner": [["B-LOC"]]})
    >>> concatenate_corpora(pos, ner).tags
    {'pos': [['INTJ'], None], 'ner': [None, ['B-LOC']]}
    """
    if not corpora:
        raise ValueError("concatenate_corpora() needs at least one corpus.")
    tasks = list(dict.fromkeys(task for corpus in corpora for task in corpus.tasks))
    tokens, tags = [], {task: [] for task in tasks}
    for corpus in corpora:
        tokens.extend(corpus.tokens)
        for task in tasks:
            tags[task].extend(corpus.tags.get(task, [None] * len(corpus)))
    if all(corpus.ids is not None for corpus in corpora):
        ids = [i for corpus in corpora for i in corpus.ids]
    else:
        ids = None
    return TaggedCorpus(tokens, tags, ids)


def merge_corpora(first: TaggedCorpus, *others: TaggedCorpus) -> TaggedCorpus:
    """Joins corpora of the same sentences by sentence id, e.g. UD (POS) and
    Universal NER (NER) files, whose sentence orders may differ.

    The result has `first`'s sentences in `first`'s order and the tasks of all
    corpora. A sentence of `first` missing from another corpus is unlabelled
    (`None`) for that corpus' tasks; sentences only in `others` are ignored.

    Raises:
        ValueError: if a corpus has no ids or repeated ids, if two corpora have
            a task of the same name, or if a shared sentence has different
            tokens.
    """
    for corpus in (first, *others):
        if corpus.ids is None:
            raise ValueError(
                f"merge_corpora() joins on sentence ids, but {corpus!r} has none. "
                "Use readers that keep `# sent_id` comments, or set `ids`."
            )
        if len(set(corpus.ids)) != len(corpus.ids):
            dup = next(i for i, c in collections.Counter(corpus.ids).items() if c > 1)
            raise ValueError(f"{corpus!r} has the sentence id {dup!r} more than once.")
    tags = dict(first.tags)
    for other in others:
        clash = set(tags) & set(other.tags)
        if clash:
            raise ValueError(
                f"Tasks {sorted(clash)} are in two corpora; rename one first "
                "(`corpus.rename_tasks`)."
            )
        position = {sid: i for i, sid in enumerate(other.ids)}
        for i, sid in enumerate(first.ids):
            j = position.get(sid)
            if j is not None and other.tokens[j] != first.tokens[i]:
                raise ValueError(
                    f"Sentence id {sid!r} has different tokens in two corpora: "
                    f"{first.tokens[i][:8]} vs {other.tokens[j][:8]}."
                )
        for task, per_sentence in other.tags.items():
            tags[task] = [
                per_sentence[position[sid]] if sid in position else None
                for sid in first.ids
            ]
    return TaggedCorpus(first.tokens, tags, first.ids)


# -- vocabularies ---------------------------------------------------------------


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


# -- encoding ---------------------------------------------------------------------


def encode_tags(
    corpus: TaggedCorpus, tag_vocabularies: Mapping[str, Sequence[str]]
) -> dict[str, list[np.ndarray]]:
    """Label ids per task: `{task: [int32 array [len(sentence)] per sentence]}`.

    A sentence without labels for a task gives all `-1`. Tasks of the corpus
    that are not in `tag_vocabularies` are left out.

    Raises:
        ValueError: if a task of `tag_vocabularies` is not in the corpus, or a
            tag is not in its task's vocabulary (naming the task, sentence,
            tag and the known tags).

    Examples:

    >>> corpus = TaggedCorpus([["Ann", "sings"], ["Hi"]],
    ...                       {"ner": [["B-PER", "O"], None]})
    >>> encoded = encode_tags(corpus, {"ner": ["O", "B-PER"]})
    >>> [a.tolist() for a in encoded["ner"]]
    [[1, 0], [-1]]
    """
    encoded = {}
    for task, vocabulary in tag_vocabularies.items():
        if task not in corpus.tags:
            raise ValueError(
                f"Task '{task}' has a tag vocabulary but is not in the corpus "
                f"(tasks {corpus.tasks}). To train it on this corpus with all "
                f"labels missing, use corpus.with_unlabelled_task('{task}')."
            )
        vocabulary = list(vocabulary)
        index = {tag: i for i, tag in enumerate(vocabulary)}
        if len(index) != len(vocabulary) or "" in index:
            raise ValueError(
                f"The tag vocabulary of task '{task}' has repeated or empty "
                f"tags: {vocabulary}."
            )
        arrays = []
        for i, (sentence, tags) in enumerate(zip(corpus.tokens, corpus.tags[task])):
            if tags is None:
                arrays.append(np.full(len(sentence), PAD_LABEL, dtype="int32"))
                continue
            try:
                arrays.append(np.array([index[t] for t in tags], dtype="int32"))
            except KeyError as error:
                raise ValueError(
                    f"Unknown tag {error.args[0]!r} for task '{task}' in sentence "
                    f"{corpus.describe(i)}. Known tags ({len(vocabulary)}): "
                    f"{vocabulary}. Build the vocabulary from every split, e.g. "
                    f"tag_vocabulary([train, dev], '{task}')."
                ) from None
        encoded[task] = arrays
    return encoded


def _chunked(corpus, tag_vocabularies, max_length, on_long):
    """Token lists and label arrays with every sentence fitting `max_length`."""
    if on_long not in ("error", "split"):
        raise ValueError(
            "Invalid value for argument `on_long`. Expected 'error' or 'split'. "
            f"Received: on_long={on_long!r}"
        )
    if max_length is not None and max_length < 1:
        raise ValueError(
            "Invalid value for argument `max_length`. Expected an int >= 1 or "
            f"None. Received: max_length={max_length}"
        )
    if len(corpus) == 0:
        raise ValueError("The corpus is empty; there is nothing to encode.")
    labels = encode_tags(corpus, tag_vocabularies)
    tokens = corpus.tokens
    if max_length is None:
        return tokens, labels
    lengths = corpus.lengths()
    long = np.flatnonzero(lengths > max_length)
    if len(long) == 0:
        return tokens, labels
    if on_long == "error":
        i = int(long[0])
        raise ValueError(
            f"Sentence {corpus.describe(i)} has {lengths[i]} tokens, more than "
            f"max_length={max_length} ({len(long)} sentence(s) are longer). "
            "Pass on_long='split' to cut long sentences into chunks (no token "
            "is lost), or raise max_length."
        )
    # Consecutive chunks of at most max_length tokens; each chunk becomes an
    # example of its own, so every token keeps its label.
    out_tokens, out_labels = [], {task: [] for task in labels}
    for i, sentence in enumerate(tokens):
        for start in range(0, len(sentence), max_length):
            out_tokens.append(sentence[start : start + max_length])
            for task, arrays in labels.items():
                out_labels[task].append(arrays[i][start : start + max_length])
    return out_tokens, out_labels


def to_arrays(
    corpus: TaggedCorpus,
    tag_vocabularies: Mapping[str, Sequence[str]],
    max_length: int | None = None,
    on_long: str = "error",
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Padded numpy arrays for small in-memory use.

    Keras 3 does not accept numpy string arrays as model inputs: pass
    `tf.constant(tokens)` to `fit`/`predict`.

    Args:
        corpus: `TaggedCorpus`.
        tag_vocabularies: `{task: list of tags}`; position is the label id.
        max_length: int or None. Width `T` of the arrays. Defaults to `None`
            (the longest sentence).
        on_long: `"error"` or `"split"`. What to do with a sentence longer than
            `max_length`: raise, or cut it into consecutive chunks that become
            rows of their own. Defaults to `"error"`.

    Returns:
        `(tokens, labels)`: `tokens` an object array of str `[N, T]` padded
        with `""`, `labels` `{task: int32 [N, T]}` padded with `-1`.

    Examples:

    >>> corpus = TaggedCorpus([["a", "b"], ["c"]], {"pos": [["X", "Y"], ["X"]]})
    >>> x, y = to_arrays(corpus, {"pos": ["X", "Y"]})
    >>> x.tolist()
    [['a', 'b'], ['c', '']]
    >>> y["pos"].tolist()
    [[0, 1], [0, -1]]
    """
    tokens, labels = _chunked(corpus, tag_vocabularies, max_length, on_long)
    width = max_length if max_length is not None else max(len(s) for s in tokens)
    x = np.full((len(tokens), width), PAD_TOKEN, dtype=object)
    y = {task: np.full((len(tokens), width), PAD_LABEL, dtype="int32") for task in labels}
    for i, sentence in enumerate(tokens):
        x[i, : len(sentence)] = sentence
        for task, arrays in labels.items():
            y[task][i, : len(sentence)] = arrays[i]
    return x, y


def tagging_dataset(
    corpus: TaggedCorpus,
    tag_vocabularies: Mapping[str, Sequence[str]],
    batch_size: int,
    max_length: int | None = None,
    on_long: str = "error",
    shuffle: bool = False,
    seed: int = 0,
    bucket_boundaries: Sequence[int] | None = None,
    input_key: str = "tokens",
) -> tf.data.Dataset:
    """A `tf.data.Dataset` of padded batches for a tagging model.

    Each element is `({input_key: string [B, T]}, {task: int32 [B, T]})`, padded
    to the longest sentence of the batch with `""` and `-1`. Every sentence
    (or chunk, with `on_long="split"`) comes out exactly once per epoch; the
    last batch (and, with bucketing, the last batch of each bucket) may be
    smaller than `batch_size`.

    Args:
        corpus: `TaggedCorpus`.
        tag_vocabularies: `{task: list of tags}`; position is the label id.
        batch_size: int >= 1.
        max_length: int or None. Longest sentence allowed. Defaults to `None`.
        on_long: `"error"` or `"split"` (see `to_arrays`). Defaults to
            `"error"`.
        shuffle: bool. Shuffle the sentences (the whole corpus) each epoch.
            Defaults to `False` (corpus order, for evaluation).
        seed: int. Shuffle seed; the same seed gives the same epoch orders.
            Defaults to 0.
        bucket_boundaries: increasing ints, or None. Batch sentences of similar
            length together (`Dataset.bucket_by_sequence_length`): lengths
            `< b[0]`, `[b[0], b[1])`, ..., `>= b[-1]` go to separate buckets,
            which cuts padding. Defaults to `None` (no bucketing).
        input_key: str. Name of the token input. Defaults to `"tokens"`.

    Examples:

    >>> corpus = TaggedCorpus([["a", "b"], ["c"]], {"pos": [["X", "Y"], ["X"]]})
    >>> ds = tagging_dataset(corpus, {"pos": ["X", "Y"]}, batch_size=2)
    >>> x, y = next(iter(ds))
    >>> x["tokens"].numpy().tolist(), y["pos"].numpy().tolist()
    ([[b'a', b'b'], [b'c', b'']], [[0, 1], [0, -1]])
    """
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(
            "Invalid value for argument `batch_size`. Expected an int >= 1. "
            f"Received: batch_size={batch_size!r}"
        )
    if bucket_boundaries is not None:
        bucket_boundaries = [int(b) for b in bucket_boundaries]
        if not bucket_boundaries or bucket_boundaries[0] < 1 or any(
            a >= b for a, b in zip(bucket_boundaries, bucket_boundaries[1:])
        ):
            raise ValueError(
                "Invalid value for argument `bucket_boundaries`. Expected "
                "strictly increasing ints >= 1, e.g. [8, 16, 32]. Received: "
                f"bucket_boundaries={bucket_boundaries}"
            )
    tokens, labels = _chunked(corpus, tag_vocabularies, max_length, on_long)
    lengths = np.array([len(s) for s in tokens], dtype="int64")
    flat_tokens = np.array([t for s in tokens for t in s], dtype=object)

    def ragged(flat):
        return tf.RaggedTensor.from_row_lengths(flat, lengths, validate=False)

    x = {input_key: ragged(tf.constant(flat_tokens, tf.string))}
    y = {
        task: ragged(tf.constant(np.concatenate(arrays), tf.int32))
        for task, arrays in labels.items()
    }
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        ds = ds.shuffle(len(tokens), seed=seed, reshuffle_each_iteration=True)
    # A row of a 2-D ragged tensor is a plain vector; the map makes its spec
    # a TensorSpec so padded_batch accepts it.
    ds = ds.map(lambda x, y: tf.nest.map_structure(_as_dense, (x, y)))
    padding = ({input_key: PAD_TOKEN}, {task: PAD_LABEL for task in labels})
    if bucket_boundaries is None:
        ds = ds.padded_batch(batch_size, padding_values=padding)
    else:
        ds = ds.bucket_by_sequence_length(
            lambda x, y: tf.shape(x[input_key])[0],
            bucket_boundaries,
            [batch_size] * (len(bucket_boundaries) + 1),
            padding_values=padding,
        )
        # Bucketing hides the number of batches, and Keras warns "Your input
        # ran out of data" at the end of a first epoch of unknown length; the
        # lengths give it exactly (a bucket holds lengths in [b[i-1], b[i])).
        per_bucket = np.bincount(np.searchsorted(bucket_boundaries, lengths, side="right"))
        num_batches = int(np.sum(-(-per_bucket // batch_size)))
        ds = ds.apply(tf.data.experimental.assert_cardinality(num_batches))
    return ds.prefetch(tf.data.AUTOTUNE)


def _as_dense(value):
    return value if isinstance(value, tf.Tensor) else value.flat_values
