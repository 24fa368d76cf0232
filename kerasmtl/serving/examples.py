"""The `:classify` and `:regress` REST APIs' JSON, as TF Serving reads and
writes it.

Request: `{"signature_name": "classify_species", "context": {...},
"examples": [{"features": [0.1, 0.2, ...]}, ...]}`. Each example (and the
optional `context`, whose features every example gets unless it has its
own) maps a feature name to a value or a list of values: JSON integers
become an `int64_list`, numbers with a decimal point or exponent a
`float_list` (so write `1.0` for a float feature, as for TF Serving),
strings a `bytes_list`, and `{"b64": "..."}` bytes.

Response: `{"results": [[["0", 0.04], ["1", 0.95], ...], ...]}` (one list
of `[class, score]` pairs per example) for `:classify`, `{"results": [0.97,
...]}` for `:regress`. (TF Serving's documentation spells it `result`; its
server writes `results`, as here. `kerasmtl.serving.Client` reads both.)
"""

from __future__ import annotations

import base64
import binascii
import json
import math

import numpy as np

from kerasmtl.serving import codec
from kerasmtl.serving.errors import ServingError

METHODS = {"classify": "tensorflow/serving/classify",
           "regress": "tensorflow/serving/regress"}


def parse_example_request(body: bytes, verb: str) -> tuple[str, list[bytes]]:
    """`(signature_name, serialized tf.Example protos)` from a `:classify` or
    `:regress` body; raises `ServingError` (400) naming what is wrong.

    Examples:

    >>> name, protos = parse_example_request(
    ...     b'{"signature_name": "classify_species", "examples": [{"x": [1.5, 2.0]}]}',
    ...     "classify")
    >>> name, len(protos)
    ('classify_species', 1)
    """
    from tensorflow.core.example import example_pb2

    try:
        doc = codec.loads(body) if body.strip() else None
    except (ValueError, RecursionError) as error:
        raise ServingError(f"JSON Parse error: {error}") from None
    if not isinstance(doc, dict):
        raise ServingError(f'The :{verb} body must be a JSON object such as '
                           '{"signature_name": "...", "examples": [{"feature": '
                           'value, ...}]}.')
    signature = doc.get("signature_name", "") or codec.DEFAULT_SIGNATURE
    if not isinstance(signature, str):
        raise ServingError("'signature_name' must be a string value.")
    examples, context = doc.get("examples"), doc.get("context", {})
    if not isinstance(examples, list) or not examples:
        raise ServingError(f'A :{verb} request needs "examples": a non-empty list of '
                           'objects, one per example.')
    if not isinstance(context, dict):
        raise ServingError('"context" must be an object of features.')
    shared = {name: _feature(name, value, "context") for name, value in context.items()}
    protos = []
    for index, example in enumerate(examples):
        if not isinstance(example, dict):
            raise ServingError(f"examples[{index}] is not an object of features.")
        proto = example_pb2.Example()
        for name, feature in shared.items():
            if name not in example:
                proto.features.feature[name].CopyFrom(feature)
        for name, value in example.items():
            proto.features.feature[name].CopyFrom(
                _feature(name, value, f"examples[{index}]"))
        protos.append(proto.SerializeToString())
    return signature, protos


def _feature(name: str, value, where: str):
    from tensorflow.core.example import feature_pb2

    values = value if isinstance(value, list) else [value]
    feature = feature_pb2.Feature()
    if not values:
        raise ServingError(f"{where}: feature '{name}' is an empty list; its type "
                           "cannot be told. Give its values.")
    if all(isinstance(v, (str, dict)) for v in values):
        feature.bytes_list.value.extend(_bytes(name, v, where) for v in values)
    elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        if not all(-2**63 <= v < 2**63 for v in values):
            raise ServingError(f"{where}: feature '{name}' has an integer past 64 bits.")
        feature.int64_list.value.extend(values)
    elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        if not all(math.isfinite(v) for v in values):
            raise ServingError(f"{where}: feature '{name}' holds NaN or infinity.")
        feature.float_list.value.extend(float(v) for v in values)
    else:
        raise ServingError(
            f"{where}: feature '{name}' must be numbers, strings or {{\"b64\": ...}} "
            f"values, one type per feature. Received: {json.dumps(value)[:120]}")
    return feature


def _bytes(name: str, value, where: str) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if set(value) != {"b64"} or not isinstance(value["b64"], str):
        raise ServingError(f"{where}: feature '{name}': an object value must be "
                           '{"b64": "<base64>"}.')
    try:
        return base64.b64decode(value["b64"], validate=True)
    except (binascii.Error, ValueError):
        raise ServingError(f"{where}: feature '{name}': invalid base64.") from None


def encode_results(outputs: dict[str, np.ndarray], verb: str) -> dict:
    """The response of a Classify (`classes`, `scores`) or Regress
    (`outputs`) signature's outputs.

    Examples:

    >>> encode_results({"outputs": np.array([0.5, 1.5], "float32")}, "regress")
    {'results': [0.5, 1.5]}
    """
    if verb == "regress":
        return {"results": np.asarray(outputs["outputs"], float).reshape(-1).tolist()}
    scores = np.asarray(outputs["scores"], float)
    classes = outputs.get("classes")
    if classes is None:
        classes = np.full(scores.shape, b"", dtype=object)
    return {"results": [
        [[c.decode("utf-8") if isinstance(c, bytes) else str(c), s]
         for c, s in zip(row_classes, row_scores.tolist())]
        for row_classes, row_scores in zip(classes, scores)
    ]}


def example_signature(loaded, name: str, verb: str):
    """Signature `name` of `loaded`, checked to be a Classify or Regress one
    (`verb`); the error names the fitting signatures (REST and gRPC)."""
    signature = loaded.signature(name)
    method = METHODS[verb]
    if signature.method_name != method:
        fitting = sorted(k for k, s in loaded.signatures.items() if s.method_name == method)
        raise ServingError(
            f"Expected {verb} signature method_name to be {method}. Was: "
            f"{signature.method_name} (signature '{signature.name}'). "
            + (f"This version's {verb} signatures: {fitting}." if fitting else
               "This version has none: export with example_signatures=True "
               "(kerasmtl export --example-signatures)."))
    return signature
