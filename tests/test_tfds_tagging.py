"""tfds tagging loaders, on `tfds.testing.mock_data` only (no download, no
data dir)."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from kerasmtl.data.text.tfds import (
    load_conll2003,
    load_tfds_tagged,
    load_universal_dependencies,
    load_wikiann,
)


def mocked(examples):
    """`mock_data` whose examples are `examples` (feature -> value); features
    not given are filled with placeholders of the right length.

    tfds' default random mock draws each sequence's length separately, so
    tokens and tags would not align; the loaders reject that (tested below).
    """

    def as_dataset(self, split, decoders=None, read_config=None, **kwargs):
        features = self.info.features
        full = []
        for example in examples:
            n = len(example["tokens"])
            row = {}
            for key, feature in features.items():
                if key in example:
                    row[key] = example[key]
                elif isinstance(feature, tfds.features.Sequence):
                    inner = feature.feature
                    is_label = isinstance(inner, tfds.features.ClassLabel)
                    row[key] = np.zeros(n, "int64") if is_label else ["_"] * n
                else:
                    row[key] = "_"
            full.append(row)
        signature = tf.nest.map_structure(
            lambda info: tf.TensorSpec(info.shape, info.tf_dtype),
            features.get_tensor_info(),
        )
        return tf.data.Dataset.from_generator(lambda: iter(full), output_signature=signature)

    return tfds.testing.mock_data(as_dataset_fn=as_dataset)


NER = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]


def test_conll2003_pos_and_ner_from_class_labels():
    examples = [
        {"tokens": ["EU", "rejects", "German"], "pos": np.array([22, 42, 16]),
         "ner": np.array([3, 0, 7])},
        {"tokens": [], "pos": np.array([], "int64"), "ner": np.array([], "int64")},
        {"tokens": ["Peter"], "pos": np.array([22]), "ner": np.array([1])},
    ]
    with mocked(examples):
        corpus, vocabularies = load_conll2003("train")
    # The empty example is skipped.
    assert corpus.tokens == [["EU", "rejects", "German"], ["Peter"]]
    assert corpus.ids == ["conll2003/train/0", "conll2003/train/2"]
    assert corpus.tags["pos"] == [["NNP", "VBZ", "JJ"], ["NNP"]]
    assert corpus.tags["ner"] == [["B-ORG", "O", "B-MISC"], ["B-PER"]]
    assert vocabularies["ner"] == NER + ["B-MISC", "I-MISC"]
    assert len(vocabularies["pos"]) == 47 and vocabularies["pos"][22] == "NNP"
    with mocked(examples[:1]):
        corpus, vocabularies = load_conll2003("dev", tasks=("ner",))
    assert corpus.tasks == ["ner"] and list(vocabularies) == ["ner"]


def test_wikiann_tags_become_ner():
    examples = [{"tokens": ["Rick", "in", "Rome"], "tags": np.array([1, 0, 5])}]
    with mocked(examples):
        corpus, vocabularies = load_wikiann("en", "validation")
    assert corpus.tags == {"ner": [["B-PER", "O", "B-LOC"]]}
    assert vocabularies == {"ner": NER}


def test_universal_dependencies_drops_multiword_lines():
    # UPOS ids: AUX 3, PART 9, VERB 15, '_' 17 (the multi-word line "don't").
    examples = [{
        "idx": "s-1",
        "tokens": ["don't", "do", "n't", "go"],
        "upos": np.array([17, 3, 9, 15]),
        "xpos": ["None", "VBP", "RB", "VB"],
    }]
    with mocked(examples):
        corpus, vocabularies = load_universal_dependencies("en_ewt", "dev", fields=("upos", "xpos"))
    assert corpus.tokens == [["do", "n't", "go"]] and corpus.ids == ["s-1"]
    assert corpus.tags == {"upos": [["AUX", "PART", "VERB"]], "xpos": [["VBP", "RB", "VB"]]}
    assert len(vocabularies["upos"]) == 17 and "_" not in vocabularies["upos"]
    assert vocabularies["xpos"] == ["RB", "VB", "VBP"]  # from the loaded split
    with mocked(examples):
        corpus, vocabularies = load_universal_dependencies("en_ewt", "dev", fields=("xpos",))
    assert corpus.tasks == ["xpos"] and list(vocabularies) == ["xpos"]
    assert corpus.ids == ["s-1"]


def test_random_mock_examples_are_rejected_as_misaligned():
    with tfds.testing.mock_data(num_examples=2):
        with pytest.raises(ValueError, match=r"'wikiann/en' split 'train', example 0: "
                           r"feature 'tokens' has \d+ items but 'tags' has \d+"):
            load_wikiann("en", "train")


def test_loader_argument_errors():
    with tfds.testing.mock_data(num_examples=1):
        with pytest.raises(ValueError, match=r"no feature 'ner' .*\['langs', 'spans', 'tags', 'tokens'\]"):
            load_tfds_tagged("wikiann/en", "train", {"ner": "ner"})
    with pytest.raises(ValueError, match=r"`tasks`. Expected a non-empty list among"):
        load_conll2003("train", tasks=("ner", "lemma"))
    with pytest.raises(ValueError, match=r"`fields`. Expected"):
        load_universal_dependencies(fields="upos")
