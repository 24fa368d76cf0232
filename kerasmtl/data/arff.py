"""Weka ARFF files and MULAN multi-label data sets (ARFF + XML label file).

`read_arff` is a small reader written here because scipy's does not read
sparse rows, which several MULAN data sets use. It supports:

- `@relation`, `@attribute`, `@data` in any case; `%` comments (whole line, or
  the rest of a line outside quotes); blank lines; LF, CRLF or CR line ends;
- attribute names and values quoted with `'` or `"` (backslash escapes);
- `numeric` / `real` / `integer` attributes, and nominal ones (`{0,1}`,
  `{a,'b c'}`);
- dense rows (`1.5,a,?`) and sparse rows (`{0 1.5,3 b}`: 0-based index, then
  value; attributes not listed are 0, which for a nominal attribute means its
  first declared value, as in Weka's `SparseInstance`);
- `?` (unquoted) for a missing value: NaN in the data array for both kinds.

Not supported (a ValueError says so): `string`, `date` and `relational`
attributes, and instance weights (`{w}` after a row).

MULAN (Tsoumakas et al., http://mulan.sourceforge.net/format.html) pairs an
ARFF file with an XML file naming the label attributes; every other attribute
is a feature. `load_mulan` matches labels by name, never by position.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from kerasmtl.data.label_table import MultiLabelData
from kerasmtl.data.splits import split_indices

_KEYWORD = re.compile(r"@(relation|attribute|data)(?=\s|$|\{)", re.IGNORECASE)
_NUMERIC_TYPES = ("numeric", "real", "integer")
_SPARSE_ENTRY = re.compile(r"(\d+)\s+(.*)", re.DOTALL)


class ArffAttribute(NamedTuple):
    """One `@attribute`: its name, `kind` (`"numeric"` or `"nominal"`), the
    nominal values in declared order (empty for numeric) and its line."""

    name: str
    kind: str
    values: tuple[str, ...]
    line: int


class ArffData(NamedTuple):
    """The contents of an ARFF file.

    `data` is float64 `[N, A]`, one column per attribute: numeric values as
    they are, a nominal value as the 0-based index of its declared value, and
    NaN where the value is missing (`?`). `row_lines` holds each row's line
    number in the file (for error messages).
    """

    relation: str
    attributes: list[ArffAttribute]
    data: np.ndarray
    row_lines: np.ndarray
    path: str

    @property
    def attribute_names(self) -> list[str]:
        return [a.name for a in self.attributes]

    def nominal_value(self, row: int, attribute: int) -> str | None:
        """The text of a nominal value (None if missing)."""
        value = self.data[row, attribute]
        return None if np.isnan(value) else self.attributes[attribute].values[int(value)]


def _split_quoted(text: str, where: str, sep: str = ","):
    """Splits `text` on `sep` outside quotes, stopping at a `%` comment outside
    quotes. Returns a list of `(text, was_quoted)`: quotes removed, outer
    spaces stripped (a quoted `?` is a value, not a missing one)."""
    fields, current, quoted, i = [], [], False, 0
    while i < len(text):
        ch = text[i]
        if ch in "'\"":
            end, value = _read_quoted(text, i, where)
            if "".join(current).strip():
                raise ValueError(f"{where}: unexpected quote after {''.join(current)!r}.")
            current, quoted, i = [value], True, end
            continue
        if ch == "%":
            break
        if ch == sep:
            fields.append(_field(current, quoted, where))
            current, quoted = [], False
        elif quoted:
            if not ch.isspace():
                raise ValueError(f"{where}: text {ch!r} after a closing quote; add a {sep!r}.")
        else:
            current.append(ch)
        i += 1
    fields.append(_field(current, quoted, where))
    return fields


def _field(chars, quoted: bool, where: str):
    return ("".join(chars), True) if quoted else ("".join(chars).strip(), False)


def _read_quoted(text: str, start: int, where: str):
    """Reads a quoted string starting at `text[start]`; returns `(index after
    the closing quote, unescaped value)`."""
    quote, out, i = text[start], [], start + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            out.append({"n": "\n", "t": "\t", "r": "\r"}.get(nxt, nxt))
            i += 2
            continue
        if ch == quote:
            return i + 1, "".join(out)
        out.append(ch)
        i += 1
    raise ValueError(f"{where}: unclosed {quote} quote.")


def _parse_attribute(rest: str, where: str, lineno: int) -> ArffAttribute:
    rest = rest.strip()
    if not rest:
        raise ValueError(f"{where}: @attribute without a name.")
    if rest[0] in "'\"":
        end, name = _read_quoted(rest, 0, where)
    else:
        match = re.match(r"[^\s{%]+", rest)
        if match is None:
            raise ValueError(f"{where}: @attribute without a name.")
        end, name = match.end(), match.group(0)
    type_text = rest[end:].strip()
    if type_text.startswith("{"):
        close = _closing_brace(type_text, where)
        tail = type_text[close + 1 :].strip()
        if tail and not tail.startswith("%"):
            raise ValueError(f"{where}: unexpected {tail!r} after the nominal values.")
        values = [v for v, _ in _split_quoted(type_text[1:close], where)]
        if values == [""]:
            raise ValueError(f"{where}: nominal attribute {name!r} has no values.")
        if len(set(values)) != len(values):
            raise ValueError(f"{where}: nominal attribute {name!r} repeats a value: {values}.")
        return ArffAttribute(name, "nominal", tuple(values), lineno)
    words = type_text.split("%")[0].split()
    kind = words[0].lower() if words else ""
    if kind in _NUMERIC_TYPES and len(words) == 1:
        return ArffAttribute(name, "numeric", (), lineno)
    if kind in ("string", "date", "relational"):
        raise ValueError(
            f"{where}: attribute {name!r} is of type {kind!r}, which this reader "
            "does not support (only numeric/real/integer and nominal {...})."
        )
    raise ValueError(
        f"{where}: attribute {name!r} has unknown type {type_text!r}. Expected "
        "numeric, real, integer or a nominal list such as {0,1}."
    )


def _closing_brace(text: str, where: str) -> int:
    i = 1
    while i < len(text):
        if text[i] in "'\"":
            i = _read_quoted(text, i, where)[0]
            continue
        if text[i] == "}":
            return i
        i += 1
    raise ValueError(f"{where}: '{{' without a matching '}}'.")


class _RowParser:
    """Turns data lines into float rows, with errors naming file and line."""

    def __init__(self, path: str, attributes: list[ArffAttribute]):
        self.path = path
        self.attributes = attributes
        self.lookup = [
            {v: float(k) for k, v in enumerate(a.values)} if a.kind == "nominal" else None
            for a in attributes
        ]
        self.numeric = np.array([a.kind == "numeric" for a in attributes])
        self.all_numeric = bool(self.numeric.all())

    def value(self, j: int, text: str, quoted: bool, where: str) -> float:
        if text == "?" and not quoted:
            return np.nan
        attribute = self.attributes[j]
        if attribute.kind == "numeric":
            try:
                return float(text)
            except ValueError:
                raise ValueError(
                    f"{where}: attribute {attribute.name!r} (numeric) has value "
                    f"{text!r}, which is not a number. Use ? for a missing value."
                ) from None
        index = self.lookup[j].get(text)
        if index is None:
            allowed = list(attribute.values[:10]) + (["..."] if len(attribute.values) > 10 else [])
            raise ValueError(
                f"{where}: attribute {attribute.name!r} has value {text!r}, which is "
                f"not one of its declared values {allowed}."
            )
        return index

    def parse(self, line: str, lineno: int) -> np.ndarray:
        where = f"{self.path}:{lineno}"
        width = len(self.attributes)
        if line.startswith("{"):
            return self._sparse(line, where)
        if not any(c in line for c in "'\"%{"):
            tokens = line.split(",")
            if len(tokens) == width and self.all_numeric:
                try:  # fast path for the usual all-numeric dense row
                    return np.array(tokens, dtype="float64")
                except ValueError:
                    pass  # '?' or a bad value: the slow path says which
            fields = [(t.strip(), False) for t in tokens]
        else:
            fields = _split_quoted(line, where)
        if any(not q and t.startswith("{") for t, q in fields):
            raise ValueError(f"{where}: instance weights ({{w}} after a row) are not supported.")
        if len(fields) != width:
            raise ValueError(
                f"{where}: {len(fields)} values, but {width} attributes are declared."
            )
        return np.array(
            [self.value(j, t, q, where) for j, (t, q) in enumerate(fields)], dtype="float64"
        )

    def _sparse(self, line: str, where: str) -> np.ndarray:
        close = _closing_brace(line, where)
        tail = line[close + 1 :].strip()
        if tail and not tail.startswith("%"):
            raise ValueError(
                f"{where}: unexpected {tail!r} after a sparse row (instance weights "
                "are not supported)."
            )
        row = np.zeros(len(self.attributes), dtype="float64")
        inner = line[1:close]
        if not inner.strip():
            return row
        seen = set()
        for entry, _ in _split_entries(inner, where):
            match = _SPARSE_ENTRY.fullmatch(entry)
            if not match:
                raise ValueError(
                    f"{where}: sparse entry {entry!r} is not '<index> <value>'."
                )
            j = int(match.group(1))
            if j >= len(self.attributes):
                raise ValueError(
                    f"{where}: sparse index {j} is out of range: {len(self.attributes)} "
                    "attributes are declared (indices are 0-based)."
                )
            if j in seen:
                raise ValueError(f"{where}: sparse index {j} appears twice.")
            seen.add(j)
            text = match.group(2).strip()
            quoted = text[:1] in ("'", '"')
            if quoted:
                end, text = _read_quoted(text, 0, where)
            row[j] = self.value(j, text, quoted, where)
        return row


def _split_entries(inner: str, where: str):
    """Splits a sparse row's inside on commas outside quotes, keeping quotes
    (the value part is unquoted by the caller)."""
    entries, start, i = [], 0, 0
    while i < len(inner):
        if inner[i] in "'\"":
            i = _read_quoted(inner, i, where)[0]
            continue
        if inner[i] == ",":
            entries.append((inner[start:i].strip(), False))
            start = i + 1
        i += 1
    entries.append((inner[start:].strip(), False))
    return entries


def read_arff(path: str | os.PathLike) -> ArffData:
    """Reads a dense or sparse ARFF file.

    Args:
        path: path of the file (UTF-8).

    Returns:
        An `ArffData` (`relation`, `attributes`, `data` float64 `[N, A]`,
        `row_lines`, `path`). See the module docstring for the format.

    Raises:
        ValueError: naming the file and line of malformed input.

    Examples:

    >>> import pathlib, tempfile
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "t.arff"
    >>> _ = f.write_text("@relation t\\n@attribute x numeric\\n"
    ...                  "@attribute y {a,b}\\n@data\\n1.5,b\\n{0 2}\\n")
    >>> read_arff(f).data.tolist()
    [[1.5, 1.0], [2.0, 0.0]]
    """
    path = str(path)
    if not os.path.isfile(path):
        raise ValueError(f"ARFF file {path!r} does not exist or is not a file.")
    try:
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path}: not UTF-8 text ({err}). Re-encode the file as UTF-8."
        ) from None
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")

    relation, attributes, names = None, [], {}
    rows, row_lines, parser = [], [], None
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("%"):
            continue
        where = f"{path}:{lineno}"
        if parser is not None:
            rows.append(parser.parse(line, lineno))
            row_lines.append(lineno)
            continue
        keyword = _KEYWORD.match(line)
        if keyword is None:
            raise ValueError(
                f"{where}: expected @relation, @attribute or @data before the data; "
                f"found {line[:40]!r}."
            )
        word, rest = keyword.group(1).lower(), line[keyword.end() :]
        if word == "relation":
            if relation is not None:
                raise ValueError(f"{where}: a second @relation.")
            fields = _split_quoted(rest, where, sep="\0")
            relation = fields[0][0]
        elif word == "attribute":
            attribute = _parse_attribute(rest, where, lineno)
            if attribute.name in names:
                raise ValueError(
                    f"{where}: attribute {attribute.name!r} is already declared on "
                    f"line {names[attribute.name]}."
                )
            names[attribute.name] = lineno
            attributes.append(attribute)
        else:
            if not attributes:
                raise ValueError(f"{where}: @data before any @attribute.")
            parser = _RowParser(path, attributes)
    if parser is None:
        raise ValueError(f"{path}: no @data section; is this an ARFF file?")
    data = np.stack(rows) if rows else np.zeros((0, len(attributes)))
    return ArffData(
        relation=relation or "",
        attributes=attributes,
        data=data,
        row_lines=np.asarray(row_lines, dtype="int64"),
        path=path,
    )


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
