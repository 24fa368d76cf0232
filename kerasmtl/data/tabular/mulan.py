"""MULAN multi-label data sets: `read_mulan_labels`, `load_mulan` and
`load_mulan_benchmark`.

MULAN (Tsoumakas et al., http://mulan.sourceforge.net/format.html) pairs an
ARFF file (read by `kerasmtl.data.tabular.arff.read_arff`) with an XML file
naming the label attributes; every other attribute is a feature. `load_mulan`
matches labels by name, never by position.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kerasmtl.data.splits import split_indices
from kerasmtl.data.tabular.arff import ArffData, read_arff
from kerasmtl.data.tabular.container import MultiLabelData


def read_mulan_labels(xml_path: str | os.PathLike) -> list[str]:
    """Label names from a MULAN XML label file.

    The file looks like `<labels xmlns="http://mulan.sourceforge.net/labels">
    <label name="A"/>...</labels>`. Hierarchical files nest `<label>`s; they
    are flattened in document order (a parent before its children), since in
    MULAN every node of the hierarchy is a label attribute of its own.

    Args:
        xml_path: path of the XML file.

    Returns:
        list of str, the label names.
    """
    xml_path = str(xml_path)
    if not os.path.isfile(xml_path):
        raise ValueError(f"MULAN label file {xml_path!r} does not exist or is not a file.")
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as err:
        line = err.position[0] if getattr(err, "position", None) else "?"
        raise ValueError(f"{xml_path}:{line}: not well-formed XML ({err}).") from None
    if _local(root.tag) != "labels":
        raise ValueError(
            f"{xml_path}: root element is <{_local(root.tag)}>, expected <labels> "
            "(a MULAN label file)."
        )
    names = []
    for element in root.iter():
        if element is root:
            continue
        if _local(element.tag) != "label":
            raise ValueError(f"{xml_path}: unexpected element <{_local(element.tag)}>.")
        name = element.get("name")
        if not name:
            raise ValueError(f"{xml_path}: a <label> has no name attribute.")
        if name in names:
            raise ValueError(f"{xml_path}: label {name!r} is listed twice.")
        names.append(name)
    if not names:
        raise ValueError(f"{xml_path}: no <label> elements.")
    return names


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def load_mulan(
    arff_path: str | os.PathLike,
    xml_path: str | os.PathLike,
    task_name: str = "labels",
    feature_key: str | None = None,
    extra_features: Sequence[str] = (),
) -> MultiLabelData:
    """Loads a MULAN data set: features and `[N, L]` labels.

    Label attributes are the ones the XML names, matched by name; their columns
    are in the order they appear in the ARFF file (MULAN gives the XML order no
    meaning: `yeast.xml` lists Class6 before Class4). A label must be nominal
    `{0,1}` (either order) or numeric with values 0/1; a missing label (`?`) is
    -1 (unknown). Every other attribute is a feature: numeric ones as float32
    (missing -> NaN), nominal ones one-hot encoded into one column per declared
    value named `"<attribute>=<value>"` (missing -> all zeros).

    An attribute the XML does not name but that looks like a label the XML
    forgot is refused rather than read as a feature: a binary one (nominal
    `{0,1}`, or numeric with values 0/1) that lies between two label
    attributes or is named like a label up to its digits (`Class14` when
    `Class1` is a label). Name such features in `extra_features`.

    Args:
        arff_path: the ARFF data file (dense or sparse).
        xml_path: the MULAN XML label file.
        task_name: str. Key of the labels. Defaults to `"labels"`.
        feature_key: str or None. See `MultiLabelData`. Defaults to `None`.
        extra_features: sequence of str. Attributes that look like labels
            the XML forgot (see above) but are features. Defaults to `()`.

    Returns:
        A `MultiLabelData` with features float32 `[N, F]`, labels int32
        `[N, L]`, `feature_names`, `label_names`.

    Raises:
        ValueError: a label the XML names is not in the ARFF file; an
            attribute the XML does not name looks like a label; a label
            attribute is not binary; a row has every label unknown.
    """
    arff = read_arff(arff_path)
    label_names = read_mulan_labels(xml_path)
    index = {a.name: i for i, a in enumerate(arff.attributes)}
    missing = [n for n in label_names if n not in index]
    if missing:
        raise ValueError(
            f"Label(s) {missing[:5]} named in {xml_path} are not attributes of "
            f"{arff_path}. Check that the two files belong together (label names "
            "are matched exactly, case included)."
        )
    label_cols = sorted(index[n] for n in label_names)
    labels = np.stack([_label_column(arff, j) for j in label_cols], axis=1)
    _check_unlisted_labels(arff, label_cols, xml_path, extra_features)
    unknown = np.flatnonzero((labels == -1).all(axis=1))
    if len(unknown):
        lines = arff.row_lines[unknown[:5]].tolist()
        raise ValueError(
            f"{arff_path}: {len(unknown)} row(s) have every label missing (?), on "
            f"line(s) {lines}. Such rows carry no label; remove them."
        )

    columns, feature_names = [], []
    for j, attribute in enumerate(arff.attributes):
        if j in label_cols:
            continue
        values = arff.data[:, j]
        if attribute.kind == "numeric":
            columns.append(values[:, None])
            feature_names.append(attribute.name)
        else:
            known = ~np.isnan(values)
            onehot = np.zeros((len(values), len(attribute.values)))
            onehot[np.flatnonzero(known), values[known].astype(int)] = 1.0
            columns.append(onehot)
            feature_names += [f"{attribute.name}={v}" for v in attribute.values]
    features = np.concatenate(columns, axis=1) if columns else np.zeros((len(labels), 0))
    return MultiLabelData(
        features=features.astype("float32"),
        labels=labels,
        feature_names=feature_names,
        label_names=[arff.attributes[j].name for j in label_cols],
        task_name=task_name,
        feature_key=feature_key,
        metadata={"arff": str(arff_path), "xml": str(xml_path), "relation": arff.relation},
    )


def _check_unlisted_labels(arff, label_cols, xml_path, extra_features):
    """Refuses attributes the XML does not name that look like labels."""
    unknown = [n for n in extra_features if n not in arff.attribute_names]
    if isinstance(extra_features, str) or unknown:
        raise ValueError(
            f"Invalid value for argument `extra_features`: {extra_features!r}. "
            f"Expected a sequence of attribute names of {arff.path}."
        )

    def binary_nominal(a):
        return a.kind == "nominal" and sorted(a.values) == ["0", "1"]

    def stem(name):
        return re.sub(r"[0-9]+", "#", name)

    label_stems = {}
    for j in label_cols:
        label_stems.setdefault(stem(arff.attributes[j].name), arff.attributes[j].name)
    suspects = []
    for j, attribute in enumerate(arff.attributes):
        if j in label_cols or attribute.name in extra_features:
            continue
        known = arff.data[:, j][~np.isnan(arff.data[:, j])]
        binary = binary_nominal(attribute) or (
            attribute.kind == "numeric" and np.isin(known, (0, 1)).all()
        )
        like = label_stems.get(stem(attribute.name))
        if binary and label_cols[0] < j < label_cols[-1]:
            suspects.append(f"{attribute.name!r} (binary, among the labels)")
        elif binary and like and stem(like) != like:
            suspects.append(f"{attribute.name!r} (binary, named like label {like!r})")
    if suspects:
        raise ValueError(
            f"{xml_path} does not name the attribute(s) {', '.join(suspects[:5])}"
            f"{' ...' if len(suspects) > 5 else ''} of {arff.path}, which look "
            "like labels the XML forgot; they would be read as features. If they "
            f"are labels, add a <label name=\"...\"/> for each to {xml_path}; if "
            "they are features, name them in `extra_features`."
        )


def _label_column(arff: ArffData, j: int) -> np.ndarray:
    """Column `j` of `arff` as 1/0/-1."""
    attribute, values = arff.attributes[j], arff.data[:, j]
    if attribute.kind == "nominal":
        if sorted(attribute.values) != ["0", "1"]:
            raise ValueError(
                f"{arff.path}:{attribute.line}: label {attribute.name!r} is nominal "
                f"{{{','.join(attribute.values)}}}; a label must be {{0,1}}."
            )
        as_int = np.array([int(v) for v in attribute.values], dtype="float64")
        known = ~np.isnan(values)
        out = np.full(len(values), -1, dtype="int32")
        out[known] = as_int[values[known].astype(int)]
        return out
    bad = ~np.isnan(values) & ~np.isin(values, (0.0, 1.0))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{arff.path}:{int(arff.row_lines[row])}: label {attribute.name!r} has "
            f"value {values[row]:g}; a numeric label must be 0 or 1 (? if unknown)."
        )
    return np.where(np.isnan(values), -1, values).astype("int32")


def load_mulan_benchmark(
    folder: str | os.PathLike,
    dev_split: bool = True,
    task_name: str = "labels",
    feature_key: str | None = None,
    *,
    dev_fraction: float | None = None,
    seed: int = 0,
) -> tuple[MultiLabelData, MultiLabelData | None]:
    """Loads a MULAN folder: the shared ones (`yeast`, `emotions`, `scene`) or
    a plain MULAN download.

    A folder holds `<name>-train.arff` (or a single `.arff`), `<name>.xml` and
    optionally `dev_split_seed0.txt`: 0-based indices of data rows (counted
    from the first row after `@data`) proposed as a dev split, one per line,
    `#` lines being comments. The dev set is those rows, or, without that
    file, a seeded random `dev_fraction` of the rows; the train set is the
    other rows, in file order. Both record where the split came from in
    `metadata["dev_split"]`.

    Args:
        folder: the data set's folder.
        dev_split: bool. Cut off the dev rows. If `False`, returns all rows and
            `None`. Defaults to `True`.
        task_name: str. Key of the labels. Defaults to `"labels"`.
        feature_key: str or None. See `MultiLabelData`. Defaults to `None`.
        dev_fraction: float in (0, 1) or None. Share of the rows drawn as the
            dev set when the folder has no `dev_split_seed0.txt` (the file
            wins when present). Defaults to `None`: the file is required.
        seed: int. Seed of that draw. Defaults to `0`.

    Returns:
        `(train, dev)`, two `MultiLabelData` (`dev` is None without a split).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"MULAN benchmark folder {str(folder)!r} does not exist.")
    arffs = sorted(folder.glob("*-train.arff")) or sorted(folder.glob("*.arff"))
    xmls = sorted(folder.glob("*.xml"))
    split_file = folder / "dev_split_seed0.txt"
    problems = []
    if len(arffs) != 1:
        problems.append(f"one ARFF file (found {[p.name for p in arffs]})")
    if len(xmls) != 1:
        problems.append(f"one MULAN XML label file (found {[p.name for p in xmls]})")
    if dev_split and not split_file.is_file() and dev_fraction is None:
        problems.append(
            "dev_split_seed0.txt (or pass dev_fraction=0.1 for a seeded random dev "
            "split, or dev_split=False for none)"
        )
    if problems:
        raise ValueError(
            f"MULAN benchmark folder {str(folder)!r} is incomplete; expected "
            + "; ".join(problems) + ". See the folder's README.md."
        )
    data = load_mulan(arffs[0], xmls[0], task_name=task_name, feature_key=feature_key)
    if len(data) == 0:
        raise ValueError(
            f"{arffs[0]}: no data rows after @data. Add the examples, or check that "
            "this is the data file and not a header template."
        )
    if not dev_split:
        return data, None
    if split_file.is_file():
        dev = _read_dev_indices(split_file, len(data))
        source = split_file.name
    else:
        if len(data) < 2:
            raise ValueError(
                f"{arffs[0]}: {len(data)} data row; a dev split needs at least 2 "
                "rows (one to train on, one to evaluate on)."
            )
        dev = split_indices(len(data), dev_fraction, seed, unit="row")[1]
        source = f"random {dev_fraction:g} of the rows, seed {seed}"
    if len(dev) in (0, len(data)):
        raise ValueError(
            f"{split_file}: lists {len(dev)} of the {len(data)} rows as dev rows; "
            "list at least one, and leave some to train on."
        )
    is_dev = np.zeros(len(data), dtype=bool)
    is_dev[dev] = True
    train, dev_data = data.select(~is_dev), data.select(np.sort(dev))
    for part, name in ((train, "train"), (dev_data, "dev")):
        part.metadata["split"], part.metadata["dev_split"] = name, source
    return train, dev_data


def _read_dev_indices(path: Path, num_rows: int) -> np.ndarray:
    indices, seen = [], {}
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            try:
                i = int(line)
            except ValueError:
                raise ValueError(f"{path}:{lineno}: {line!r} is not a row index.") from None
            if not 0 <= i < num_rows:
                raise ValueError(
                    f"{path}:{lineno}: row index {i} is out of range for {num_rows} rows."
                )
            if i in seen:
                raise ValueError(f"{path}:{lineno}: row {i} repeats line {seen[i]}.")
            seen[i] = lineno
            indices.append(i)
    return np.asarray(indices, dtype="int64")
