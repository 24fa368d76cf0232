"""Multi-label data held as tables: a CSV with label columns, and a folder of
images with a CSV label table.

Labels for a multi-label task are int32 `[N, L]`: 1 present, 0 absent, -1
unknown (the `MultiLabel` task masks unknown elements one by one). A cell of a
label column may be `1`/`0`/`-1`, `true`/`false` (any case), or empty / `?`
(unknown). `MultiLabelData` is the in-memory container the ARFF, CSV and
synthetic readers return; image folders stream through `tf.data` instead.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

# Label cell text -> value. Empty and "?" (ARFF's missing marker) are unknown,
# because a blank cell in a spreadsheet means "not annotated", not "absent".
_LABEL_VALUES = {
    "1": 1, "0": 0, "-1": -1, "1.0": 1, "0.0": 0, "-1.0": -1,
    "true": 1, "false": 0, "": -1, "?": -1,
}
# First bytes of the formats `tf.io.decode_image` reads.
_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM")


@dataclasses.dataclass
class MultiLabelData:
    """Features and multi-label labels of one data set, held in memory.

    Args:
        features: float32 `[N, F]`. One row per example.
        labels: int32 `[N, L]`: 1 present, 0 absent, -1 unknown.
        feature_names: list of str, `F` names.
        label_names: list of str, `L` names, in the column order of `labels`.
        task_name: str. The key of the labels in `targets()`. Defaults to
            `"labels"`.
        feature_key: str or None. If set, `inputs()` is `{feature_key:
            features}` (for a model with a named input); else the bare array.
            Defaults to `None`.
        ids: list of str or None. One identifier per row (e.g. a CSV id
            column). Defaults to `None`.
        metadata: dict. Anything the source wants to record (file names,
            generator rules). Defaults to `{}`.

    Examples:

    >>> data = MultiLabelData(
    ...     np.zeros((2, 3), "float32"), np.array([[1, 0], [-1, 1]], "int32"),
    ...     ["a", "b", "c"], ["x", "y"])
    >>> x, y = data.as_xy()
    >>> x.shape, y["labels"].tolist(), data.label_cardinality()
    ((2, 3), [[1, 0], [-1, 1]], 1.0)
    """

    features: np.ndarray
    labels: np.ndarray
    feature_names: list[str]
    label_names: list[str]
    task_name: str = "labels"
    feature_key: str | None = None
    ids: list[str] | None = None
    metadata: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self.features = np.asarray(self.features, dtype="float32")
        self.labels = np.asarray(self.labels)
        if self.features.ndim != 2 or self.labels.ndim != 2:
            raise ValueError(
                "MultiLabelData expects features [N, F] and labels [N, L]. "
                f"Received: features {self.features.shape}, labels {self.labels.shape}."
            )
        if len(self.features) != len(self.labels):
            raise ValueError(
                f"features has {len(self.features)} rows but labels has "
                f"{len(self.labels)}; they must describe the same examples."
            )
        if self.labels.dtype.kind == "f" and np.isnan(self.labels).any():
            raise ValueError("labels contain NaN; mark unknown labels with -1.")
        bad = ~np.isin(self.labels, (-1, 0, 1))
        if bad.any():
            raise ValueError(
                "labels must be 1 (present), 0 (absent) or -1 (unknown); found "
                f"{np.unique(self.labels[bad])[:5].tolist()}."
            )
        self.labels = self.labels.astype("int32")
        self.feature_names = list(self.feature_names)
        self.label_names = list(self.label_names)
        for what, names, width in (
            ("feature_names", self.feature_names, self.features.shape[1]),
            ("label_names", self.label_names, self.labels.shape[1]),
        ):
            if len(names) != width:
                raise ValueError(
                    f"{what} has {len(names)} names for {width} columns."
                )
        if self.ids is not None and len(self.ids) != len(self.labels):
            raise ValueError(f"ids has {len(self.ids)} entries for {len(self.labels)} rows.")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_features(self) -> int:
        return self.features.shape[1]

    @property
    def num_labels(self) -> int:
        return self.labels.shape[1]

    def inputs(self):
        """The features as a model takes them: the array, or `{feature_key: array}`."""
        return self.features if self.feature_key is None else {self.feature_key: self.features}

    def targets(self) -> dict[str, np.ndarray]:
        """`{task_name: labels}`."""
        return {self.task_name: self.labels}

    def as_xy(self):
        """`(inputs(), targets())`, ready for `MultiTaskModel.fit(x, y)`."""
        return self.inputs(), self.targets()

    def select(self, indices) -> MultiLabelData:
        """The rows at `indices` (an int array or a boolean mask), as a new object."""
        indices = np.asarray(indices)
        ids = None if self.ids is None else [self.ids[i] for i in np.arange(len(self))[indices]]
        return dataclasses.replace(
            self, features=self.features[indices], labels=self.labels[indices],
            ids=ids, metadata=dict(self.metadata),
        )

    def label_cardinality(self) -> float:
        """Mean number of present labels per row (unknown labels count as absent)."""
        return float((self.labels == 1).sum(axis=1).mean()) if len(self) else 0.0

    def to_dataset(
        self, batch_size: int = 32, shuffle: bool = False, seed: int | None = None
    ) -> tf.data.Dataset:
        """A batched `tf.data.Dataset` of `(inputs, {task_name: labels})`.

        Args:
            batch_size: int. Rows per batch; the last batch may be smaller.
                Defaults to `32`.
            shuffle: bool. Reshuffle the rows every epoch. Defaults to `False`.
            seed: int or None. Shuffle seed. Defaults to `None`.
        """
        ds = tf.data.Dataset.from_tensor_slices(self.as_xy())
        if shuffle:
            ds = ds.shuffle(len(self), seed=seed, reshuffle_each_iteration=True)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def parse_label_cell(text: str, where: str) -> int:
    """Parses one label cell (`1`, `0`, `-1`, `true`, `false`, empty or `?`
    for unknown); `where` names the file, line and column in the error."""
    value = _LABEL_VALUES.get(text.strip().lower())
    if value is None:
        raise ValueError(
            f"{where}: label value {text!r} is not one of 1 (present), 0 (absent), "
            "-1 or empty (unknown), true/false. Fix the cell or mark it unknown."
        )
    return value


def _read_table(path, delimiter: str):
    """Header and `(line number, row)` pairs of a CSV file; every row must have
    as many cells as the header."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"Label table {str(path)!r} does not exist or is not a file.")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return _read_rows(path, csv.reader(f, delimiter=delimiter), delimiter)
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path}: not UTF-8 text ({err}). Re-encode the file as UTF-8."
        ) from None


