"""Text layers for token-string inputs: lowercasing, word shapes and a character CNN.

Zoo tagging models take raw token strings (`[batch, time]`, padded with `""`)
so that an exported SavedModel needs no vocabulary file on the client. These
layers turn strings into features inside the model with `tf.strings` ops:
string processing has no `keras.ops` equivalent, so, like export, they are
TensorFlow-specific (see DESIGN.md); they hold no Python at call time and load
in TF Serving.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from kerasmtl.layers.multilabel_heads import _check_positive_int


@keras.saving.register_keras_serializable(package="kerasmtl")
class Lowercase(keras.layers.Layer):
    """Lowercases strings (Unicode-aware), e.g. before a word lookup.

    Examples:

    >>> Lowercase()(tf.constant([["Ann", "ÉTÉ", ""]])).numpy().tolist()
    [[b'ann', b'\\xc3\\xa9t\\xc3\\xa9', b'']]
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs):
        return tf.strings.lower(inputs, encoding="utf-8")

    def compute_output_shape(self, input_shape):
        return input_shape


# Casing classes of `WordShape`, in id order (Reimers and Gurevych, 2017).
WORD_SHAPES = ("padding", "numeric", "mainly_numeric", "all_lower", "all_upper",
               "initial_upper", "contains_digit", "other")


