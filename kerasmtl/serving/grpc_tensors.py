"""TF Serving's gRPC `TensorProto` inputs -> checked numpy arrays, and back.

The gRPC twin of `codec`: a `PredictRequest`'s inputs are `TensorProto`s
(as `tf.make_tensor_proto` writes them); each must name a signature input,
have its dtype exactly (TF Serving does not cast either), and its rank and
known sizes. Every problem is a `ServingError` (400) naming the model, the
input and the shapes.

Memory: gRPC has parsed the message, whose size its server bounds (the
REST body limit, 4 MiB by default). Decoding copies the values once, which
costs about the message's size, except where `TensorProto` lets a few bytes
stand for much more: a tensor that gives one value (or none) for a large
shape is filled by repeating it, as TensorFlow does. So the declared shape
is checked before anything is allocated: a request's inputs may decode to at
most `max_decoded_bytes` (the server sets 8 x its message limit: what
varint-coded int64 values take at most, 32 MiB by default).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

from kerasmtl.serving.codec import TensorInfo
from kerasmtl.serving.errors import ServingError

# Decoded bytes per declared string element: numpy's object pointer and
# TensorFlow's tstring header (its text counts besides).
_STRING_ELEMENT_BYTES = 32
# Deepest tensor accepted, as the REST codec's limit.
_MAX_RANK = 32


def decode_inputs(
    model: str,
    tensors: Mapping[str, tensor_pb2.TensorProto],
    inputs: Mapping[str, TensorInfo],
    max_decoded_bytes: int,
) -> dict[str, np.ndarray]:
    """Checks a request's input `TensorProto`s and returns them as arrays.

    Args:
        model: str. The model's name, for error messages.
        tensors: the request's `inputs` map.
        inputs: the signature's inputs by name.
        max_decoded_bytes: int. Most bytes all decoded inputs may take.

    Returns:
        dict mapping each input name to an array of its dtype and shape.

    Examples:

    >>> spec = {"x": TensorInfo("x", "DT_FLOAT", (-1, 2))}
    >>> proto = tf.make_tensor_proto(np.ones((3, 2), "float32"))
    >>> decode_inputs("m", {"x": proto}, spec, 1024)["x"].shape
    (3, 2)
    """
    names = sorted(inputs)
    missing = [n for n in names if n not in tensors]
    extra = sorted(k for k in tensors if k not in inputs)
    if missing or extra:
        problems = []
        if missing:
            problems.append(f"is missing input(s) {missing}")
        if extra:
            shown = [k if len(k) <= 40 else k[:37] + "..." for k in extra[:5]]
            more = f" and {len(extra) - 5} more" if len(extra) > 5 else ""
            problems.append(f"has unknown input(s) {shown}{more}")
        raise ServingError(
            f"The request to model '{model}' {' and '.join(problems)}; the "
            f"signature's inputs are {names}. Set PredictRequest.inputs[NAME] for "
            "each of them."
        )
    total = 0
    for name in names:
        total += _check_tensor(model, tensors[name], inputs[name])
    if total > max_decoded_bytes:
        raise ServingError(
            f"The inputs of the request to model '{model}' would take {total} bytes "
            f"decoded ({_shapes(tensors)}), more than the limit of "
            f"{max_decoded_bytes} bytes. Send smaller batches, or start the server "
            "with a larger --max-body-bytes."
        )
    arrays = {}
    for name in names:
        try:
            array = tf.make_ndarray(tensors[name])
        except (TypeError, ValueError) as error:
            raise ServingError(
                f"Input '{name}' of model '{model}' is not a valid TensorProto of "
                f"shape {_shape_text(_dims(tensors[name]))}: {error}. Build it with "
                "tf.make_tensor_proto(array)."
            ) from None
        arrays[name] = array
    return arrays


def _check_tensor(model: str, proto: tensor_pb2.TensorProto, info: TensorInfo) -> int:
    """Checks dtype and shape against the signature; returns decoded bytes."""
    where = f"Input '{info.name}' of model '{model}'"
    got = types_pb2.DataType.Name(proto.dtype) if proto.dtype in (
        types_pb2.DataType.values()) else f"dtype #{proto.dtype}"
    if got != info.dtype:
        raise ServingError(
            f"{where} expects {info.dtype}; the request's TensorProto has {got}. "
            f"Send tf.make_tensor_proto(array, dtype=tf.{_tf_name(info.dtype)})."
        )
    if proto.tensor_shape.unknown_rank:
        raise ServingError(f"{where} has an unknown rank; give its shape.")
    dims = _dims(proto)
    if len(dims) > _MAX_RANK:
        raise ServingError(
            f"{where} has rank {len(dims)}, more than {_MAX_RANK}; the signature "
            f"expects shape {info.shape_text()}."
        )
    if any(d < 0 for d in dims):
        raise ServingError(
            f"{where} has shape {_shape_text(dims)}, with a negative size; every "
            "size of a request's tensor must be known."
        )
    expected = info.shape
    if dims and dims[0] == 0:
        raise ServingError(f"Empty batch: input '{info.name}' of model '{model}' "
                           "has no rows.")
    if expected is not None:
        wrong_rank = len(dims) != len(expected)
        if wrong_rank or any(e >= 0 and d != e for d, e in zip(dims, expected)):
            problem = (f"rank {len(dims)}, expected rank {len(expected)}" if wrong_rank
                       else "a size differs")
            raise ServingError(
                f"{where} has shape {_shape_text(dims)} ({problem}); the signature "
                f"expects {_shape_text(expected)} (-1: any size)."
            )
    elements = math.prod(dims)
    if info.dtype == "DT_STRING":
        values = proto.string_val
        text = sum(len(v) for v in values)
        if values and elements > len(values):  # filled by repeating the last
            text += (elements - len(values)) * len(values[-1])
        return elements * _STRING_ELEMENT_BYTES + text
    return elements * tf.dtypes.as_dtype(proto.dtype).size


def encode_outputs(
    outputs: Mapping[str, np.ndarray], names: list[str] | None = None
) -> dict[str, tensor_pb2.TensorProto]:
    """`TensorProto`s of `outputs` (only `names`, when given, in that order).

    Examples:

    >>> protos = encode_outputs({"y": np.array([0.5, 1.5], "float32")})
    >>> tf.make_ndarray(protos["y"]).tolist()
    [0.5, 1.5]
    """
    keys = sorted(outputs) if names is None else names
    return {k: tf.make_tensor_proto(np.asarray(outputs[k])) for k in keys}


def _dims(proto: tensor_pb2.TensorProto) -> tuple[int, ...]:
    return tuple(int(d.size) for d in proto.tensor_shape.dim)


def _shapes(tensors: Mapping[str, tensor_pb2.TensorProto]) -> str:
    return ", ".join(f"'{k}': {_shape_text(_dims(v))}" for k, v in sorted(tensors.items()))


def _tf_name(dtype: str) -> str:
    return tf.dtypes.as_dtype(types_pb2.DataType.Value(dtype)).name


def _shape_text(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + (",)" if len(shape) == 1 else ")")
