"""JSON text <-> Python values for the REST API, in TF Serving's dialect.

JSON is parsed and written by orjson (7x faster than `json` at parsing a
batch of floats, which was most of the server's own cost per request, 15x at
writing the answer) wherever it gives what `json` gives. `json` remains the
reference: it parses any body orjson rejects (`NaN`/`Infinity` tokens, a
UTF-8 BOM, UTF-16, lone surrogates; or a malformed body, whose error message
it writes), integer literals orjson would round to a float, documents
nested deeper than `MAX_DEPTH`, and writes any document with a `NaN` or
`Infinity` (which orjson would write as `null`).
"""

from __future__ import annotations

import json
from typing import Any

import orjson

# orjson reads an integer literal outside [-2**63, 2**64) as the nearest float,
# where json keeps it exact; such a float has at least this magnitude.
INEXACT_INT = 2.0**63
# Documents nested deeper than this are parsed by json (see `fast_loads`).
MAX_DEPTH = 512


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
    value = fast_loads(data)
    if value is None or _has_inexact_int(value):
        return json.loads(data)
    return value


def fast_loads(data: bytes) -> Any:
    """orjson's parse of `data`, or None where `json` must parse it."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None  # json says whether it is NaN & co. or an error, and which
    # json gives up near Python's recursion limit (~990 levels, fewer on a
    # deep stack), orjson past 1024: deep documents go to json, as before.
    if data.count(b"[") + data.count(b"{") > MAX_DEPTH and _deeper_than(
        value, MAX_DEPTH
    ):
        return None
    return value


def _has_inexact_int(value) -> bool:
    # Whether `value` holds a number that may be an integer literal orjson
    # rounded to a float (a false alarm only costs a parse by json).
    stack = [value]
    while stack:
        value = stack.pop()
        if isinstance(value, list):
            try:  # a list of numbers, at C speed
                if value and max(map(abs, value)) >= INEXACT_INT:
                    return True
            except TypeError:  # it holds lists, strings, objects or nulls
                stack.extend(value)
        elif isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, float) and abs(value) >= INEXACT_INT:
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
