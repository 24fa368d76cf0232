"""From a `TaggedCorpus` to model inputs: label ids (`encode_tags`), padded
numpy arrays (`to_arrays`) and `tf.data` pipelines with optional bucketing by
length (`tagging_dataset`).

Elements are `({"tokens": string [B, T] padded ""}, {task: int32 [B, T]
padded -1})`: the raw token strings, which the model maps with its own
`StringLookup` (see `kerasmtl.data.text.vocabularies.string_lookup`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf

from kerasmtl.data.text.container import PAD_LABEL, PAD_TOKEN, TaggedCorpus


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
