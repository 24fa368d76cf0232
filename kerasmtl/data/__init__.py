"""Data sources yielding `(features, {task_name: labels})`; missing labels are
marked (-1 / NaN), never dropped.

Sources are grouped by domain: `kerasmtl.data.text` (tagged corpora),
`kerasmtl.data.vision` (images with boxes and masks) and
`kerasmtl.data.tabular` (multi-label and multi-task tables); splitting and
mixing data sets stay here. The tensorflow-datasets loaders live in
`kerasmtl.data.text.tfds`, `kerasmtl.data.tabular.tfds` and
`kerasmtl.data.vision.tfds` (they import tfds when called).

Data never imports tasks: the tasks that fit the synthetic tabular labels are
`mtl.tasks.synthetic_tabular_tasks()`, and a multi-label task for a
`MultiLabelData` is `mtl.tasks.MultiLabel.from_data(data)`.
"""

from kerasmtl.data.annealed_sampling import AnnealedSampling
from kerasmtl.data.dynamic_sampling import DynamicSampling
from kerasmtl.data.mixing import mix, padding_values
from kerasmtl.data.tabular.arff import read_arff
from kerasmtl.data.tabular.container import (
    MultiLabelData,
    image_folder_with_labels,
    read_label_csv,
)
from kerasmtl.data.tabular.mulan import (
    load_mulan,
    load_mulan_benchmark,
    read_mulan_labels,
)
from kerasmtl.data.tabular.synthetic import synthetic_tabular
from kerasmtl.data.tabular.synthetic_multilabel import synthetic_multilabel
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
from kerasmtl.data.vision.augment import VisionAugment
from kerasmtl.data.vision.coco import is_coco_folder, read_coco, read_coco_folder
from kerasmtl.data.vision.container import VisionData
from kerasmtl.data.vision.nuclei import (
    is_instance_mask_folder,
    read_instance_mask_folder,
)
from kerasmtl.data.vision.pipeline import vision_dataset
from kerasmtl.data.vision.synthetic import synthetic_shapes
from kerasmtl.data.vision.voc import read_voc

__all__ = [
    "DynamicSampling",
    "AnnealedSampling",
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
    "synthetic_tag_vocabularies",
    "synthetic_tagged_corpus",
    "tag_vocabularies",
    "tag_vocabulary",
    "tagging_dataset",
    "to_arrays",
]
