"""Data sources yielding `(features, {task_name: labels})`; missing labels are
marked (-1 / NaN), never dropped.

tensorflow-datasets loaders live in `kerasmtl.data.tfds_tagging`,
`kerasmtl.data.tfds_multilabel` and `kerasmtl.data.tfds_vision` (they import
tfds when called).
"""

from kerasmtl.data.arff import (
    load_mulan,
    load_mulan_benchmark,
    read_arff,
    read_mulan_labels,
)
from kerasmtl.data.coco import is_coco_folder, read_coco, read_coco_folder
from kerasmtl.data.conll import (
    load_ud_ewt_uner,
    read_conllu,
    read_iob,
    read_joined_tsv,
    read_uner,
)
from kerasmtl.data.dynamic_sampling import DynamicSampling
from kerasmtl.data.label_table import (
    MultiLabelData,
    image_folder_with_labels,
    read_label_csv,
)
from kerasmtl.data.mixing import mix, padding_values
from kerasmtl.data.nuclei import is_instance_mask_folder, read_instance_mask_folder
from kerasmtl.data.shapes import synthetic_shapes
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
from kerasmtl.data.vision import VisionData, vision_dataset
from kerasmtl.data.vision_augment import VisionAugment
from kerasmtl.data.voc import read_voc

__all__ = [
    "DynamicSampling",
    "mix",
    "padding_values",
    "VisionAugment",
    "VisionData",
    "is_instance_mask_folder",
    "read_instance_mask_folder",
    "synthetic_shapes",
    "vision_dataset",
    "MultiLabelData",
    "TaggedCorpus",
    "build_char_vocabulary",
    "build_vocabulary",
    "concatenate_corpora",
    "encode_tags",
    "image_folder_with_labels",
    "is_coco_folder",
    "load_mulan",
    "load_mulan_benchmark",
    "load_ud_ewt_uner",
    "merge_corpora",
    "read_arff",
    "read_coco",
    "read_coco_folder",
    "read_conllu",
    "read_iob",
    "read_joined_tsv",
    "read_label_csv",
    "read_mulan_labels",
    "read_uner",
    "read_voc",
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
