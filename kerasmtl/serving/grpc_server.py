"""`kerasmtl serve --grpc-port`: TF Serving's gRPC API in front of the models.

Serves `tensorflow.serving.PredictionService` (`Predict`, `GetModelMetadata`)
and `tensorflow.serving.ModelService` (`GetModelStatus`) with the official
protos of `tensorflow-serving-api`, so clients written for TF Serving (its
`PredictionServiceStub`) work unchanged. Requests go to a `ModelManager`, the
REST app's own when both run (`server.serve(grpc_port=...)`): the same versions, the
same version policy (the newest only) and the same hot reload.

Errors are TF Serving's status codes, with messages naming the model, the
input and the shapes: NOT_FOUND (unknown model or version), INVALID_ARGUMENT
(bad input names, dtypes, shapes, too large inputs, unknown signature or
output), UNIMPLEMENTED (version labels, `Classify`, `Regress`,
`MultiInference`), RESOURCE_EXHAUSTED (a message over the limit, or more
than `max_requests` calls at once), INTERNAL (the model failed). The server
keeps serving after any of them.

What one client can cost is bounded as on REST: gRPC rejects messages over
`max_message_bytes` (the REST body limit, 4 MiB by default) before parsing
them; at most `max_requests` calls are held at once and `max_workers` of them
worked on, each decoding to at most 8 x `max_message_bytes` (see
`grpc_tensors`): 64 x 4 MiB + 16 x 32 MiB = 768 MiB at most with the defaults.
"""

from __future__ import annotations

import functools
import logging
from concurrent import futures

import grpc
from google.protobuf import json_format
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from kerasmtl.serving import grpc_tensors, server
from kerasmtl.serving.codec import DEFAULT_SIGNATURE
from kerasmtl.serving.errors import ServingError
from kerasmtl.serving.model_manager import LoadedVersion, ModelManager

logger = logging.getLogger("kerasmtl.serving")

DEFAULT_GRPC_PORT = 8500  # TF Serving's gRPC port
# Threads working on calls. TensorFlow runs each call's ops in its own thread
# pools; more Python threads would mostly wait for the GIL.
DEFAULT_MAX_WORKERS = 16
# Decoded inputs per byte of the message limit: int64 values, varint-coded,
# take 1 byte on the wire and 8 decoded (see `grpc_tensors`).
DECODED_BYTES_PER_MESSAGE_BYTE = 8

# ServingError's HTTP status -> gRPC code, as TF Serving maps them.
_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
}


def _answers_errors(method):
    """Turns a `ServingError` into its status code, anything else into
    INTERNAL (logged): one bad call never takes the server down."""

    @functools.wraps(method)
    def wrapper(self, request, context):
        try:
            return method(self, request, context)
        except ServingError as error:
            code = _CODES.get(error.status_code, grpc.StatusCode.INTERNAL)
            context.abort(code, error.message)
        except Exception as error:
            logger.exception("Internal error in gRPC %s", method.__name__)
            context.abort(grpc.StatusCode.INTERNAL,
                          f"Internal error: {type(error).__name__}: {error}")

    return wrapper


def _unimplemented(what: str):
    def method(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, what)

    return method


