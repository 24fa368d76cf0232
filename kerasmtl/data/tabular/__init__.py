"""Multi-label and multi-task data held as tables.

- `container`: `MultiLabelData`, the CSV label-table reader and image folders
  with a CSV label table;
- readers: `arff` (Weka ARFF files) and `mulan` (MULAN data sets: ARFF + XML
  label file);
- `synthetic`: `synthetic_tabular`, a multi-task data set (classification,
  regression, multi-label); `synthetic_multilabel`: correlated multi-label
  data;
- `tfds`: tensorflow-datasets loaders of multi-label images (they import tfds
  when called; not imported here).
"""

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

__all__ = [
    "MultiLabelData",
    "image_folder_with_labels",
    "load_mulan",
    "load_mulan_benchmark",
    "read_arff",
    "read_label_csv",
    "read_mulan_labels",
    "synthetic_multilabel",
    "synthetic_tabular",
]