def _read_rows(path, reader, delimiter):
    header = next(reader, None)
    if header is None:
        raise ValueError(f"{path}: the file is empty; expected a header row.")
    header = [h.strip() for h in header]
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise ValueError(f"{path}:1: duplicate column names {dupes}.")
    rows = []
    for row in reader:
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line
        if len(row) != len(header):
            raise ValueError(
                f"{path}:{reader.line_num}: {len(row)} cells, but the header has "
                f"{len(header)} ({delimiter!r}-separated). Check the delimiter "
                "and quoting."
            )
        rows.append((reader.line_num, row))
    return path, header, rows


def _column_indices(path, header, columns, what: str) -> list[int]:
    missing = [c for c in columns if c not in header]
    if missing:
        raise ValueError(
            f"{path}: {what} {missing} not in the header. Columns are: {header}."
        )
    return [header.index(c) for c in columns]


def _parse_labels(path, header, rows, label_idx) -> np.ndarray:
    labels = np.empty((len(rows), len(label_idx)), dtype="int32")
    for r, (line, row) in enumerate(rows):
        for j, c in enumerate(label_idx):
            labels[r, j] = parse_label_cell(
                row[c], f"{path}:{line}, column {header[c]!r}"
            )
    return labels


def read_label_csv(
    path: str | os.PathLike,
    label_columns: Sequence[str],
    feature_columns: Sequence[str] | None = None,
    id_column: str | None = None,
    delimiter: str = ",",
    task_name: str = "labels",
    feature_key: str | None = None,
) -> MultiLabelData:
    """Reads a CSV file with a header row, numeric feature columns and label
    columns.

    Label cells are `1`/`0`/`-1`, `true`/`false` (any case), or empty / `?`
    (unknown -> -1). Feature cells are numbers; an empty cell is NaN (impute
    before training).

    Args:
        path: path of the CSV file (UTF-8, a BOM is accepted).
        label_columns: sequence of str. The label columns, in the order the
            label vector uses.
        feature_columns: sequence of str or None. The feature columns; `None`
            means every column that is neither a label nor the id. Defaults to
            `None`.
        id_column: str or None. A column kept as `ids` (not a feature).
            Defaults to `None`.
        delimiter: str. Cell separator. Defaults to `","`.
        task_name: str. Key of the labels. Defaults to `"labels"`.
        feature_key: str or None. See `MultiLabelData`. Defaults to `None`.

    Returns:
        A `MultiLabelData`.

    Raises:
        ValueError: naming the file, line and column of a bad cell, or the
            columns missing from the header.
    """
    label_columns = list(label_columns)
    if not label_columns:
        raise ValueError("Invalid value for argument `label_columns`: expected at least one column.")
    path, header, rows = _read_table(path, delimiter)
    label_idx = _column_indices(path, header, label_columns, "label column(s)")
    id_idx = None
    if id_column is not None:
        id_idx = _column_indices(path, header, [id_column], "id column")[0]
    if feature_columns is None:
        skip = set(label_idx) | ({id_idx} if id_idx is not None else set())
        feature_columns = [h for i, h in enumerate(header) if i not in skip]
    feature_columns = list(feature_columns)
    overlap = sorted(set(feature_columns) & set(label_columns))
    if overlap:
        raise ValueError(f"{path}: columns {overlap} are both features and labels.")
    feature_idx = _column_indices(path, header, feature_columns, "feature column(s)")

    features = np.empty((len(rows), len(feature_idx)), dtype="float32")
    for r, (line, row) in enumerate(rows):
        for j, c in enumerate(feature_idx):
            text = row[c].strip()
            if not text:
                features[r, j] = np.nan
                continue
            try:
                features[r, j] = float(text)
            except ValueError:
                raise ValueError(
                    f"{path}:{line}, column {header[c]!r}: feature value {text!r} is "
                    "not a number. Drop the column from `feature_columns` or fix the cell."
                ) from None
    return MultiLabelData(
        features=features,
        labels=_parse_labels(path, header, rows, label_idx),
        feature_names=feature_columns,
        label_names=label_columns,
        task_name=task_name,
        feature_key=feature_key,
        ids=None if id_idx is None else [row[id_idx] for _, row in rows],
        metadata={"source": str(path)},
    )