class _Versions:
    """Resolves a request's `ModelSpec` to a loaded version of the manager's
    model (or raises the `ServingError` TF Serving would answer)."""

    def __init__(self, manager: ModelManager):
        self.manager = manager

    def version_number(self, spec) -> int | None:
        name = self.manager.name
        if not spec.name:
            raise ServingError(
                f"Missing model_spec.name; this server serves model '{name}'.")
        if spec.version_label:
            raise ServingError(
                f"Version labels are not supported yet (model_spec.version_label="
                f"'{spec.version_label[:60]}'); request a version number "
                "(model_spec.version) or none for the newest.", 501)
        version = spec.version.value if spec.HasField("version") else None
        if spec.name != name:
            request = f"Latest({spec.name[:60]})" if version is None else (
                f"Specific({spec.name[:60]}, {version})")
            raise ServingError(
                f"Servable not found for request: {request}. This server serves "
                f"model '{name}'.", 404)
        return version

    def get(self, spec) -> LoadedVersion:
        return self.manager.get(self.version_number(spec))


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """TF Serving's `PredictionService`: `Predict` and `GetModelMetadata`.

    Args:
        manager: `ModelManager`. Serves its model's loaded version.
        max_decoded_bytes: int. Most bytes a request's inputs may decode to.
    """

    def __init__(self, manager: ModelManager, max_decoded_bytes: int):
        self._versions = _Versions(manager)
        self.max_decoded_bytes = max_decoded_bytes

    @_answers_errors
    def Predict(self, request, context):
        spec = request.model_spec
        loaded = self._versions.get(spec)
        signature = loaded.signature(spec.signature_name or DEFAULT_SIGNATURE)
        names = list(request.output_filter) or None
        if names:
            unknown = [n for n in names if n not in signature.outputs]
            if unknown or len(set(names)) != len(names):
                problem = (f"names unknown output(s) {unknown[:5]}" if unknown
                           else "names an output twice")
                raise ServingError(
                    f"output_filter of the request to model '{spec.name}' "
                    f"{problem}; signature '{signature.name}' has outputs "
                    f"{sorted(signature.outputs)}.")
        arrays = grpc_tensors.decode_inputs(
            spec.name, request.inputs, signature.inputs, self.max_decoded_bytes)
        outputs = signature(arrays)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = loaded.version
        response.model_spec.signature_name = signature.name
        for key, proto in grpc_tensors.encode_outputs(outputs, names).items():
            response.outputs[key].CopyFrom(proto)
        return response

    @_answers_errors
    def GetModelMetadata(self, request, context):
        fields = list(request.metadata_field)
        if fields != ["signature_def"]:
            raise ServingError(
                f"GetModelMetadataRequest.metadata_field is {fields[:5]}; the only "
                "metadata served is ['signature_def'].")
        loaded = self._versions.get(request.model_spec)
        definitions = get_model_metadata_pb2.SignatureDefMap()
        for key, definition in loaded.signature_def_json.items():
            json_format.ParseDict(
                definition, definitions.signature_def[key], ignore_unknown_fields=True)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = loaded.version
        response.metadata["signature_def"].Pack(definitions)
        return response

    Classify = _unimplemented(
        "Classify needs a tf.Example signature, which kerasmtl exports do not "
        "have; use Predict.")
    Regress = _unimplemented(
        "Regress needs a tf.Example signature, which kerasmtl exports do not "
        "have; use Predict.")
    MultiInference = _unimplemented(
        "MultiInference needs tf.Example signatures, which kerasmtl exports do "
        "not have; use Predict.")


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """TF Serving's `ModelService`: `GetModelStatus`.

    Args:
        manager: `ModelManager`. Reports its model's versions.
    """

    def __init__(self, manager: ModelManager):
        self._versions = _Versions(manager)

    @_answers_errors
    def GetModelStatus(self, request, context):
        status = self._versions.manager.status(
            self._versions.version_number(request.model_spec))
        return json_format.ParseDict(status, get_model_status_pb2.GetModelStatusResponse())

    HandleReloadConfigRequest = _unimplemented(
        "kerasmtl serve takes no model config: it serves one model from its base "
        "path, given on the command line.")


def create_grpc_server(
    manager: ModelManager,
    host: str = "127.0.0.1",
    port: int = DEFAULT_GRPC_PORT,
    max_message_bytes: int = server.DEFAULT_MAX_BODY_BYTES,
    max_requests: int = server.DEFAULT_MAX_REQUESTS,
    max_workers: int = DEFAULT_MAX_WORKERS,
) -> tuple[grpc.Server, int]:
    """A gRPC server (not started) for `manager`'s model, bound to a port.

    The manager's watcher is not started here: `manager.start()` does it
    (the REST app's lifespan does, when both serve).

    Args:
        manager: `ModelManager`. The model to serve (e.g. a REST app's
            `app.state.manager`).
        host: str. Interface to bind. Defaults to `"127.0.0.1"`.
        port: int. TCP port; `0` picks a free one. Defaults to `8500`, TF
            Serving's gRPC port.
        max_message_bytes: int. Largest request message; larger ones get
            RESOURCE_EXHAUSTED. Defaults to 4 MiB (the REST body limit).
        max_requests: int. Most calls held at once; more get
            RESOURCE_EXHAUSTED. Defaults to `64`.
        max_workers: int. Threads working on calls. Defaults to `16`.

    Returns:
        `(server, port)`: a `grpc.Server` to `start()` and `stop(grace)`, and
        the port it is bound to.

    Examples:

    ```python
    app = create_app("exported/quickstart", "quickstart")
    grpc_server, port = create_grpc_server(app.state.manager, port=8500)
    grpc_server.start()
    ```
    """
    for argument, value in (("max_message_bytes", max_message_bytes),
                            ("max_requests", max_requests), ("max_workers", max_workers)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"Invalid value for argument `{argument}`. Expected an int >= 1. "
                f"Received: {argument}={value!r}")
    grpc_server = grpc.server(
        futures.ThreadPoolExecutor(max_workers, thread_name_prefix="kerasmtl-grpc"),
        maximum_concurrent_rpcs=max_requests,
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", -1),  # answers are the model's size
            ("grpc.so_reuseport", 0),  # a port in use is an error, not shared
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(manager, DECODED_BYTES_PER_MESSAGE_BYTE * max_message_bytes),
        grpc_server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelServicer(manager), grpc_server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = grpc_server.add_insecure_port(address)
    except RuntimeError as error:  # grpcio >= 1.57 raises where it returned 0
        raise OSError(f"Cannot bind the gRPC server to {address}: {error}. Is the "
                      "port in use? Pick another with --grpc-port.") from None
    if bound == 0:
        raise OSError(f"Cannot bind the gRPC server to {address}. Is the port in "
                      "use? Pick another with --grpc-port.")
    return grpc_server, bound

