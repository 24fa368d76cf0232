"""TF Serving's batching parameters for `kerasmtl serve --enable-batching`:
`BatchingParameters`, read from a `--batching_parameters_file` (TF Serving's
text format, parsed by protobuf's own text parser) or from the flags alone.
`batching.Batcher` merges requests with them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

# Beyond this many batch threads, more would only wait for the GIL and memory.
_MAX_THREADS = 1024
_INT_KEYS = ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches",
             "num_batch_threads")
# TF Serving's keys that change how batches are formed, which this batcher
# does not do; a file that sets them is refused rather than half obeyed.
_UNSUPPORTED = {
    "allowed_batch_sizes": "batches are not padded to allowed sizes",
    "pad_variable_length_inputs": "inputs of other lengths go in separate batches",
    "enable_large_batch_splitting": "requests over max_batch_size run alone",
    "max_execution_batch_size": "requests over max_batch_size run alone",
}


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class BatchingParameters:
    """How requests are batched: TF Serving's `BatchingParameters`.

    Args:
        max_batch_size: int. Most rows in a merged call. Defaults to `1000`
            (TF Serving's).
        batch_timeout_micros: int. How long a batch that is not full waits
            for more requests once a thread is free. Defaults to `0` (TF
            Serving's): run as soon as a thread is free.
        max_enqueued_batches: int. Batches that may wait per signature; a
            request needing one more gets 503. Defaults to `10` (TF Serving's).
        num_batch_threads: int. Batches run at once. Defaults to the number
            of usable CPUs (TF Serving's).
        thread_pool_name: str. Prefix of the batch threads' names.

    Examples:

    >>> BatchingParameters(max_batch_size=32).batch_timeout_micros
    0
    """

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = field(default_factory=_cpu_count)
    thread_pool_name: str = "model_server_batch_threads"

    def __post_init__(self):
        for key in _INT_KEYS:
            problem = _check(key, getattr(self, key))
            if problem:
                raise ValueError(f"Invalid value for argument `{key}`. {problem}")


def _check(key: str, value) -> str | None:
    low = 0 if key == "batch_timeout_micros" else 1
    high = _MAX_THREADS if key == "num_batch_threads" else 2**63 - 1
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return f"Expected an int in [{low}, {high}]. Received: {key}={value!r}"
    return None


def read_batching_parameters(path: str | os.PathLike) -> BatchingParameters:
    """Reads TF Serving's `--batching_parameters_file` (text format):

        max_batch_size { value: 32 }
        batch_timeout_micros { value: 1000 }
        max_enqueued_batches { value: 100 }
        num_batch_threads { value: 4 }

    Keys left out keep TF Serving's defaults. Raises `ValueError` naming the
    file and line of an unknown key, a bad value or a key not supported here.
    """
    from google.protobuf import text_format

    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"Cannot read the batching parameters file {path}: "
                         f"{error}") from None
    proto = _message_class()()
    try:
        text_format.Parse(text, proto)
    except text_format.ParseError as error:
        message = re.sub(r"^\d+:\d+ : ", "", str(error)).replace(
            '"tensorflow.serving.BatchingParameters" ', "BatchingParameters ")
        message += "" if message.endswith(".") else "."
        raise ValueError(
            f"{path}:{error.GetLine() or '?'}: {message} Expected TF Serving's "
            f"batching parameters, one per line: KEY {{ value: N }} with KEY in "
            f"{', '.join(_INT_KEYS)} (or thread_pool_name {{ value: \"NAME\" }})."
        ) from None
    values = {}
    for descriptor, value in proto.ListFields():
        key = descriptor.name
        where = f"{path}:{_line_of(text, key)}: {key}"
        if key == "enable_large_batch_splitting" and not value.value:
            continue  # off, as here
        if key in _UNSUPPORTED or key not in (*_INT_KEYS, "thread_pool_name"):
            why = _UNSUPPORTED.get(key, "not implemented")
            raise ValueError(f"{where} is not supported by kerasmtl serve ({why}); "
                             "remove it.")
        values[key] = value.value
        problem = _check(key, value.value) if key in _INT_KEYS else None
        if problem:
            raise ValueError(f"{where}: {problem.replace(f'{key}=', 'value: ')}.")
    return BatchingParameters(**values)


def batching_from_flags(enable: bool, parameters_file: str | os.PathLike | None
                        ) -> BatchingParameters | None:
    """The parameters `serve --enable-batching [--batching-parameters-file F]`
    asks for; None when batching is off."""
    if parameters_file is not None and not enable:
        raise ValueError(f"The batching parameters file {os.fspath(parameters_file)} "
                         "is given without --enable-batching; add it (TF Serving "
                         "refuses this too).")
    if not enable:
        return None
    return BatchingParameters() if parameters_file is None else (
        read_batching_parameters(parameters_file))


def _line_of(text: str, key: str) -> int:
    found = re.search(rf"^[^#\n]*?\b{key}\b", text, re.M)
    return text.count("\n", 0, found.start()) + 1 if found else 1


def _message_class():
    """TF Serving's `BatchingParameters` message, so that protobuf's own text
    parser reads the file as TF Serving does. tensorflow-serving-api 2.21 does
    not ship session_bundle_config_pb2: then it is built from the fields and
    numbers of TF Serving's session_bundle_config.proto."""
    try:
        from tensorflow_serving.servables.tensorflow import session_bundle_config_pb2
        return session_bundle_config_pb2.BatchingParameters
    except ImportError:
        pass
    from google.protobuf import (
        descriptor_pb2,
        descriptor_pool,
        message_factory,
        wrappers_pb2,
    )

    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    file = descriptor_pb2.FileDescriptorProto(
        name="kerasmtl/batching_parameters.proto", package="tensorflow.serving",
        syntax="proto3", dependency=["google/protobuf/wrappers.proto"])
    message = file.message_type.add(name="BatchingParameters")
    types = descriptor_pb2.FieldDescriptorProto
    wrapped = {1: "max_batch_size Int64", 2: "batch_timeout_micros Int64",
               3: "max_enqueued_batches Int64", 4: "num_batch_threads Int64",
               5: "thread_pool_name String", 8: "enable_large_batch_splitting Bool",
               9: "max_execution_batch_size Int64"}
    for number, spec in wrapped.items():
        name, kind = spec.split()
        message.field.add(name=name, number=number, type=types.TYPE_MESSAGE,
                          type_name=f".google.protobuf.{kind}Value")
    message.field.add(name="allowed_batch_sizes", number=6, type=types.TYPE_INT64,
                      label=types.LABEL_REPEATED)
    message.field.add(name="pad_variable_length_inputs", number=7,
                      type=types.TYPE_BOOL)
    pool.Add(file)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))