@keras.saving.register_keras_serializable(package="kerasmtl")
class WordShape(keras.layers.Layer):
    """Token strings -> casing class ids (`WORD_SHAPES`), int32 `[batch, time]`.

    The casing a lowercased word lookup loses, as one small categorical
    feature per token (Reimers and Gurevych, "Reporting Score Distributions
    Makes a Difference", EMNLP 2017; Collobert et al., 2011): `""` ->
    `padding` (0); only digits -> `numeric`; more than half digits ->
    `mainly_numeric`; letters, none upper case -> `all_lower`; letters,
    none lower case -> `all_upper`; an upper-case first character ->
    `initial_upper`; any digit -> `contains_digit`; else `other`
    (punctuation). Unicode-aware (letter case and digits by Unicode class). No
    weights; embed the ids (e.g. `keras.layers.Embedding(len(WORD_SHAPES), 8)`).

    Examples:

    >>> tokens = tf.constant([["Ann", "NASA", "été", "1999", "A4", "x1y2z", ",", ""]])
    >>> ids = WordShape()(tokens).numpy()[0].tolist()
    >>> [WORD_SHAPES[i] for i in ids]  # doctest: +NORMALIZE_WHITESPACE
    ['initial_upper', 'all_upper', 'all_lower', 'numeric', 'all_upper',
     'all_lower', 'other', 'padding']
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs):
        match = tf.strings.regex_full_match
        length = tf.strings.length(inputs, unit="UTF8_CHAR")
        digits = tf.strings.length(tf.strings.regex_replace(inputs, r"[^\p{N}]", ""),
                                   unit="UTF8_CHAR")
        has_upper = match(inputs, r".*\p{Lu}.*")
        has_lower = match(inputs, r".*\p{Ll}.*")
        # First matching rule wins, in this order.
        rules = [
            (length == 0, 0),
            ((digits == length), 1),
            (2 * digits > length, 2),
            (has_lower & ~has_upper, 3),
            (has_upper & ~has_lower, 4),
            (match(inputs, r"\p{Lu}.*"), 5),
            (digits > 0, 6),
        ]
        ids = tf.fill(tf.shape(inputs), 7)
        for condition, value in reversed(rules):
            ids = tf.where(condition, value, ids)
        return ids

    def compute_output_shape(self, input_shape):
        return input_shape

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(inputs.shape, dtype="int32")


@keras.saving.register_keras_serializable(package="kerasmtl")
class WordDropout(keras.layers.Layer):
    """Replaces known word ids by the out-of-vocabulary id at random, in
    training only: the OOV embedding then learns from words in every
    context, and the model leans on the character features for rare words,
    as it must at test time (word dropout, Lample et al., NAACL 2016).

    Ids below `first_known_id` (padding 0 and the OOV ids of
    `kerasmtl.data.text.vocabularies.string_lookup`) are kept.

    Args:
        rate: float in [0, 1). Probability of replacing a known word.
            Defaults to `0.05`.
        oov_id: int. The id that replaces a dropped word. Defaults to `1`.
        first_known_id: int. The smallest id of a vocabulary word. Defaults
            to `2`.
        seed: int or None. Defaults to `None`.

    Examples:

    >>> ids = tf.constant([[5, 6, 0], [1, 7, 8]])
    >>> WordDropout(0.5)(ids).numpy().tolist()  # inference: unchanged
    [[5, 6, 0], [1, 7, 8]]
    >>> dropped = WordDropout(0.999, seed=1)(ids, training=True).numpy()
    >>> dropped.tolist()
    [[1, 1, 0], [1, 1, 1]]
    """

    def __init__(self, rate: float = 0.05, oov_id: int = 1, first_known_id: int = 2,
                 seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= rate < 1:
            raise ValueError(
                "Invalid value for argument `rate`. Expected a float in [0, 1). "
                f"Received: rate={rate}"
            )
        self.rate = float(rate)
        self.oov_id = int(oov_id)
        self.first_known_id = int(first_known_id)
        self.seed = seed
        # A tracked generator: its state is saved with the model.
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def call(self, inputs, training=False):
        if not training or self.rate == 0:
            return inputs
        draw = keras.random.uniform(tf.shape(inputs), seed=self.seed_generator)
        drop = (draw < self.rate) & (inputs >= self.first_known_id)
        return tf.where(drop, tf.cast(self.oov_id, inputs.dtype), inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "oov_id": self.oov_id,
                "first_known_id": self.first_known_id, "seed": self.seed}


@keras.saving.register_keras_serializable(package="kerasmtl")
class CharacterEncoder(keras.layers.Layer):
    """Character CNN (or BiLSTM) over each token string: `[batch, time]`
    strings -> `[batch, time, filters]` features.

    Each token is split into Unicode characters (at most `max_chars`; longer
    tokens keep their first `max_chars`), looked up in `vocabulary` (unknown
    characters share one OOV index), embedded, convolved and max-pooled over
    its characters (Ma and Hovy, ACL 2016), or with `encoder="bilstm"` read
    by a character BiLSTM whose last states in both directions are the
    features (Lample et al., NAACL 2016). It gives unknown words a
    representation from their spelling (capitals, suffixes, digits). Padding
    tokens (`""`) get zeros and are masked (the Keras mask is `tokens != ""`,
    so a `Concatenate` with a masked word embedding keeps padding masked).

    Args:
        vocabulary: list of single-character str (e.g. from
            `kerasmtl.data.text.vocabularies.build_char_vocabulary`).
        embedding_dim: int. Character embedding size. Defaults to `16`.
        filters: int. Output features per token. Defaults to `32`.
        kernel_size: int. Convolution width in characters (`encoder="cnn"`
            only). Defaults to `3`.
        encoder: `"cnn"` (convolution + max over characters) or `"bilstm"`
            (an LSTM each way over the characters, `filters // 2` units
            each; `filters` must then be even). Defaults to `"cnn"`.
        max_chars: int. Characters kept per token. Defaults to `20`.
        compact: bool. Encode each distinct token string of a batch once, over
            as many character slots as its longest token needs (the same
            features, for less work: the train step of the zoo tagger is
            measured in `benchmarks/tagging_speed.py`). `False`: every token
            over `max_chars` slots, with static shapes (for `jit_compile`,
            which cannot compile `tf.unique`). Defaults to `True`.

    Examples:

    >>> encoder = CharacterEncoder(list("abc"), embedding_dim=2, filters=3)
    >>> encoder(tf.constant([["ab", "", "cab"]])).shape
    TensorShape([1, 3, 3])
    """

    def __init__(
        self,
        vocabulary: Sequence[str],
        embedding_dim: int = 16,
        filters: int = 32,
        kernel_size: int = 3,
        max_chars: int = 20,
        compact: bool = True,
        encoder: str = "cnn",
        **kwargs,
    ):
        super().__init__(**kwargs)
        vocabulary = list(vocabulary)
        bad = [c for c in vocabulary if not isinstance(c, str) or len(c) != 1]
        if bad or not vocabulary:
            raise ValueError(
                "Invalid value for argument `vocabulary` of CharacterEncoder. "
                "Expected a non-empty list of single characters (see "
                f"build_char_vocabulary). Received entries: {bad[:5] or vocabulary}"
            )
        for arg, value in (("embedding_dim", embedding_dim), ("filters", filters),
                           ("kernel_size", kernel_size), ("max_chars", max_chars)):
            _check_positive_int(self.name, arg, value)
        if encoder not in ("cnn", "bilstm"):
            raise ValueError(
                f"Invalid value for argument `encoder` of CharacterEncoder {self.name!r}. "
                f'Expected "cnn" or "bilstm". Received: encoder={encoder!r}'
            )
        if encoder == "bilstm" and int(filters) % 2:
            raise ValueError(
                f"Invalid value for argument `filters` of CharacterEncoder {self.name!r}: "
                f'encoder="bilstm" splits the features between its two directions, so '
                f"`filters` must be even. Received: filters={filters}"
            )
        self.encoder = encoder
        self.vocabulary = vocabulary
        self.embedding_dim = int(embedding_dim)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.max_chars = int(max_chars)
        self.compact = bool(compact)
        self.lookup = keras.layers.StringLookup(
            vocabulary=vocabulary, mask_token="", name="char_lookup"
        )
        self.embedding = keras.layers.Embedding(
            len(vocabulary) + 2, embedding_dim, name="char_embedding"
        )
        if encoder == "cnn":
            self.conv = keras.layers.Conv1D(
                filters, kernel_size, padding="same", activation="tanh", name="char_conv"
            )
        else:
            self.rnn = keras.layers.Bidirectional(
                keras.layers.LSTM(self.filters // 2), name="char_bilstm")
        self.supports_masking = True

    def build(self, input_shape):
        self.embedding.build((None, self.max_chars))
        if self.encoder == "cnn":
            self.conv.build((None, self.max_chars, self.embedding_dim))
        else:
            self.rnn.build((None, self.max_chars, self.embedding_dim))
        self.built = True

    def call(self, tokens):
        if not self.compact:
            return self._encode_all(tokens)
        # Each distinct token string of the batch is encoded once (a batch
        # repeats "the", ",", "" ...), then gathered back to its positions.
        shape = tf.shape(tokens)
        unique, positions = tf.unique(tf.reshape(tokens, [-1]))
        chars = tf.strings.unicode_split(unique, "UTF-8")
        # Character slots up to the longest token plus the convolution's right
        # reach, not always `max_chars`: a "same" convolution then sees
        # exactly what it sees at full width (real characters, the padding
        # character's embedding, and zeros past `max_chars`), so the features
        # are those of the full-width layer, for less work. The BiLSTM skips
        # padding slots (masked), so it needs no reach past the longest token.
        longest = tf.cast(tf.reduce_max(tf.concat([[0], chars.row_lengths()], 0)), "int32")
        reach = self.kernel_size // 2 if self.encoder == "cnn" else 0
        width = tf.minimum(longest + reach, self.max_chars)
        chars = chars.to_tensor(default_value="", shape=[None, self.max_chars])
        pooled = self._pool(self.lookup(chars[:, :width]))  # [U, filters]
        pooled = tf.reshape(tf.gather(pooled, positions), tf.concat([shape, [self.filters]], 0))
        return tf.ensure_shape(pooled, [*tokens.shape, self.filters])

    def _encode_all(self, tokens):
        chars = tf.strings.unicode_split(tokens, "UTF-8")
        chars = chars.to_tensor(default_value="", shape=[None, None, self.max_chars])
        ids = self.lookup(chars)  # [B, T, C]; 0 = padding
        batch, time = tf.shape(ids)[0], tf.shape(ids)[1]
        return tf.reshape(self._pool(tf.reshape(ids, [-1, self.max_chars])),
                          [batch, time, self.filters])

    def _pool(self, ids):
        """`[N, C]` character ids -> `[N, filters]`: convolution, then the max
        over real characters only, or the BiLSTM's last states over them (a
        padding token has none: zeros)."""
        if self.encoder == "bilstm":
            is_char = ids > 0
            states = self.rnn(self.embedding(ids), mask=is_char)  # [N, F]
            return tf.where(tf.reduce_any(is_char, axis=1, keepdims=True), states, 0.0)
        features = self.conv(self.embedding(ids))  # [N, C, F]
        is_char = tf.expand_dims(ids > 0, -1)
        pooled = tf.reduce_max(tf.where(is_char, features, -2.0), axis=1)
        return tf.where(tf.reduce_any(is_char, axis=1), pooled, 0.0)

    def compute_mask(self, inputs, mask=None):
        # Without it, Concatenate treats this unmasked input as all tokens and
        # its OR of masks would erase the word embedding's padding mask.
        return keras.ops.not_equal(inputs, "")

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "vocabulary": self.vocabulary,
            "embedding_dim": self.embedding_dim,
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "max_chars": self.max_chars,
            "compact": self.compact,
            "encoder": self.encoder,
        }
