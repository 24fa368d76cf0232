"""Tagged text for sequence tagging.

- `container`: `TaggedCorpus` and joining corpora;
- `readers` (with `columns`): CoNLL-U, CoNLL-2003 / IOB2, Universal NER and
  the joined UD-EWT + UNER files;
- `synthetic`: a built-in synthetic POS + NER corpus;
- `vocabularies`: word, character and tag vocabularies, `StringLookup`s;
- `pipeline`: label ids, padded arrays and bucketed `tf.data` pipelines;
- `tfds`: tensorflow-datasets loaders (they import tfds when called; not
  imported here).
"""

from kerasmtl.data.text.container import (
    TaggedCorpus,
    concatenate_corpora,
    merge_corpora,
)
from kerasmtl.data.text.pipeline import encode_tags, tagging_dataset, to_arrays
from kerasmtl.data.text.readers import (
    load_ud_ewt_uner,
    read_conllu,
    read_iob,
    read_joined_tsv,
    read_uner,
)
from kerasmtl.data.text.synthetic import (
    synthetic_tag_vocabularies,
    synthetic_tagged_corpus,
)
from kerasmtl.data.text.vocabularies import (
    build_char_vocabulary,
    build_vocabulary,
    string_lookup,
    tag_vocabularies,
    tag_vocabulary,
)

__all__ = [
    "TaggedCorpus",
    "build_char_vocabulary",
    "build_vocabulary",
    "concatenate_corpora",
    "encode_tags",
    "load_ud_ewt_uner",
    "merge_corpora",
    "read_conllu",
    "read_iob",
    "read_joined_tsv",
    "read_uner",
    "string_lookup",
    "synthetic_tag_vocabularies",
    "synthetic_tagged_corpus",
    "tag_vocabularies",
    "tag_vocabulary",
    "tagging_dataset",
    "to_arrays",
]
