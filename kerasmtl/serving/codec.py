"""TF Serving's REST JSON <-> numpy arrays, for the `:predict` verb.

Follows TF Serving's `json_tensor.cc`: a request holds either `"instances"`
(row format: one entry per example, a bare value when the signature has one
input, else an object keyed by input name) or `"inputs"` (columnar: one value
or an object of whole tensors). Strings are JSON strings or `{"b64": ...}`
objects. The response mirrors the request: `{"predictions": [...]}` per row,
or `{"outputs": ...}` per tensor; a single output is given bare; string
outputs whose name ends in `_bytes` are base64 objects.

Checks are stricter than numpy's conversions: a string, `true` or `null`
where a number is expected, a fractional number for an integer input, ragged
rows, a wrong rank or size, and missing or extra input names are each a
`ServingError` naming the input and the shapes. The module uses only numpy,
json and orjson, so the client shares it.

Memory: decoding a request (parsing it, checking it, converting it to arrays,
and any error message) costs at most `MEMORY_PER_BODY_BYTE` (64) times the
body's size, whatever the body holds: the type and shape of every value is
checked while walking the parsed JSON, before numpy sees it (numpy would turn
one long string among numbers into a fixed-width string array, each element
as wide as the longest), and error messages quote at most a few dozen
characters of a value. Parsing takes most of it: Python objects cost 10x to
40x their JSON text (an empty list, `[]`, is 3 bytes of JSON and 72 of
Python); a batch of floats costs about 20x in all. With the server's default
4 MiB body limit, one request costs at most 256 MiB.

JSON is parsed and written by orjson (7x faster than `json` at parsing a
batch of floats, which was most of the server's own cost per request, 15x at
writing the answer) wherever it gives what `json` gives. `json` remains the reference: it parses any body
orjson rejects (`NaN`/`Infinity` tokens, a UTF-8 BOM, UTF-16, lone
surrogates; or a malformed body, whose error message it writes), re-decodes
any request that fails (so errors name values exactly as `json` reads them)
and writes any document with a `NaN` or `Infinity` (which orjson would write
as `null`).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import orjson

from kerasmtl.serving.errors import ServingError

ROW, COLUMNAR = "row", "columnar"
DEFAULT_SIGNATURE = "serving_default"
_BYTES_SUFFIX = "_bytes"  # TF Serving's marker of binary string outputs

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
# orjson reads an integer literal outside [-2**63, 2**64) as the nearest float,
# where json keeps it exact; such a float has at least this magnitude.
_INEXACT_INT = 2.0**63
# Documents nested deeper than this are parsed by json (see `_fast_loads`).
_MAX_DEPTH = 512
# Deepest tensor a request may send (numpy 1.x's limit; 2.x allows 64). Checked
# before walking or converting a value, so a deeper one is a 400, not numpy's
# "maximum supported dimension" error or a RecursionError.
_MAX_RANK = 32
# The most memory decoding may cost per byte of body (see the module docstring;
# tests/test_serving_hardening.py measures it on the worst bodies we know).
MEMORY_PER_BODY_BYTE = 64
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
        return "unknown" if self.shape is None else _shape_text(self.shape)


@dataclass
class PredictRequest:
    """A parsed `:predict` body: the JSON object and its signature name."""

    doc: dict
    signature_name: str
    # The raw body when orjson parsed `doc`, for `json` to parse again if the
    # request fails or may hold a huge integer; None when `json` parsed it.
    body: bytes | None = None


def parse_predict_request(body: bytes) -> PredictRequest:
    """Parses a `:predict` body; raises `ServingError` (400) if malformed.

    Examples:

    >>> parse_predict_request(b'{"instances": [1.0]}').signature_name
    'serving_default'
    """
    if not body.strip():
        raise ServingError("JSON Parse error: The document is empty")
    doc = _fast_loads(body)
    if doc is not None:
        try:
            return _predict_request(doc, body, fast=True)
        except ServingError:
            pass  # json's reading of the values names them in the error
    del doc  # one parsed copy of the body at a time
    return _exact(body)


def _exact(body: bytes) -> PredictRequest:
    """The request as `json` parses it: the reference, and its errors."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as error:  # JSONDecodeError, bad UTF-8
        raise ServingError(f"JSON Parse error: {error}") from None
    return _predict_request(doc, body, fast=False)


