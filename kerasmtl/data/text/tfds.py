"""Tagging corpora from TensorFlow Datasets: CoNLL-2003, Universal
Dependencies and WikiANN, as a `TaggedCorpus` plus tag vocabularies.

Each loader returns `(corpus, tag_vocabularies)`. For a `ClassLabel` tag
feature the vocabulary is the feature's names, so label id `k` means the same
as in tfds; for a text tag feature (UD's `xpos`) it is `tag_vocabulary` of the
loaded split. tfds features (tensorflow-datasets 4.9):

| data set                    | tokens   | tags                                  |
|-----------------------------|----------|---------------------------------------|
| `conll2003`                 | `tokens` | `pos` (PTB), `chunks`, `ner` (IOB2)   |
| `universal_dependencies/<c>`| `tokens` | `upos` (ClassLabel), `xpos` (text)    |
| `wikiann/<language>`        | `tokens` | `tags` (IOB2 PER/ORG/LOC)             |

`tensorflow_datasets` is imported on first use. With `download=True` tfds may
download and prepare the data set into `data_dir`; tests use
`tfds.testing.mock_data` instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from kerasmtl.data.text.container import TaggedCorpus
from kerasmtl.data.text.vocabularies import tag_vocabulary

# UD's `upos` for multi-word token lines (`don't` over `do` + `n't`), which
# tfds keeps in the word sequence.
_UD_MULTIWORD_UPOS = "_"


def load_tfds_tagged(
    name: str,
    split: str,
    tag_features: Mapping[str, str],
    token_feature: str = "tokens",
    data_dir: str | None = None,
    download: bool = True,
    drop_tags: Mapping[str, Sequence[str]] | None = None,
    id_feature: str | None = None,
) -> tuple[TaggedCorpus, dict[str, list[str]]]:
    """Loads any tfds data set of token and tag sequences.

    Args:
        name: str. tfds name, with config, e.g. `"wikiann/en"`.
        split: str. tfds split, e.g. `"train"` or `"train[:10%]"`.
        tag_features: `{task_name: feature_name}` of the tag sequences.
        token_feature: str. Feature of the token strings. Defaults to
            `"tokens"`.
        data_dir: str or None. tfds data folder. Defaults to `None` (tfds'
            default, `~/tensorflow_datasets`).
        download: bool. Let tfds download and prepare the data set if it is
            not in `data_dir`. Defaults to `True`.
        drop_tags: `{task_name: tags}` or None. Positions where a task has one
            of these tags are removed from every sequence of the example, and
            the tags from the vocabulary. Defaults to `None`.
        id_feature: str or None. Text feature holding a sentence id (UD's
            `idx`, its `sent_id`). Defaults to `None`: ids are
            `<name>/<split>/<example index>`.

    Returns:
        `(corpus, tag_vocabularies)`. Examples with no tokens are skipped.

    Raises:
        ValueError: if a feature is missing or not a sequence of class labels
            or text, or if an example's token and tag sequences differ in
            length (naming the example).
    """
    import tensorflow_datasets as tfds

    drop = {task: set(tags) for task, tags in (drop_tags or {}).items()}
    unknown = set(drop) - set(tag_features)
    if unknown:
        raise ValueError(f"`drop_tags` names tasks {sorted(unknown)} not in `tag_features`.")
    ds, info = tfds.load(
        name, split=split, data_dir=data_dir, download=download, with_info=True
    )
    features = info.features
    names = {}
    # task None is the token feature.
    for key, feature_name in [(None, token_feature), *tag_features.items()]:
        if feature_name not in features:
            raise ValueError(
                f"tfds data set '{name}' has no feature '{feature_name}' (for "
                f"{key or 'tokens'!r}); its features are {sorted(features.keys())}."
            )
        inner = getattr(features[feature_name], "feature", None)
        if isinstance(inner, tfds.features.ClassLabel) and key is not None:
            names[key] = list(inner.names)
        elif not isinstance(inner, tfds.features.Text):
            raise ValueError(
                f"Feature '{feature_name}' of tfds data set '{name}' is "
                f"{features[feature_name]!r}; expected a Sequence of Text"
                + (" or ClassLabel." if key is not None else ".")
            )
    if id_feature is not None and id_feature not in features:
        raise ValueError(
            f"tfds data set '{name}' has no feature '{id_feature}' (for ids); "
            f"its features are {sorted(features.keys())}."
        )
    tokens, tags, ids = [], {task: [] for task in tag_features}, []
    for index, example in enumerate(tfds.as_numpy(ds)):
        words = [w.decode("utf-8") for w in example[token_feature]]
        row = {}
        for task, feature_name in tag_features.items():
            values = example[feature_name]
            if len(values) != len(words):
                raise ValueError(
                    f"tfds data set '{name}' split '{split}', example {index}: "
                    f"feature '{token_feature}' has {len(words)} items but "
                    f"'{feature_name}' has {len(values)}. Tags must align with "
                    "tokens one to one."
                )
            if task in names:
                row[task] = [names[task][int(v)] for v in values]
            else:
                row[task] = [v.decode("utf-8") for v in values]
        keep = [
            k for k in range(len(words))
            if not any(row[task][k] in drop[task] for task in drop)
        ]
        if not keep:
            continue
        tokens.append([words[k] for k in keep])
        for task in tag_features:
            tags[task].append([row[task][k] for k in keep])
        if id_feature is None:
            ids.append(f"{name}/{split}/{index}")
        else:
            ids.append(example[id_feature].decode("utf-8"))
    corpus = TaggedCorpus(tokens, tags, ids)
    vocabularies = {}
    for task in tag_features:
        if task in names:
            vocabularies[task] = [t for t in names[task] if t not in drop.get(task, ())]
        else:
            vocabularies[task] = tag_vocabulary(corpus, task)
    return corpus, vocabularies


def load_conll2003(
    split: str,
    tasks: Sequence[str] = ("pos", "ner"),
    data_dir: str | None = None,
    download: bool = True,
) -> tuple[TaggedCorpus, dict[str, list[str]]]:
    """CoNLL-2003 English (tfds `conll2003`): PTB POS, chunk and NER tags.

    Args:
        split: str. `"train"`, `"dev"` or `"test"` (tfds slicing allowed).
        tasks: the tags to load, among `"pos"`, `"chunks"` and `"ner"` (the
            task names are the tfds feature names). Defaults to
            `("pos", "ner")`.
        data_dir: str or None. tfds data folder. Defaults to `None`.
        download: bool. Defaults to `True`.

    Returns:
        `(corpus, tag_vocabularies)`; the NER vocabulary is IOB2 with PER,
        ORG, LOC and MISC, `O` first.
    """
    _check_choice("tasks", tasks, ("pos", "chunks", "ner"))
    return load_tfds_tagged(
        "conll2003", split, {t: t for t in tasks}, data_dir=data_dir, download=download
    )


def load_universal_dependencies(
    config: str = "en_ewt",
    split: str = "train",
    fields: Sequence[str] = ("upos",),
    data_dir: str | None = None,
    download: bool = True,
) -> tuple[TaggedCorpus, dict[str, list[str]]]:
    """A Universal Dependencies treebank (tfds `universal_dependencies/<config>`).

    tfds keeps multi-word token lines (UPOS `_`) in the word sequence; they are
    dropped here, so tokens are the syntactic words, as in `read_conllu`.

    Args:
        config: str. Treebank, e.g. `"en_ewt"`, `"de_gsd"`. Defaults to
            `"en_ewt"`.
        split: str. `"train"`, `"dev"` or `"test"`. Defaults to `"train"`.
        fields: among `"upos"` and `"xpos"` (task names = field names).
            Defaults to `("upos",)`.
        data_dir: str or None. Defaults to `None`.
        download: bool. Defaults to `True`.

    Returns:
        `(corpus, tag_vocabularies)`: UPOS from the `ClassLabel` names (17
        tags), XPOS from the tags of the loaded split; ids are the
        `sent_id`s.
    """
    _check_choice("fields", fields, ("upos", "xpos"))
    # Multi-word lines are found through UPOS, so read it even if not asked.
    tag_features = {"upos": "upos", **{f: f for f in fields}}
    corpus, vocabularies = load_tfds_tagged(
        f"universal_dependencies/{config}",
        split,
        tag_features,
        data_dir=data_dir,
        download=download,
        drop_tags={"upos": [_UD_MULTIWORD_UPOS]},
        id_feature="idx",
    )
    if "upos" not in fields:
        corpus = TaggedCorpus(corpus.tokens, {f: corpus.tags[f] for f in fields}, corpus.ids)
        vocabularies = {f: vocabularies[f] for f in fields}
    return corpus, vocabularies


def load_wikiann(
    language: str = "en",
    split: str = "train",
    data_dir: str | None = None,
    download: bool = True,
) -> tuple[TaggedCorpus, dict[str, list[str]]]:
    """WikiANN NER (tfds `wikiann/<language>`): the task `"ner"` from the
    tfds feature `tags` (IOB2 PER/ORG/LOC).

    Args:
        language: str. Language code, e.g. `"en"`, `"de"`. Defaults to `"en"`.
        split: str. `"train"`, `"validation"` or `"test"`. Defaults to
            `"train"`.
        data_dir: str or None. Defaults to `None`.
        download: bool. Defaults to `True`.
    """
    return load_tfds_tagged(
        f"wikiann/{language}", split, {"ner": "tags"}, data_dir=data_dir, download=download
    )


def _check_choice(argument, values, allowed):
    if isinstance(values, str) or not values or any(v not in allowed for v in values):
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected a non-empty list "
            f"among {list(allowed)}. Received: {argument}={values!r}"
        )
