"""`kerasmtl serve --grpc-port`: TF Serving's gRPC API in front of the models.

Serves `tensorflow.serving.PredictionService` (`Predict`, `GetModelMetadata`,
and `Classify`/`Regress` on exports with tf.Example signatures)
and `tensorflow.serving.ModelService` (`GetModelStatus`) with the official
protos of `tensorflow-serving-api`, so clients written for TF Serving (its
`PredictionServiceStub`) work unchanged. Requests go to a `ServedModels`
(or one `ModelManager`), the REST app's own when both run
(`server.serve(grpc_port=...)`): the same models, versions, version policies,
labels (`model_spec.version_label`) and hot reload. Calls are counted in the
REST app's `monitoring.Metrics` when one is given. With a `batching.Batcher`
(the REST app's, `serve --enable-batching`), concurrent `Predict` calls are
merged with each other and with REST requests after each is checked.

Errors are TF Serving's status codes, with messages naming the model, the
input and the shapes: NOT_FOUND (unknown model or version), INVALID_ARGUMENT
(bad input names, dtypes, shapes, too large inputs, unknown signature or
output), NOT_FOUND (an unknown version label, naming the known ones),
INVALID_ARGUMENT (`Classify`/`Regress` on a signature of another method),
UNIMPLEMENTED (`MultiInference`), RESOURCE_EXHAUSTED (a message over the limit, or more
than `max_requests` calls at once), UNAVAILABLE (the batch queue is full, with
batching on: retry later), INTERNAL (the model failed). The server
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
import numpy as np
from google.protobuf import json_format
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from kerasmtl.serving import examples, grpc_tensors, monitoring, server
from kerasmtl.serving.batching import Batcher
from kerasmtl.serving.codec import DEFAULT_SIGNATURE
from kerasmtl.serving.errors import ServingError
from kerasmtl.serving.model_manager import LoadedVersion, ModelManager
from kerasmtl.serving.served_models import ServedModels

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
    INTERNAL (logged): one bad call never takes the server down. Counts the
    call in `self._metrics` (when set), with what `method` put in its
    `RequestRecord`."""

    @functools.wraps(method)
    def wrapper(self, request, context):
        record = monitoring.RequestRecord("GRPC", method.__name__)
        status = grpc.StatusCode.OK
        try:
            return method(self, request, context, record)
        except ServingError as error:
            status = _CODES.get(error.status_code, grpc.StatusCode.INTERNAL)
            message = error.message
        except Exception as error:
            logger.exception("Internal error in gRPC %s", method.__name__)
            status = grpc.StatusCode.INTERNAL
            message = f"Internal error: {type(error).__name__}: {error}"
        finally:
            if self._metrics is not None:
                self._metrics.record(record, status.name)
        context.abort(status, message)  # raises: after the count

    return wrapper


def _unimplemented(what: str):
    def method(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, what)

    return method