def _predict_request(doc: Any, body: bytes, fast: bool) -> PredictRequest:
    if not isinstance(doc, dict):
        raise ServingError(
            f"JSON Value: {_short(doc)} Is not object. The body must be a JSON "
            'object such as {"instances": [...]} or {"inputs": ...}.'
        )
    signature = doc.get("signature_name", "")
    if not isinstance(signature, str):
        raise ServingError(
            f"'signature_name' must be a string value. Received: {_short(signature)}"
        )
    return PredictRequest(doc, signature or DEFAULT_SIGNATURE, body if fast else None)


def decode_inputs(
    request: PredictRequest, inputs: Mapping[str, TensorInfo]
) -> tuple[str, dict[str, np.ndarray]]:
    """Returns `(format, {input name: array})` for a signature's inputs.

    Args:
        request: the parsed body.
        inputs: the signature's inputs by name.

    Returns:
        `ROW` or `COLUMNAR`, and one array per input with the input's dtype,
        checked against its rank and known sizes.

    Examples:

    >>> spec = {"x": TensorInfo("x", "DT_FLOAT", (-1, 2))}
    >>> fmt, arrays = decode_inputs(parse_predict_request(b'{"instances": [[1, 2]]}'), spec)
    >>> fmt, arrays["x"].dtype.name, arrays["x"].shape
    ('row', 'float32', (1, 2))
    """
    if request.body is None:
        return _decode(request, inputs)
    try:
        fmt, arrays = _decode(request, inputs)
    except ServingError:
        fmt, arrays = None, {}  # json reads the body again, below, for its error
    # A float this large may be an integer literal that orjson rounded, where
    # json keeps it exact (and may then reject it): json decides.
    if fmt is not None and not any(
        array.dtype.kind == "f" and array.size and float(np.abs(array).max()) >= _INEXACT_INT
        for array in arrays.values()
    ):
        return fmt, arrays
    # orjson's objects go before json makes its own (the caller's request
    # holds them), so one parsed copy of the body is alive at a time.
    del arrays
    request.doc = None
    return _decode(_exact(request.body), inputs)


def _decode(
    request: PredictRequest, inputs: Mapping[str, TensorInfo]
) -> tuple[str, dict[str, np.ndarray]]:
    doc = request.doc
    if "instances" in doc and "inputs" in doc:
        raise ServingError(
            "The request has both 'instances' and 'inputs'. Send one of them: "
            "'instances' (row format) or 'inputs' (columnar format)."
        )
    if "instances" in doc:
        fmt, values = ROW, _row_values(doc["instances"], inputs)
    elif "inputs" in doc:
        fmt, values = COLUMNAR, _columnar_values(doc["inputs"], inputs)
    else:
        raise ServingError(
            "Missing 'inputs' or 'instances' key. Send {\"instances\": [...]} "
            "(row format) or {\"inputs\": ...} (columnar format)."
        )
    arrays = {}
    for name, value in values.items():
        info = inputs[name]
        array = _to_array(value, info)
        _check_shape(array, info, fmt)
        arrays[name] = array
    return fmt, arrays


def _row_values(instances: Any, inputs: Mapping[str, TensorInfo]) -> dict[str, list]:
    if not isinstance(instances, list):
        raise ServingError(
            f"'instances' must be a list with one entry per example. Received: "
            f"{_short(instances)}"
        )
    if not instances:
        raise ServingError(
            "Empty batch: the 'instances' list has no values. Send at least one "
            "instance."
        )
    names = sorted(inputs)
    if not _is_object(instances[0]):
        if len(names) > 1:
            raise ServingError(
                f"'instances' is a plain list, but the signature has several inputs "
                f"{names}: make each instance an object keyed by input name, e.g. "
                f'{{"{names[0]}": ..., "{names[1]}": ...}}.'
            )
        for i, instance in enumerate(instances):
            if _is_object(instance):
                raise ServingError(
                    f"Instance {i} is an object but instance 0 is a value; give "
                    "every instance in the same form."
                )
        return {names[0]: instances}
    columns: dict[str, list] = {name: [] for name in names}
    for i, instance in enumerate(instances):
        if not _is_object(instance):
            raise ServingError(
                f"Instance {i} is {_json_type(instance)} but instance 0 is an object; "
                f"give every instance as an object keyed by input name {names}."
            )
        _check_names(instance, names, f"Instance {i}")
        for name in names:
            columns[name].append(instance[name])
    return columns


