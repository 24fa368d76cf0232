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
json and orjson, so the client shares it; the values' checks are in
`json_arrays.py`.

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

JSON text is parsed and written by `json_text.py` (orjson where it gives
what `json` gives); a request that fails is re-decoded from `json`'s parse, so
errors name values exactly as `json` reads them.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from kerasmtl.serving.errors import ServingError
from kerasmtl.serving.json_arrays import (  # noqa: F401 (public here too)
    COLUMNAR,
    NUMPY_DTYPES,
    ROW,
    TensorInfo,
    check_shape,
    cut,
    is_base64_object,
    is_object,
    json_type,
    short,
    strings_array,
    to_array,
)
from kerasmtl.serving.json_text import INEXACT_INT, dumps, fast_loads, loads  # noqa: F401

DEFAULT_SIGNATURE = "serving_default"
_BYTES_SUFFIX = "_bytes"  # TF Serving's marker of binary string outputs

# The most memory decoding may cost per byte of body (see the module docstring;
# tests/test_serving_hardening.py measures it on the worst bodies we know).
MEMORY_PER_BODY_BYTE = 64


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
    doc = fast_loads(body)
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
            f"JSON Value: {short(doc)} Is not object. The body must be a JSON "
            'object such as {"instances": [...]} or {"inputs": ...}.'
        )
    signature = doc.get("signature_name", "")
    if not isinstance(signature, str):
        raise ServingError(
            f"'signature_name' must be a string value. Received: {short(signature)}"
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
        array.dtype.kind == "f" and array.size and float(np.abs(array).max()) >= INEXACT_INT
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
        array = to_array(value, info)
        check_shape(array, info, fmt)
        arrays[name] = array
    return fmt, arrays


def _row_values(instances: Any, inputs: Mapping[str, TensorInfo]) -> dict[str, list]:
    if not isinstance(instances, list):
        raise ServingError(
            f"'instances' must be a list with one entry per example. Received: "
            f"{short(instances)}"
        )
    if not instances:
        raise ServingError(
            "Empty batch: the 'instances' list has no values. Send at least one "
            "instance."
        )
    names = sorted(inputs)
    if not is_object(instances[0]):
        if len(names) > 1:
            raise ServingError(
                f"'instances' is a plain list, but the signature has several inputs "
                f"{names}: make each instance an object keyed by input name, e.g. "
                f'{{"{names[0]}": ..., "{names[1]}": ...}}.'
            )
        for i, instance in enumerate(instances):
            if is_object(instance):
                raise ServingError(
                    f"Instance {i} is an object but instance 0 is a value; give "
                    "every instance in the same form."
                )
        return {names[0]: instances}
    columns: dict[str, list] = {name: [] for name in names}
    for i, instance in enumerate(instances):
        if not is_object(instance):
            raise ServingError(
                f"Instance {i} is {json_type(instance)} but instance 0 is an object; "
                f"give every instance as an object keyed by input name {names}."
            )
        _check_names(instance, names, f"Instance {i}")
        for name in names:
            columns[name].append(instance[name])
    return columns


def _columnar_values(value: Any, inputs: Mapping[str, TensorInfo]) -> dict[str, Any]:
    names = sorted(inputs)
    if not is_object(value):
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
            shown = [cut(k, 40) for k in extra[:5]]
            more = f" and {len(extra) - 5} more" if len(extra) > 5 else ""
            problems.append(f"has unknown input(s) {shown}{more}")
        raise ServingError(
            f"{what} {' and '.join(problems)}; the signature's inputs are {names}."
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
    return strings_array(value, info)
