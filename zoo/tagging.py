"""Joint POS + NER taggers: one shared word representation, two tagging heads.

Both models take raw token strings (`{"tokens": [batch, time]}`, padded with
`""`: the structure `tagging_dataset` yields) and map them inside the model: a word lookup (lowercased) with an
embedding, plus a character CNN that gives unknown words a representation from
their spelling. The exported SavedModel therefore takes strings and returns
tag strings (`pos_tags`, `ner_tags`), with no vocabulary file on the client.

- `pos_ner_bilstm_crf`: BiLSTM trunk, softmax POS head, CRF NER head.
- `pos_ner_transformer`: a small Transformer encoder trunk, same heads.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import keras
import tensorflow as tf

import kerasmtl as mtl
from kerasmtl.data import text as tagging_data
from kerasmtl.layers.text import (
    WORD_SHAPES,
    CharacterEncoder,
    Lowercase,
    WordDropout,
    WordShape,
)
from zoo.registry import register_model
from zoo.training_settings import TrainingData, cosine_adam

# Tiny defaults so that `create_model(name)` with no data builds a model: the
# synthetic corpus' words, characters and tags.
_SYNTHETIC_SEED = 0


def _default_vocabularies():
    corpus = mtl.data.synthetic_tagged_corpus(200, seed=_SYNTHETIC_SEED)
    return (tagging_data.build_vocabulary(corpus, lowercase=True),
            tagging_data.build_char_vocabulary(corpus),
            mtl.data.synthetic_tag_vocabularies())


def _tasks(pos_tags, ner_tags, ner_crf: bool) -> list[mtl.tasks.Task]:
    return [
        mtl.tasks.Tagging("pos", tags=list(pos_tags)),
        mtl.tasks.Tagging("ner", tags=list(ner_tags), scheme="IOB2", crf=ner_crf),
    ]


def _dropout(rate, variational, name):
    """Dropout over `[batch, time, features]`: a fresh mask per token, or with
    `variational` one mask per sentence, the same features dropped at every
    time step (Gal and Ghahramani, 2016; `SpatialDropout1D`)."""
    if variational:
        return keras.layers.SpatialDropout1D(rate, name=name)
    return keras.layers.Dropout(rate, name=name)


def _token_features(tokens, vocabulary, char_vocabulary, word_dim, char_dim,
                    char_filters, dropout, word_dropout=0.0, casing_dim=0,
                    variational_dropout=False, char_encoder="cnn"):
    """Word embedding (lowercased lookup) ++ character CNN or BiLSTM (++
    casing embedding when `casing_dim`); carries the padding mask (index 0 =
    `""`)."""
    words = tagging_data.string_lookup(vocabulary, name="word_lookup")(
        Lowercase(name="lowercase")(tokens))
    if word_dropout:
        words = WordDropout(word_dropout, name="word_dropout")(words)
    words = keras.layers.Embedding(len(vocabulary) + 2, word_dim, mask_zero=True,
                                   name="word_embedding")(words)
    chars = CharacterEncoder(char_vocabulary, embedding_dim=char_dim,
                             filters=char_filters, encoder=char_encoder,
                             name=f"char_{char_encoder}")(tokens)
    features = [words, chars]
    if casing_dim:
        features.append(keras.layers.Embedding(len(WORD_SHAPES), casing_dim,
                                               name="casing_embedding")(
            WordShape(name="word_shape")(tokens)))
    x = keras.layers.Concatenate(name="token_features")(features)
    return _dropout(dropout, variational_dropout, "token_dropout")(x)


def _token_inputs(vocabulary, char_vocabulary, pos_tags, ner_tags, tasks, ner_crf,
                  word_dim, char_dim, char_filters, dropout, word_dropout=0.0,
                  casing_dim=0, variational_dropout=False, char_encoder="cnn"):
    """The part both taggers share: `(tokens input, token features, tasks)`."""
    vocabulary, char_vocabulary, pos_tags, ner_tags = _resolve(
        vocabulary, char_vocabulary, pos_tags, ner_tags)
    tasks = list(tasks) if tasks is not None else _tasks(pos_tags, ner_tags, ner_crf)
    tokens = keras.Input((None,), dtype="string", name="tokens")
    x = _token_features(tokens, vocabulary, char_vocabulary, word_dim, char_dim,
                        char_filters, dropout, word_dropout, casing_dim,
                        variational_dropout, char_encoder)
    return tokens, x, tasks


def _resolve(vocabulary, char_vocabulary, pos_tags, ner_tags):
    if vocabulary is None or char_vocabulary is None or pos_tags is None or ner_tags is None:
        words, chars, tags = _default_vocabularies()
        vocabulary = words if vocabulary is None else vocabulary
        char_vocabulary = chars if char_vocabulary is None else char_vocabulary
        pos_tags = tags["pos"] if pos_tags is None else pos_tags
        ner_tags = tags["ner"] if ner_tags is None else ner_tags
    return list(vocabulary), list(char_vocabulary), list(pos_tags), list(ner_tags)


def _example_data():
    corpus = mtl.data.synthetic_tagged_corpus(8, seed=1, missing_ner_rate=0.25)
    tokens, labels = tagging_data.to_arrays(corpus, mtl.data.synthetic_tag_vocabularies())
    # Keras' fit/predict take no numpy string arrays: a tensor it is.
    return {"tokens": tf.constant(tokens)}, labels


# Sentence-length buckets of the training batches: every 4 tokens up to 64
# pads UD-EWT train to 10.8% of token slots, against 22.1% with the earlier
# [8, 16, 24, 32, 48, 64] (benchmarks/tagging_speed.py counts and times both).
BUCKET_BOUNDARIES = list(range(4, 68, 4))


def _training_data(spec: str, *, batch_size: int, seed: int) -> TrainingData:
    """`--data synthetic`, a `ud_ewt_uner` folder, or `tfds:conll2003`."""
    if spec == "synthetic":
        train = mtl.data.synthetic_tagged_corpus(3000, seed=seed, missing_ner_rate=0.3)
        dev = mtl.data.synthetic_tagged_corpus(500, seed=seed + 10_000)
        source = "synthetic tagged corpus"
    elif spec.startswith("tfds:"):
        name = spec[len("tfds:"):]
        if name != "conll2003":
            raise ValueError(
                f"Unknown tfds corpus '{name}' for the POS+NER models. Use "
                "tfds:conll2003 (POS + NER on the same sentences), prepared "
                "beforehand with `tfds build conll2003` (no downloads at run time)."
            )
        from kerasmtl.data.text import tfds as tfds_tagging

        train, _ = tfds_tagging.load_conll2003("train")
        dev, _ = tfds_tagging.load_conll2003("dev")
        source = "tfds conll2003"
    elif os.path.isdir(os.path.join(spec, "joined")):
        train, dev = mtl.data.load_ud_ewt_uner(spec)
        source = f"UD English-EWT UPOS + UNER ({spec})"
    else:
        raise ValueError(
            f"--data '{spec}' is neither 'synthetic', 'tfds:conll2003' nor a "
            "ud_ewt_uner folder (one holding joined/en_ewt-{train,dev}.pos_ner.tsv)."
        )
    tags = tagging_data.tag_vocabularies([train, dev], tasks=["pos", "ner"])
    kwargs = {
        # Singletons stay OOV so that the OOV embedding is trained too.
        "vocabulary": tagging_data.build_vocabulary(train, min_count=2, lowercase=True),
        "char_vocabulary": tagging_data.build_char_vocabulary(train, min_count=2),
        "pos_tags": tags["pos"],
        "ner_tags": tags["ner"],
    }
    train_ds = tagging_data.tagging_dataset(
        train, tags, batch_size, shuffle=True, seed=seed,
        bucket_boundaries=BUCKET_BOUNDARIES)
    dev_ds = tagging_data.tagging_dataset(dev, tags, 256,
                                          bucket_boundaries=BUCKET_BOUNDARIES)
    summary = (f"{source}: {len(train)} train / {len(dev)} dev sentences; "
               f"{len(kwargs['vocabulary'])} words, {len(tags['pos'])} POS tags, "
               f"{len(tags['ner'])} NER tags")
    return TrainingData(train_ds, dev_ds, _tasks(tags["pos"], tags["ner"], True),
                        kwargs, summary)


# The settings of the shipped preset, chosen on UD-EWT dev (model card): a
# wider BiLSTM and strong regularisation (dropout 0.5, word dropout 0.1),
# which took dev NER F1 from 63.5 (dropout 0.33, 30 epochs) to 65.6; then
# wider word and character features (100-d words, 32-d characters, 64
# character filters): dev UPOS 93.8 -> 94.5, NER F1 65.6 -> 67.0; then
# word dropout 0.25 and the NER loss weighted 2 (each alone +1.2 / +1.5 NER
# F1): dev UPOS 94.5 -> 94.3, NER F1 67.0 -> 69.4 (25 epochs, last epoch);
# then DB-MTL (Lin et al., 2023) instead of the static 2x: NER F1 69.4 ->
# 70.8, UPOS 94.3 -> 94.2 (among the methods furthest ahead of single-task
# models in both of our Δm tables, benchmarks/README.md). Parameter mode:
# two backward passes, ~1.5x the static weighting's epoch (card). Then 40
# epochs instead of 25 (the cosine over all 40): dev UPOS 94.47 -> 94.52,
# NER F1 70.27 -> 71.25, one seed (card).
BILSTM_RECIPE = {
    "epochs": 40,
    "batch_size": 32,
    # Adam 2e-3 to 1e-4 on a cosine, gradients clipped: measured on UD-EWT
    # dev against a constant 1e-3.
    "optimizer": cosine_adam(2e-3, alpha=0.05, clipnorm=5.0),
    # UPOS accuracy and entity F1 on the dev pass only: the CRF's Viterbi
    # decoding and entity chunking cost each train step (tagging_speed.py).
    "train_metrics": False,
    # DB-MTL: log losses, each task's gradient rescaled to the largest
    # one's EMA norm. NER has ~20x fewer informative tokens than POS; a
    # static 2x on the NER loss was the recipe before (card). On the
    # gradients w.r.t. the BiLSTM's output (`rep_grad`): one backward pass
    # through the trunk instead of one per task, 1.50x the earlier
    # configuration's train step against 0.72x in parameter mode
    # (tagging_speed.py --weighting), at the same dev figures within one
    # seed's noise (94.47 / 70.27 against 94.17 / 70.76, card).
    "weighting": "dbmtl:rep_grad=True",
    "model_kwargs": {"lstm_units": 128, "dropout": 0.5, "word_dropout": 0.25,
                     "word_dim": 100, "char_dim": 32, "char_filters": 64},
}


@register_model(example_data=_example_data, data=_training_data, recipe=BILSTM_RECIPE)
def pos_ner_bilstm_crf(
    vocabulary: Sequence[str] | None = None,
    pos_tags: Sequence[str] | None = None,
    ner_tags: Sequence[str] | None = None,
    char_vocabulary: Sequence[str] | None = None,
    tasks: Sequence[mtl.tasks.Task] | None = None,
    word_dim: int = 64,
    char_dim: int = 16,
    char_filters: int = 32,
    char_encoder: str = "cnn",
    lstm_units: int = 64,
    lstm_layers: int = 1,
    dropout: float = 0.25,
    word_dropout: float = 0.0,
    casing_dim: int = 0,
    variational_dropout: bool = False,
    recurrent_dropout: float = 0.0,
    ner_crf: bool = True,
    weighting: mtl.weighting.LossWeighting | None = None,
) -> mtl.MultiTaskModel:
    """Joint POS + NER tagger: words + character CNN, BiLSTM trunk, CRF NER head.

    Args:
        vocabulary: list of str. Lowercased word vocabulary (e.g.
            `build_vocabulary(train, min_count=2, lowercase=True)`); other
            words share the OOV embedding. Defaults to the synthetic corpus'.
        pos_tags: list of str. POS tag of each id. Defaults to the synthetic
            corpus' tags.
        ner_tags: list of str. IOB2 NER tags. Defaults to the synthetic
            corpus' tags.
        char_vocabulary: list of single-character str. Defaults to the
            synthetic corpus' characters.
        tasks: the tasks to build heads for. Defaults to `pos` (softmax) and
            `ner` (IOB2, CRF when `ner_crf`).
        word_dim, char_dim, char_filters: embedding sizes. Default to 64, 16, 32.
        char_encoder: str. `"cnn"` (a character CNN, max-pooled) or
            `"bilstm"` (a character BiLSTM of `char_filters // 2` units each
            way; `kerasmtl.layers.CharacterEncoder`). Defaults to `"cnn"`.
        lstm_units: int. Units per direction. Defaults to `64`.
        lstm_layers: int. Stacked BiLSTM layers. Defaults to `1`.
        dropout: float. Dropout on token features and between layers.
            Defaults to `0.25`.
        word_dropout: float. Share of known words replaced by the OOV word
            in training (`kerasmtl.layers.WordDropout`). Defaults to `0.0`.
        casing_dim: int. Size of an embedding of each token's casing class
            (`kerasmtl.layers.WordShape`: all lower, initial upper, numeric,
            ...), concatenated to the token features; `0` for none (the
            lowercased word lookup then leaves casing to the character CNN).
            Defaults to `0`.
        variational_dropout: bool. The dropout on the token features and
            after each BiLSTM layer drops the same features at every time
            step of a sentence (`SpatialDropout1D`, Gal and Ghahramani,
            2016) instead of a fresh mask per token. Defaults to `False`.
        recurrent_dropout: float. Variational dropout on each LSTM's state
            (`keras.layers.LSTM`'s `recurrent_dropout`; Keras's own loop
            then runs, not the hoisted one: slower). Defaults to `0.0`.
        ner_crf: bool. CRF (Viterbi) NER head, else per-token softmax.
            Defaults to `True`.
        weighting: loss weighting. Defaults to `Equal()`.

    Examples:

    >>> from zoo import create_model
    >>> model = create_model("pos_ner_bilstm_crf", word_dim=8, char_filters=4, lstm_units=4)
    >>> model.task_names, model.get_task("ner").crf
    (['pos', 'ner'], True)
    """
    tokens, x, tasks = _token_inputs(vocabulary, char_vocabulary, pos_tags, ner_tags,
                                     tasks, ner_crf, word_dim, char_dim, char_filters,
                                     dropout, word_dropout, casing_dim,
                                     variational_dropout, char_encoder)
    for i in range(lstm_layers):
        x = keras.layers.Bidirectional(
            # Keras's LSTM with the input projection out of the time loop and
            # no mask in it (batches are padded at the end): ~1.2x faster on
            # the CPU, same weights (kerasmtl.layers.HoistedLSTM).
            mtl.layers.HoistedLSTM(lstm_units, return_sequences=True,
                                   recurrent_dropout=recurrent_dropout),
            name=f"bilstm_{i}")(x)
        x = _dropout(dropout, variational_dropout, f"bilstm_dropout_{i}")(x)
    # A dict input, as `tagging_dataset` yields: a bare tensor input makes
    # Keras warn on every batch that the structures differ.
    return mtl.sharing.hard_sharing({"tokens": tokens}, x, tasks, weighting=weighting,
                                    name="pos_ner_bilstm_crf")


@register_model(example_data=_example_data, data=_training_data)
def pos_ner_transformer(
    vocabulary: Sequence[str] | None = None,
    pos_tags: Sequence[str] | None = None,
    ner_tags: Sequence[str] | None = None,
    char_vocabulary: Sequence[str] | None = None,
    tasks: Sequence[mtl.tasks.Task] | None = None,
    word_dim: int = 64,
    char_dim: int = 16,
    char_filters: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    ff_dim: int = 128,
    max_length: int = 256,
    dropout: float = 0.1,
    word_dropout: float = 0.0,
    casing_dim: int = 0,
    ner_crf: bool = True,
    weighting: mtl.weighting.LossWeighting | None = None,
) -> mtl.MultiTaskModel:
    """Joint POS + NER tagger with a small Transformer encoder trunk.

    Token features as in `pos_ner_bilstm_crf` (width `word_dim +
    char_filters + casing_dim`) plus learned position embeddings, then `num_layers`
    post-norm `TransformerEncoderBlock`s (self-attention that ignores
    padding, feed-forward).

    Args:
        vocabulary, pos_tags, ner_tags, char_vocabulary, tasks, word_dim,
            char_dim, char_filters, word_dropout, casing_dim, ner_crf, weighting: as for
            `pos_ner_bilstm_crf`.
        num_layers: int. Encoder blocks. Defaults to `2`.
        num_heads: int. Attention heads. Defaults to `4`.
        ff_dim: int. Feed-forward width. Defaults to `128`.
        max_length: int. Longest sentence the position embedding covers; a
            longer input fails at call time (split long sentences with
            `tagging_dataset(..., on_long="split")`). Defaults to `256`.
        dropout: float. Defaults to `0.1`.

    Examples:

    >>> from zoo import create_model
    >>> create_model("pos_ner_transformer", word_dim=8, char_filters=8,
    ...              num_heads=2, ff_dim=8).task_names
    ['pos', 'ner']
    """
    width = word_dim + char_filters + casing_dim
    if width % num_heads:
        raise ValueError(
            f"word_dim + char_filters + casing_dim ({width}) must be divisible by num_heads "
            f"({num_heads}) for the Transformer trunk."
        )
    tokens, x, tasks = _token_inputs(vocabulary, char_vocabulary, pos_tags, ner_tags,
                                     tasks, ner_crf, word_dim, char_dim, char_filters,
                                     dropout, word_dropout, casing_dim)
    x = mtl.layers.PositionEmbedding(max_length, name="position_embedding")(x)
    for i in range(num_layers):
        x = mtl.layers.TransformerEncoderBlock(num_heads, ff_dim, dropout,
                                               name=f"encoder_{i}")(x)
    return mtl.sharing.hard_sharing({"tokens": tokens}, x, tasks, weighting=weighting,
                                    name="pos_ner_transformer")