def _columnar_values(value: Any, inputs: Mapping[str, TensorInfo]) -> dict[str, Any]:
    names = sorted(inputs)
    if not _is_object(value):
        if len(names) > 1:
            raise ServingError(
                f"'inputs' is a plain value/list, but the signature has several "
                f"inputs {names}: send an object keyed by input name."
            )
        return {names[0]: value}
    _check_names(value, names, "The 'inputs' object")
    return {name: value[name] for name in names}


def _check_names(obj: dict, names: list[str], what: str) -> None:
    missing = [n for n in names if n not in obj]
    extra = sorted(k for k in obj if k not in names)
    if missing or extra:
        problems = []
        if missing:
            problems.append(f"is missing input(s) {missing}")
        if extra:
            # A body may hold any number of names, of any length: show a few.
            shown = [_cut(k, 40) for k in extra[:5]]
            more = f" and {len(extra) - 5} more" if len(extra) > 5 else ""
            problems.append(f"has unknown input(s) {shown}{more}")
        raise ServingError(
            f"{what} {' and '.join(problems)}; the signature's inputs are {names}."
        )


def _to_array(value: Any, info: TensorInfo) -> np.ndarray:
    dtype = NUMPY_DTYPES.get(info.dtype)
    if dtype is None:
        raise ServingError(
            f"Input '{info.name}' has dtype {info.dtype}, which the REST API "
            "cannot encode in JSON."
        )
    if dtype is object:
        return _strings(value, info)
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


def _strings(value: Any, info: TensorInfo) -> np.ndarray:
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
            f"{where} is {_json_type(value)} where a list of {shape[level]} was "
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
        f"element {_path_text(path)} is {_json_type(value)} {_short(value)}."
    )


def _check_shape(array: np.ndarray, info: TensorInfo, fmt: str) -> None:
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
            f"Input '{info.name}' has shape {_shape_text(array.shape)} {where}"
            f"({problem}); the signature expects {_shape_text(expected)} "
            "(-1: any size)."
        )


# -- outputs ----------------------------------------------------------------


def encode_outputs(outputs: Mapping[str, np.ndarray], fmt: str) -> dict:
    """The JSON-ready response: `{"predictions": ...}` or `{"outputs": ...}`.

    Examples:

    >>> encode_outputs({"y": np.array([[0.5], [1.5]], "float32")}, ROW)
    {'predictions': [[0.5], [1.5]]}
    >>> encode_outputs({"a": np.array([1, 2]), "b": np.array([b"x", b"y"])}, ROW)
    {'predictions': [{'a': 1, 'b': 'x'}, {'a': 2, 'b': 'y'}]}
    """
    if not outputs:
        raise ServingError("The signature returned no outputs.", status_code=500)
    names = sorted(outputs)
    values = {n: to_json_value(outputs[n], n.endswith(_BYTES_SUFFIX)) for n in names}
    if fmt == COLUMNAR:
        return {"outputs": values[names[0]] if len(names) == 1 else values}
    sizes = {n: np.shape(outputs[n])[0] if np.ndim(outputs[n]) else None for n in names}
    if len(set(sizes.values())) != 1 or None in sizes.values():
        raise ServingError(
            f"Outputs have no common batch size ({sizes}), so they cannot be "
            "returned per instance; send the request in columnar format "
            "('inputs').",
        )
    if len(names) == 1:
        return {"predictions": values[names[0]]}
    return {"predictions": [dict(zip(names, row)) for row in zip(*values.values())]}


def to_json_value(array: np.ndarray, as_bytes: bool = False):
    """Nested lists of JSON values for `array`.

    Floats go out as the exact float64 value of each element (a float32 reads
    back identical); strings as UTF-8 text, or as `{"b64": ...}` when
    `as_bytes` or when they are not valid UTF-8.
    """
    array = np.asarray(array)
    if array.dtype.kind not in "OSU":
        return array.tolist()
    flat = np.empty(array.size, dtype=object)
    flat[:] = [_encode_string(s, as_bytes) for s in array.ravel()]
    return flat.reshape(array.shape).tolist()


def _encode_string(value, as_bytes: bool):
    if isinstance(value, str):
        value = value.encode("utf-8")
    if not as_bytes:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            pass  # not text: send it losslessly, as TF Serving's binary form
    return {"b64": base64.b64encode(value).decode("ascii")}


