"""The gRPC side of `Client(..., protocol="grpc")`.

Calls TF Serving's `PredictionService` and `ModelService` with the official
stubs of `tensorflow-serving-api` (`kerasmtl serve --grpc-port` or
`tensorflow/serving` alike) and gives the REST client's return values: the
status and metadata as the REST API's JSON (dicts), outputs as numpy arrays.
Imported only when a gRPC client is made: it loads TensorFlow.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from kerasmtl.serving.codec import DEFAULT_SIGNATURE
from kerasmtl.serving.errors import ServingError

# gRPC codes -> the HTTP status TF Serving's REST API gives for them.
_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.UNIMPLEMENTED: 501,
}


class GrpcChannel:
    """One channel to a gRPC model server, for one model.

    Args:
        target: str. `host:port`, e.g. `"127.0.0.1:8500"`.
        name: str. The model name.
        version: int or None. A specific version, or None for the newest.
        signature_name: str or None. The signature (None: `serving_default`).
        timeout: float. Seconds to wait for each answer.
    """

    def __init__(self, target: str, name: str, version: int | None,
                 signature_name: str | None, timeout: float):
        self.target = target
        self.name = name
        self.version = version
        self.signature_name = signature_name
        self.timeout = timeout
        # Answers are as large as the model's outputs: no receive limit.
        self._channel = grpc.insecure_channel(
            target, options=[("grpc.max_receive_message_length", -1)])
        self._predictions = prediction_service_pb2_grpc.PredictionServiceStub(
            self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def _spec(self, spec, signature: bool = True) -> None:
        spec.name = self.name
        if self.version is not None:
            spec.version.value = self.version
        if signature and self.signature_name:
            spec.signature_name = self.signature_name

    def status(self) -> dict:
        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec, signature=False)
        response = self._call(self._models.GetModelStatus, request)
        return _to_json(response)

    def metadata(self) -> dict:
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            metadata_field=["signature_def"])
        self._spec(request.model_spec, signature=False)
        response = self._call(self._predictions.GetModelMetadata, request)
        definitions = get_model_metadata_pb2.SignatureDefMap()
        if "signature_def" not in response.metadata or not response.metadata[
            "signature_def"
        ].Unpack(definitions):
            raise ServingError(
                f"The metadata from {self.target} has no SignatureDefMap under "
                f"'signature_def': {sorted(response.metadata)}.")
        spec = _to_json(response.model_spec)
        return {
            "model_spec": {"name": spec.get("name", ""), "signature_name": "",
                           "version": spec.get("version", "")},
            "metadata": {"signature_def": {"signature_def": {
                key: _to_json(definition)
                for key, definition in definitions.signature_def.items()}}},
        }

    def predict(self, inputs: Mapping[str, np.ndarray] | np.ndarray
                ) -> dict[str, np.ndarray]:
        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec)
        if not isinstance(inputs, Mapping):
            inputs = {self._single_input(): inputs}
        for key, value in inputs.items():
            request.inputs[str(key)].CopyFrom(tf.make_tensor_proto(np.asarray(value)))
        response = self._call(self._predictions.Predict, request)
        return {key: tf.make_ndarray(proto) for key, proto in response.outputs.items()}

    def _single_input(self) -> str:
        # REST sends one array bare; the gRPC request needs the input's name.
        signature = self.signature_name or DEFAULT_SIGNATURE
        defs = self.metadata()["metadata"]["signature_def"]["signature_def"]
        if signature not in defs:
            raise ServingError(
                f'Serving signature name: "{signature}" not found in the model\'s '
                f"metadata; it has {sorted(defs)}.")
        names = sorted(defs[signature].get("inputs", {}))
        if len(names) != 1:
            raise ServingError(
                f"Signature '{signature}' has inputs {names}: pass a dict mapping "
                "each input name to an array.")
        return names[0]

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as error:
            code, details = error.code(), error.details() or ""
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise ConnectionError(
                    f"Cannot reach {self.target}: {code.name}: {details}") from None
            status = _HTTP_STATUS.get(code, 500)
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                status = 413 if "larger than max" in details else 503
            raise ServingError(f"{status} ({code.name}) from {self.target}: {details}",
                               status_code=status) from None


def _to_json(message) -> dict:
    # As the REST API writes it: int64 as strings, defaults included.
    return json_format.MessageToDict(
        message, always_print_fields_with_no_presence=True,
        preserving_proto_field_name=True)
