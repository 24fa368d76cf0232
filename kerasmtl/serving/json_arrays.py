"""JSON values -> checked numpy arrays, for the REST codec (`codec.py`).

Every value's type and shape is checked while walking the parsed JSON,
before numpy sees it: a string, `true` or `null` where a number is expected,
a fractional number for an integer input, ragged rows and a wrong rank or
size are each a `ServingError` naming the input, the path to the value and
the shapes, and quoting at most a few dozen characters of it (see
`codec.py` on memory). Uses only numpy, so the client shares it.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np

from kerasmtl.serving.errors import ServingError

ROW, COLUMNAR = "row", "columnar"  # the two request formats
# TensorFlow DataType names (as in signature metadata) -> numpy dtypes.
NUMPY_DTYPES = {
    "DT_FLOAT": np.float32,
    "DT_DOUBLE": np.float64,
    "DT_HALF": np.float16,
    "DT_INT8": np.int8,
    "DT_INT16": np.int16,
    "DT_INT32": np.int32,
    "DT_INT64": np.int64,
    "DT_UINT8": np.uint8,
    "DT_UINT16": np.uint16,
    "DT_UINT32": np.uint32,
    "DT_UINT64": np.uint64,
    "DT_BOOL": np.bool_,
    "DT_STRING": object,  # bytes objects, as TensorFlow's .numpy() gives them
}
# Deepest tensor a request may send (numpy 1.x's limit; 2.x allows 64). Checked
# before walking or converting a value, so a deeper one is a 400, not numpy's
# "maximum supported dimension" error or a RecursionError.
_MAX_RANK = 32
# What a JSON value must be for each kind of dtype, for error messages.
_EXPECTED = {"f": "a number", "i": "an integer", "u": "an integer", "b": "true or false",
             "O": 'a string or {"b64": ...}'}


@dataclass(frozen=True)
class TensorInfo:
    """A signature input or output: its name, dtype and shape.

    Args:
        name: str. The key in the signature (not the graph tensor name).
        dtype: str. A TensorFlow DataType name, e.g. `"DT_FLOAT"`.
        shape: tuple of int (`-1` for an unknown size), or None for an
            unknown rank.
    """

    name: str
    dtype: str
    shape: tuple[int, ...] | None

    def shape_text(self) -> str:
        return "unknown" if self.shape is None else shape_text_of(self.shape)


def to_array(value: Any, info: TensorInfo) -> np.ndarray:
    dtype = NUMPY_DTYPES.get(info.dtype)
    if dtype is None:
        raise ServingError(
            f"Input '{info.name}' has dtype {info.dtype}, which the REST API "
            "cannot encode in JSON."
        )
    if dtype is object:
        return strings_array(value, info)
    kind = np.dtype(dtype).kind
    # Every value is checked to be a number (or a boolean) of a regular shape
    # before numpy converts it: then the array costs at most 8 bytes per value.
    unfit = ServingError(f"Input '{info.name}' holds values that do not fit {info.dtype}.")
    types = _leaf_types(value, _first_shape(value, info))
    if types is None or not types <= _LEAF_TYPES[kind]:
        _scan(value, info)  # raises the precise error
        raise unfit
    try:
        # Floats alone need no dtype discovery, which is most of numpy's cost.
        array = np.asarray(value, dtype=np.float64 if types == {float} else None)
    except OverflowError:
        raise unfit from None
    if kind == "b":
        return array.astype(bool)  # bool already, or an empty float array
    if array.dtype.kind not in "iuf":  # an integer past 64 bits: an object array
        raise unfit
    if kind in "iu":
        limits = np.iinfo(dtype)
        if array.size and (array.min() < limits.min or array.max() > limits.max):
            bad = array[(array < limits.min) | (array > limits.max)].ravel()[0]
            raise ServingError(
                f"Input '{info.name}' ({info.dtype}) holds {bad}, outside "
                f"[{limits.min}, {limits.max}]."
            )
        return array.astype(dtype, copy=False)
    with np.errstate(over="ignore"):  # overflow is reported just below
        converted = array.astype(dtype)
    finite = np.isfinite(array)
    lossy = finite & ~np.isfinite(converted)
    if array.dtype.kind in "iu":
        lossy |= converted.astype(array.dtype) != array
    if lossy.any():
        raise ServingError(
            f"Cannot convert JSON value {array[lossy].ravel()[0]} of input "
            f"'{info.name}' to {info.dtype} without loss of precision."
        )
    return converted


# The Python types a JSON value may have for each kind of dtype (bool is not
# an int here: JSON's true is not a number).
_LEAF_TYPES = {"f": frozenset({float, int}), "i": frozenset({int}),
               "u": frozenset({int}), "b": frozenset({bool})}


def _leaf_types(value: Any, shape: tuple[int, ...]) -> set[type] | None:
    """The types of the values in nested lists `value` of `shape`, or None if
    `value` does not have that shape.

    Runs at C speed (`map`, `set`) over each level's lists, with no copy of
    the values; `_scan` says what is wrong when this is None.
    """
    if not shape:
        return {type(value)}
    level = [value]
    for depth, size in enumerate(shape):
        if set(map(len, level)) != {size}:
            return None
        leaves = chain.from_iterable(level)
        if depth == len(shape) - 1:
            return set(map(type, leaves))
        level = list(leaves)
        if set(map(type, level)) != {list}:
            return None
    return None  # not reached: the loop returns at the last level


def strings_array(value: Any, info: TensorInfo) -> np.ndarray:
    shape = _first_shape(value, info)
    flat: list[bytes] = []

    def leaf(v, path):
        if isinstance(v, str):
            return v.encode("utf-8")
        if is_base64_object(v):
            try:
                return base64.b64decode(v["b64"], validate=True)
            except (binascii.Error, ValueError):
                raise ServingError(
                    f"Input '{info.name}' element {_path_text(path)} is not valid "
                    "base64."
                ) from None
        raise _type_error(info, v, path)

    _walk(value, shape, 0, (), info, leaf, flat)
    array = np.empty(len(flat), dtype=object)
    array[:] = flat
    return array.reshape(shape)


def _scan(value: Any, info: TensorInfo) -> None:
    """Walks `value` and raises the first problem: raggedness or a bad leaf."""
    kind = np.dtype(NUMPY_DTYPES[info.dtype]).kind

    def leaf(v, path):
        ok = (
            isinstance(v, bool) if kind == "b"
            else isinstance(v, int) and not isinstance(v, bool) if kind in "iu"
            else isinstance(v, (int, float)) and not isinstance(v, bool)
        )
        if not ok:
            raise _type_error(info, v, path)

    _walk(value, _first_shape(value, info), 0, (), info, leaf, [])


def _walk(value, shape, level, path, info, leaf, out) -> None:
    # TF Serving's FillTensorProto: the first element of each list sets the
    # shape; every list must then match it and hold values at the same depth.
    # `_first_shape` bounds the shape's rank, and so this recursion.
    if isinstance(value, list):
        if level >= len(shape) or len(value) != shape[level]:
            raise _ragged(info, path, shape, level, value)
        for i, item in enumerate(value):
            _walk(item, shape, level + 1, (*path, i), info, leaf, out)
    elif level != len(shape):
        raise _ragged(info, path, shape, level, value)
    else:
        out.append(leaf(value, path))


def _first_shape(value: Any, info: TensorInfo) -> tuple[int, ...]:
    """The shape set by the first element of each list; raises past `_MAX_RANK`."""
    shape = []
    while isinstance(value, list):
        if len(shape) == _MAX_RANK:
            expected = "" if info.shape is None else (
                f"; the signature expects rank {len(info.shape)}")
            raise ServingError(
                f"Input '{info.name}' is nested more than {_MAX_RANK} lists deep"
                f"{expected}. Send a tensor of the signature's shape "
                f"{info.shape_text()}."
            )
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return tuple(shape)


def _ragged(info, path, shape, level, value) -> ServingError:
    where = f"element {_path_text(path)}" if path else "the value"
    if isinstance(value, list) and level < len(shape):
        problem = (
            f"{where} has {len(value)} entries where the first list at that depth "
            f"has {shape[level]}"
        )
    elif isinstance(value, list):
        problem = f"{where} is a list where a single value was expected"
    else:
        problem = (
            f"{where} is {json_type(value)} where a list of {shape[level]} was "
            "expected"
        )
    return ServingError(
        f"Input '{info.name}' is ragged: {problem}. Every row needs the same "
        "shape; pad the rows."
    )


def _type_error(info: TensorInfo, value: Any, path: tuple) -> ServingError:
    kind = np.dtype(NUMPY_DTYPES[info.dtype]).kind
    return ServingError(
        f"Input '{info.name}' expects {info.dtype} values ({_EXPECTED[kind]}); "
        f"element {_path_text(path)} is {json_type(value)} {short(value)}."
    )


def check_shape(array: np.ndarray, info: TensorInfo, fmt: str) -> None:
    if array.ndim and array.shape[0] == 0:
        raise ServingError(f"Empty batch: input '{info.name}' has no rows.")
    if info.shape is None:
        return
    expected = info.shape
    wrong_rank = array.ndim != len(expected)
    if wrong_rank or any(e >= 0 and d != e for d, e in zip(array.shape, expected)):
        where = "with one row per instance " if fmt == ROW else ""
        problem = (
            f"rank {array.ndim}, expected rank {len(expected)}" if wrong_rank
            else "a size differs"
        )
        raise ServingError(
            f"Input '{info.name}' has shape {shape_text_of(array.shape)} {where}"
            f"({problem}); the signature expects {shape_text_of(expected)} "
            "(-1: any size)."
        )


def is_base64_object(value) -> bool:
    """True for TF Serving's binary string form, `{"b64": "<base64>"}`."""
    return (
        isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)
    )