def from_json_value(value: Any, dtype: str) -> np.ndarray:
    """The array for a JSON output value of TensorFlow dtype `dtype`.

    Examples:

    >>> from_json_value([[1, 2]], "DT_INT32").dtype.name
    'int32'
    >>> from_json_value(["a", {"b64": "AP8="}], "DT_STRING").tolist()
    [b'a', b'\\x00\\xff']
    """
    if dtype != "DT_STRING":
        return np.asarray(value, dtype=NUMPY_DTYPES.get(dtype))
    info = TensorInfo("output", "DT_STRING", None)
    return _strings(value, info)


def dumps(payload: dict) -> bytes:
    """Compact JSON; NaN and Infinity as the bare tokens TF Serving writes.

    Examples:

    >>> dumps({"outputs": [0.5, float("nan")], "a": None})
    b'{"outputs":[0.5,NaN],"a":null}'
    """
    try:
        text = orjson.dumps(payload)
    except orjson.JSONEncodeError:  # e.g. an int past 64 bits, which json writes
        text = None
    # orjson writes NaN and Infinity as null; json writes them as TF Serving
    # does (and where a null is a None, json writes the same document).
    if text is None or b"null" in text:
        return json.dumps(payload, separators=(",", ":")).encode("utf-8")
    return text


def loads(data: bytes) -> Any:
    """`json.loads(data)`, by orjson where that gives the same value.

    Examples:

    >>> loads(b'{"outputs": [1, NaN, 0.5]}')
    {'outputs': [1, nan, 0.5]}
    """
    value = _fast_loads(data)
    if value is None or _has_inexact_int(value):
        return json.loads(data)
    return value


def _fast_loads(data: bytes) -> Any:
    """orjson's parse of `data`, or None where `json` must parse it."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None  # json says whether it is NaN & co. or an error, and which
    # json gives up near Python's recursion limit (~990 levels, fewer on a
    # deep stack), orjson past 1024: deep documents go to json, as before.
    if data.count(b"[") + data.count(b"{") > _MAX_DEPTH and _deeper_than(
        value, _MAX_DEPTH
    ):
        return None
    return value


# -- helpers ----------------------------------------------------------------


def is_base64_object(value) -> bool:
    """True for TF Serving's binary string form, `{"b64": "<base64>"}`."""
    return (
        isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)
    )


def _is_object(value) -> bool:
    return isinstance(value, dict) and not is_base64_object(value)


def _has_inexact_int(value) -> bool:
    # Whether `value` holds a number that may be an integer literal orjson
    # rounded to a float (a false alarm only costs a parse by json).
    stack = [value]
    while stack:
        value = stack.pop()
        if isinstance(value, list):
            try:  # a list of numbers, at C speed
                if value and max(map(abs, value)) >= _INEXACT_INT:
                    return True
            except TypeError:  # it holds lists, strings, objects or nulls
                stack.extend(value)
        elif isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, float) and abs(value) >= _INEXACT_INT:
            return True
    return False


def _deeper_than(value, limit: int) -> bool:
    # Iterative: nesting depth is what a recursion would run out of.
    stack = [(value, 1)] if isinstance(value, (list, dict)) else []
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        for item in value.values() if isinstance(value, dict) else value:
            if isinstance(item, (list, dict)):
                stack.append((item, depth + 1))
    return False


def _json_type(value) -> str:
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


def _short(value, limit: int = 60) -> str:
    """`json.dumps(value)`, cut to `limit` characters: reads only as much of
    `value` as that needs (a request's value may be megabytes, or deep)."""
    return _cut(_preview(value, limit + 1), limit)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _preview(value, budget: int) -> str:
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
                key = _preview(str(item[0]), budget - size)
                text = key + ": " + _preview(item[1], max(budget - size - len(key) - 2, 1))
            else:
                text = _preview(item, budget - size)
            parts.append(text)
            size += len(text) + 2
        return opening + ", ".join(parts) + closing
    try:
        return json.dumps(value)  # a number (NaN and Infinity as json writes them), null
    except (TypeError, ValueError):  # e.g. an int with more digits than str() allows
        return f"<{type(value).__name__}>"


def _path_text(path: tuple) -> str:
    return "".join(f"[{i}]" for i in path)


def _shape_text(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + (",)" if len(shape) == 1 else ")")