class _Versions:
    """Resolves a request's `ModelSpec` to a model's manager and a loaded
    version (or raises the `ServingError` TF Serving would answer)."""

    def __init__(self, models: ServedModels | ModelManager):
        if isinstance(models, ModelManager):  # one model, served as it is
            served = ServedModels([], models.poll_seconds)
            served.managers = {models.name: models}
            models = served
        self.models = models

    def resolve(self, spec, record, for_status: bool = False
                ) -> tuple[ModelManager, int | None]:
        """The manager of `spec.name`, and the version asked for (by number
        or label; `None`: the newest)."""
        if not spec.name:
            names = sorted(self.models.managers)
            serves = f"model '{names[0]}'" if len(names) == 1 else f"models {names}"
            raise ServingError(f"Missing model_spec.name; this server serves {serves}.")
        version = spec.version.value if spec.HasField("version") else None
        label = spec.version_label or None
        manager = self.models.manager(spec.name, version, label, for_status)
        record.model = spec.name
        if label is not None:
            version = manager.version_of(label)
        return manager, version

    def get(self, spec, record) -> LoadedVersion:
        manager, version = self.resolve(spec, record)
        loaded = manager.get(version)
        record.version = str(loaded.version)
        return loaded


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """TF Serving's `PredictionService`: `Predict` and `GetModelMetadata`.

    Args:
        models: `ServedModels` or `ModelManager`. Serves their loaded versions.
        max_decoded_bytes: int. Most bytes a request's inputs may decode to.
        metrics: `monitoring.Metrics` or None. Counts the calls.
        batcher: `batching.Batcher` or None. Merges concurrent calls.
    """

    def __init__(self, models: ServedModels | ModelManager, max_decoded_bytes: int,
                 metrics: monitoring.Metrics | None = None,
                 batcher: Batcher | None = None):
        self._versions = _Versions(models)
        self.max_decoded_bytes = max_decoded_bytes
        self._metrics = metrics
        self._batcher = batcher

    @_answers_errors
    def Predict(self, request, context, record):
        spec = request.model_spec
        loaded = self._versions.get(spec, record)
        signature = loaded.signature(spec.signature_name or DEFAULT_SIGNATURE)
        record.signature = signature.name
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
        if self._batcher is None:
            outputs = signature(arrays)
        else:
            outputs = self._batcher.run(signature, arrays, spec.name)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = loaded.version
        response.model_spec.signature_name = signature.name
        for key, proto in grpc_tensors.encode_outputs(outputs, names).items():
            response.outputs[key].CopyFrom(proto)
        return response

    @_answers_errors
    def GetModelMetadata(self, request, context, record):
        fields = list(request.metadata_field)
        if fields != ["signature_def"]:
            raise ServingError(
                f"GetModelMetadataRequest.metadata_field is {fields[:5]}; the only "
                "metadata served is ['signature_def'].")
        loaded = self._versions.get(request.model_spec, record)
        definitions = get_model_metadata_pb2.SignatureDefMap()
        for key, definition in loaded.signature_def_json.items():
            json_format.ParseDict(
                definition, definitions.signature_def[key], ignore_unknown_fields=True)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = loaded.version
        response.metadata["signature_def"].Pack(definitions)
        return response

    @_answers_errors
    def Classify(self, request, context, record):
        loaded, outputs = self._run_examples(request, record, "classify")
        response = classification_pb2.ClassificationResponse()
        _fill_spec(response.model_spec, request.model_spec, loaded, record)
        for row in examples.encode_results(outputs, "classify")["results"]:
            classification = response.result.classifications.add()
            for label, score in row:
                classification.classes.add(label=label, score=score)
        return response

    @_answers_errors
    def Regress(self, request, context, record):
        loaded, outputs = self._run_examples(request, record, "regress")
        response = regression_pb2.RegressionResponse()
        _fill_spec(response.model_spec, request.model_spec, loaded, record)
        for value in examples.encode_results(outputs, "regress")["results"]:
            response.result.regressions.add(value=value)
        return response

    def _run_examples(self, request, record, verb: str):
        """Runs the Classify/Regress signature the request names on its
        `tf.Example`s (each merged over the context, as TF Serving does)."""
        spec = request.model_spec
        loaded = self._versions.get(spec, record)
        signature = examples.example_signature(
            loaded, spec.signature_name or DEFAULT_SIGNATURE, verb)
        record.signature = signature.name
        which = request.input.WhichOneof("kind")
        if which == "example_list":
            protos = [e.SerializeToString() for e in request.input.example_list.examples]
        elif which == "example_list_with_context":
            listed = request.input.example_list_with_context
            context = listed.context.SerializeToString()
            # Concatenated serialized messages parse as their merge: an
            # example's own features override the context's.
            protos = [context + e.SerializeToString() for e in listed.examples]
        else:
            protos = []
        if not protos:
            raise ServingError(f"The {verb.capitalize()} request to model '{spec.name}' "
                               "has no examples (input.example_list.examples).")
        return loaded, signature({"inputs": np.array(protos, dtype=object)})

    MultiInference = _unimplemented(
        "MultiInference is not served; call Classify or Regress (or Predict).")


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """TF Serving's `ModelService`: `GetModelStatus`.

    Args:
        models: `ServedModels` or `ModelManager`. Reports their versions.
        metrics: `monitoring.Metrics` or None. Counts the calls.
    """

    def __init__(self, models: ServedModels | ModelManager,
                 metrics: monitoring.Metrics | None = None):
        self._versions = _Versions(models)
        self._metrics = metrics

    @_answers_errors
    def GetModelStatus(self, request, context, record):
        manager, version = self._versions.resolve(request.model_spec, record,
                                                  for_status=True)
        status = manager.status(version)
        return json_format.ParseDict(status, get_model_status_pb2.GetModelStatusResponse())

    HandleReloadConfigRequest = _unimplemented(
        "kerasmtl serve reloads its --model-config-file when the file changes; "
        "edit the file instead of sending a config.")


def create_grpc_server(
    manager: ServedModels | ModelManager,
    host: str = "127.0.0.1",
    port: int = DEFAULT_GRPC_PORT,
    max_message_bytes: int = server.DEFAULT_MAX_BODY_BYTES,
    max_requests: int = server.DEFAULT_MAX_REQUESTS,
    max_workers: int = DEFAULT_MAX_WORKERS,
    metrics: monitoring.Metrics | None = None,
    batcher: Batcher | None = None,
) -> tuple[grpc.Server, int]:
    """A gRPC server (not started) for `manager`'s model, bound to a port.

    The manager's watcher is not started here: `manager.start()` does it
    (the REST app's lifespan does, when both serve).

    Args:
        manager: `ServedModels` or `ModelManager`. The models to serve (e.g.
            a REST app's `app.state.models`).
        host: str. Interface to bind. Defaults to `"127.0.0.1"`.
        port: int. TCP port; `0` picks a free one. Defaults to `8500`, TF
            Serving's gRPC port.
        max_message_bytes: int. Largest request message; larger ones get
            RESOURCE_EXHAUSTED. Defaults to 4 MiB (the REST body limit).
        max_requests: int. Most calls held at once; more get
            RESOURCE_EXHAUSTED. Defaults to `64`.
        max_workers: int. Threads working on calls. Defaults to `16`.
        metrics: `monitoring.Metrics` or None. Counts the calls (e.g. a REST
            app's `app.state.metrics`, so one scrape shows both). Defaults to
            `None`.
        batcher: `batching.Batcher` or None. Merges concurrent `Predict`
            calls (e.g. a REST app's `app.state.batcher`, so REST and gRPC
            requests merge too). Defaults to `None`: each call runs alone.

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
        PredictionServicer(manager, DECODED_BYTES_PER_MESSAGE_BYTE * max_message_bytes,
                           metrics, batcher),
        grpc_server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelServicer(manager, metrics), grpc_server)
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


def _fill_spec(spec, asked, loaded, record) -> None:
    spec.name = asked.name
    spec.version.value = loaded.version
    spec.signature_name = record.signature
