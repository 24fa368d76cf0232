"""The container of tagged text: `TaggedCorpus`, and joining corpora
(`concatenate_corpora`, `merge_corpora`).

A `TaggedCorpus` holds sentences of token strings and, for each tagging task
(e.g. `"pos"`, `"ner"`), one tag string per token, or `None` for a sentence
with no labels for that task. Such a sentence is kept and its labels encoded as
`-1`, which the `Tagging` task masks: a missing label is masked, never dropped.

Vocabularies are built in `kerasmtl.data.text.vocabularies`, arrays and
`tf.data` pipelines in `kerasmtl.data.text.pipeline`. The data flow:

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

import numpy as np

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
