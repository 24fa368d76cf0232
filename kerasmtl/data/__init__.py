"""Data sources yielding `(features, {task_name: labels})`; missing labels are
marked (-1 / NaN), never dropped.

tensorflow-datasets loaders live in `kerasmtl.data.tfds_tagging` and
`kerasmtl.data.tfds_multilabel` (they import tfds when called).
"""

from kerasmtl.data.arff import (
    load_mulan,
    load_mulan_benchmark,
    read_arff,
    read_mulan_labels,
)
from kerasmtl.data.conll import (
    load_ud_ewt_uner,
    read_conllu,
    read_iob,
    read_joined_tsv,
    read_uner,
)
from kerasmtl.data.label_table import (
    MultiLabelData,
    image_folder_with_labels,
    read_label_csv,
)
from kerasmtl.data.synthetic_multilabel import synthetic_multilabel
from kerasmtl.data.synthetic_tabular import synthetic_tabular, synthetic_tabular_tasks
from kerasmtl.data.synthetic_tagging import (
    synthetic_tag_vocabularies,
    synthetic_tagged_corpus,
)
from kerasmtl.data.tagging import (
    TaggedCorpus,
    build_char_vocabulary,
    build_vocabulary,
    concatenate_corpora,
    encode_tags,
    merge_corpora,
    string_lookup,
    tag_vocabularies,
    tag_vocabulary,
    tagging_dataset,
    to_arrays,
)

__all__ = [
    "MultiLabelData",
    "TaggedCorpus",
    "build_char_vocabulary",
    "build_vocabulary",
    "concatenate_corpora",
    "encode_tags",
    "image_folder_with_labels",
    "load_mulan",
    "load_mulan_benchmark",
    "load_ud_ewt_uner",
    "merge_corpora",
    "read_arff",
    "read_conllu",
    "read_iob",
    "read_joined_tsv",
    "read_label_csv",
    "read_mulan_labels",
    "read_uner",
    "string_lookup",
    "synthetic_multilabel",
    "synthetic_tabular",
    "synthetic_tabular_tasks",
    "synthetic_tag_vocabularies",
    "synthetic_tagged_corpus",
    "tag_vocabularies",
    "tag_vocabulary",
    "tagging_dataset",
    "to_arrays",
]
