"""Weka ARFF files: `read_arff`.

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

MULAN data sets (ARFF + XML label file) are read by `kerasmtl.data.tabular.mulan`.
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

import numpy as np

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