def is_object(value) -> bool:
    return isinstance(value, dict) and not is_base64_object(value)


def json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return 'a {"b64": ...} object' if is_base64_object(value) else "an object"


def short(value, limit: int = 60) -> str:
    """`json.dumps(value)`, cut to `limit` characters: reads only as much of
    `value` as that needs (a request's value may be megabytes, or deep)."""
    return cut(preview(value, limit + 1), limit)


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def preview(value, budget: int) -> str:
    # Each level of nesting spends at least one character of the budget, so
    # the recursion is at most `budget` deep.
    if isinstance(value, str):
        return json.dumps(value[:budget])  # longer than `budget` when cut
    if isinstance(value, (list, dict)):
        opening, closing = ("[", "]") if isinstance(value, list) else ("{", "}")
        parts, size = [], 1
        for item in value.items() if isinstance(value, dict) else value:
            if size >= budget:
                parts.append("...")
                break
            if isinstance(value, dict):
                key = preview(str(item[0]), budget - size)
                text = key + ": " + preview(item[1], max(budget - size - len(key) - 2, 1))
            else:
                text = preview(item, budget - size)
            parts.append(text)
            size += len(text) + 2
        return opening + ", ".join(parts) + closing
    try:
        return json.dumps(value)  # a number (NaN and Infinity as json writes them), null
    except (TypeError, ValueError):  # e.g. an int with more digits than str() allows
        return f"<{type(value).__name__}>"


def _path_text(path: tuple) -> str:
    return "".join(f"[{i}]" for i in path)


def shape_text_of(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + (",)" if len(shape) == 1 else ")")