def image_folder_with_labels(
    image_dir: str | os.PathLike,
    label_table_csv: str | os.PathLike,
    image_column: str = "image",
    label_columns: Sequence[str] | None = None,
    image_size: tuple[int, int] = (224, 224),
    batch_size: int = 32,
    task_name: str = "labels",
    shuffle: bool = False,
    seed: int | None = None,
    delimiter: str = ",",
) -> tf.data.Dataset:
    """A `tf.data` pipeline of images in a folder with their labels from a CSV.

    Every image the table lists must exist in `image_dir` (checked up front,
    with its first bytes: PNG, JPEG, GIF or BMP); a missing file is an error,
    never a silent skip. Images are decoded with `tf.io.decode_image`:
    grayscale becomes RGB by repeating the channel, RGBA drops alpha, GIF keeps
    the first frame. They are resized (bilinear, aspect ratio not kept) to
    `image_size` and scaled to float32 in [0, 1].

    Args:
        image_dir: folder the table's image paths are relative to.
        label_table_csv: CSV file with a header: one row per image.
        image_column: str. Column holding the image path. Defaults to `"image"`.
        label_columns: sequence of str or None. Label columns, in label-vector
            order; `None` means every other column, in file order. Defaults to
            `None`.
        image_size: `(height, width)`. Defaults to `(224, 224)`.
        batch_size: int. Defaults to `32`.
        task_name: str. Key of the labels. Defaults to `"labels"`.
        shuffle: bool. Reshuffle the rows every epoch. Defaults to `False`.
        seed: int or None. Shuffle seed. Defaults to `None`.
        delimiter: str. Cell separator. Defaults to `","`.

    Returns:
        A `tf.data.Dataset` of `({"image": float32 [B, h, w, 3]},
        {task_name: int32 [B, L]})`.
    """
    if len(image_size) != 2 or min(image_size) < 1:
        raise ValueError(
            "Invalid value for argument `image_size`. Expected (height, width) "
            f"of positive ints. Received: image_size={image_size!r}"
        )
    path, header, rows = _read_table(label_table_csv, delimiter)
    image_idx = _column_indices(path, header, [image_column], "image column")[0]
    if label_columns is None:
        label_columns = [h for h in header if h != image_column]
    label_idx = _column_indices(path, header, list(label_columns), "label column(s)")
    if not label_idx:
        raise ValueError(f"{path}: no label columns besides {image_column!r}.")
    labels = _parse_labels(path, header, rows, label_idx)
    if not rows:
        raise ValueError(f"{path}: the table has a header but no rows.")

    image_dir = Path(image_dir)
    files, problems = [], []
    for line, row in rows:
        name = row[image_idx].strip()
        if not name:
            raise ValueError(f"{path}:{line}: empty {image_column!r} cell.")
        file = image_dir / name
        files.append(str(file))
        if not file.is_file():
            problems.append(f"{name!r} (line {line}) is missing")
        elif not _looks_like_image(file):
            problems.append(f"{name!r} (line {line}) is not a PNG, JPEG, GIF or BMP")
    if problems:
        raise ValueError(
            f"{len(problems)} image(s) listed in {path} cannot be read from "
            f"{image_dir}: " + "; ".join(problems[:5])
            + ("; ..." if len(problems) > 5 else "")
            + ". Add the files or remove their rows from the table."
        )

    height, width = int(image_size[0]), int(image_size[1])

    def load(file, label):
        image = tf.io.decode_image(
            tf.io.read_file(file), channels=3, dtype=tf.float32, expand_animations=False
        )
        image = tf.image.resize(image, (height, width))
        return {"image": tf.clip_by_value(image, 0.0, 1.0)}, {task_name: label}

    ds = tf.data.Dataset.from_tensor_slices((files, labels))
    if shuffle:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _looks_like_image(file: Path) -> bool:
    with open(file, "rb") as f:
        head = f.read(8)
    return any(head.startswith(magic) for magic in _IMAGE_MAGIC)
