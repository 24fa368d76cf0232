"""`kerasmtl serve --grpc-port`: TF Serving's gRPC API, called with the official
`tensorflow-serving-api` stubs.

The gRPC server runs in-process on a free loopback port, on the REST app's own
model manager; every output is compared with a direct call of the loaded
SavedModel's signature and with the REST answer (Starlette's TestClient).
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings

import grpc
import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

import kerasmtl as mtl
from kerasmtl import cli
from kerasmtl.export import export_saved_model
from kerasmtl.serving import Client, ServingError
from kerasmtl.serving.grpc_server import create_grpc_server
from kerasmtl.serving.server import create_app

with warnings.catch_warnings():  # starlette's note about its httpx backend
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

RNG = np.random.default_rng(0)
FEATURES = RNG.normal(size=(5, 8)).astype("float32")
OUTPUTS = ["size", "size_prediction", "species", "species_prediction"]


@pytest.fixture(autouse=True)
def _seed_and_clear():
    # Overrides conftest's clear_session() after every test (a full garbage
    # collection with SavedModels loaded, ~0.7 s). Models are built in fixtures.
    keras.utils.set_random_seed(0)
    yield


class Echo(tf.Module):
    """A plain SavedModel with string and int inputs."""

    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.string, name="text"),
        tf.TensorSpec([None], tf.int32, name="count"),
    ])
    def serve(self, text, count):
        return {"shout": tf.strings.upper(text), "double": count * 2}


@pytest.fixture(scope="module")
def tabular(tmp_path_factory):
    tasks = [mtl.tasks.Classification("species", num_classes=3),
             mtl.tasks.Regression("size")]
    x = keras.Input((8,), name="features")
    model = mtl.sharing.hard_sharing(x, keras.layers.Dense(8, "relu")(x), tasks)
    base = tmp_path_factory.mktemp("tabular")
    version_dir = export_saved_model(model, base)
    return str(base), tf.saved_model.load(version_dir).signatures["serving_default"]


def start(app, **kwargs):
    server, port = create_grpc_server(app.state.manager, port=0, **kwargs)
    server.start()
    return server, grpc.insecure_channel(f"127.0.0.1:{port}"), port


@pytest.fixture(scope="module")
def served(tabular):
    app = create_app(tabular[0], "tab")
    server, channel, port = start(app)
    try:
        yield app, channel, port
    finally:
        channel.close()
        server.stop(grace=None).wait(10)


@pytest.fixture(scope="module")
def stub(served):
    return prediction_service_pb2_grpc.PredictionServiceStub(served[1])


@pytest.fixture(scope="module")
def model_stub(served):
    return model_service_pb2_grpc.ModelServiceStub(served[1])


def predict_request(inputs, name="tab", version=None, signature="", output_filter=()):
    request = predict_pb2.PredictRequest(output_filter=list(output_filter))
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    for key, value in inputs.items():
        proto = value if isinstance(value, tensor_pb2.TensorProto) else (
            tf.make_tensor_proto(value))
        request.inputs[key].CopyFrom(proto)
    return request


def outputs_of(response):
    return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}


def direct(signature, **inputs):
    return {k: v.numpy() for k, v in signature(**{
        k: tf.constant(v) for k, v in inputs.items()}).items()}


def rpc_error(call, request):
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=10)
    return info.value.code(), info.value.details()


# -- answers ---------------------------------------------------------------------


def test_predict_matches_direct_call_and_rest(tabular, served, stub):
    expected = direct(tabular[1], features=FEATURES)
    response = stub.Predict(predict_request({"features": FEATURES}), timeout=10)
    assert response.model_spec.name == "tab"
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    got = outputs_of(response)
    assert sorted(got) == OUTPUTS
    rest = TestClient(served[0]).post(
        "/v1/models/tab:predict", json={"inputs": {"features": FEATURES.tolist()}})
    assert rest.status_code == 200, rest.text
    for name in OUTPUTS:
        assert got[name].dtype == expected[name].dtype, name
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-6, err_msg=name)
        np.testing.assert_allclose(got[name], np.asarray(rest.json()["outputs"][name]),
                                   rtol=1e-6, err_msg=name)


def test_output_filter_returns_only_the_named_outputs(tabular, stub):
    response = stub.Predict(predict_request(
        {"features": FEATURES}, output_filter=["species_prediction"]), timeout=10)
    assert list(response.outputs) == ["species_prediction"]
    np.testing.assert_array_equal(
        outputs_of(response)["species_prediction"],
        direct(tabular[1], features=FEATURES)["species_prediction"])


def test_metadata_and_status_are_those_of_rest(served, stub, model_stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest(
        metadata_field=["signature_def"])
    request.model_spec.name = "tab"
    response = stub.GetModelMetadata(request, timeout=10)
    assert response.model_spec.name == "tab" and response.model_spec.version.value == 1
    definitions = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(definitions)
    signature = definitions.signature_def["serving_default"]
    assert signature.method_name == "tensorflow/serving/predict"
    features = signature.inputs["features"]
    assert features.dtype == tf.float32.as_datatype_enum
    assert [d.size for d in features.tensor_shape.dim] == [-1, 8]
    assert sorted(signature.outputs) == OUTPUTS

    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = "tab"
    status = model_stub.GetModelStatus(status_request, timeout=10)
    [version] = status.model_version_status
    assert version.version == 1
    assert version.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE

    # The gRPC client gives the REST API's JSON for both.
    rest = TestClient(served[0])
    client = Client(f"127.0.0.1:{served[2]}", "tab", protocol="grpc", timeout=10)
    try:
        assert client.metadata() == rest.get("/v1/models/tab/metadata").json()
        assert client.status() == rest.get("/v1/models/tab").json() == {
            "model_version_status": [{"version": "1", "state": "AVAILABLE",
                                      "status": {"error_code": "OK", "error_message": ""}}]}
    finally:
        client.close()


def test_grpc_client_predicts_like_the_direct_call(tabular, served):
    expected = direct(tabular[1], features=FEATURES)
    client = Client(f"127.0.0.1:{served[2]}", "tab", protocol="grpc", timeout=10)
    try:
        for inputs in ({"features": FEATURES}, FEATURES):  # dict, or one array
            got = client.predict(inputs)
            assert sorted(got) == OUTPUTS
            for name in OUTPUTS:
                assert got[name].dtype == expected[name].dtype, name
                np.testing.assert_allclose(got[name], expected[name], rtol=1e-6)
        with pytest.raises(ServingError, match=r"^400 \(INVALID_ARGUMENT\) .*shape "
                           r"\(5, 3\)") as info:
            client.predict(FEATURES[:, :3])
        assert info.value.status_code == 400
    finally:
        client.close()
    with pytest.raises(ServingError, match=r"^404 \(NOT_FOUND\) .*Specific\(tab, 7\)"):
        Client(f"127.0.0.1:{served[2]}", "tab", version=7, protocol="grpc").predict(
            FEATURES)
    with pytest.raises(ConnectionError, match="Cannot reach 127.0.0.1:1"):
        Client("127.0.0.1:1", "tab", protocol="grpc", timeout=5).status()
    with pytest.raises(ValueError, match="protocol='grpc', expected 'host:port'"):
        Client("http://127.0.0.1:8500", "tab", protocol="grpc")
    with pytest.raises(ValueError, match="Expected 'rest' or 'grpc'"):
        Client("127.0.0.1:8500", "tab", protocol="grcp")


def test_strings_and_ints(tmp_path):
    module = Echo()
    tf.saved_model.save(module, str(tmp_path / "1"),
                        signatures=module.serve.get_concrete_function())
    app = create_app(str(tmp_path), "echo")
    server, channel, _ = start(app)
    try:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        text = np.array([b"ab", b"\x00\xff", "é".encode()], dtype=object)
        count = np.array([1, -2, 3], "int32")
        got = outputs_of(stub.Predict(predict_request({"text": text, "count": count},
                                                      name="echo"), timeout=10))
        assert got["shout"].tolist() == [b"AB", b"\x00\xff", "é".encode()]
        assert got["double"].dtype == np.int32 and got["double"].tolist() == [2, -4, 6]
        code, details = rpc_error(stub.Predict, predict_request(
            {"text": text, "count": count.astype("int64")}, name="echo"))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert "Input 'count' of model 'echo' expects DT_INT32; the request's " \
            "TensorProto has DT_INT64" in details
    finally:
        channel.close()
        server.stop(grace=None).wait(10)


# -- errors -----------------------------------------------------------------------


def _one_value_for_a_huge_shape():
    proto = tf.make_tensor_proto(np.float32(0.5))
    proto.tensor_shape.Clear()
    for size in (10**9, 8):
        proto.tensor_shape.dim.add(size=size)
    return proto


BAD_PREDICTS = [
    (dict(name="nope"), grpc.StatusCode.NOT_FOUND,
     r"Servable not found for request: Latest\(nope\)\. This server serves model 'tab'"),
    (dict(version=7), grpc.StatusCode.NOT_FOUND,
     r"Specific\(tab, 7\).*version 1 is the only one loaded"),
    (dict(name=""), grpc.StatusCode.INVALID_ARGUMENT, r"Missing model_spec\.name"),
    (dict(inputs={"feature": FEATURES}), grpc.StatusCode.INVALID_ARGUMENT,
     r"model 'tab' is missing input\(s\) \['features'\] and has unknown input\(s\) "
     r"\['feature'\]"),
    (dict(inputs={"features": FEATURES.astype("float64")}),
     grpc.StatusCode.INVALID_ARGUMENT,
     r"Input 'features' of model 'tab' expects DT_FLOAT; the request's TensorProto "
     r"has DT_DOUBLE"),
    (dict(inputs={"features": FEATURES[0]}), grpc.StatusCode.INVALID_ARGUMENT,
     r"Input 'features' of model 'tab' has shape \(8,\) \(rank 1, expected rank 2\); "
     r"the signature expects \(-1, 8\)"),
    (dict(inputs={"features": FEATURES[:, :3]}), grpc.StatusCode.INVALID_ARGUMENT,
     r"has shape \(5, 3\) \(a size differs\)"),
    (dict(inputs={"features": np.zeros((0, 8), "float32")}),
     grpc.StatusCode.INVALID_ARGUMENT, r"Empty batch: input 'features'"),
    (dict(inputs={"features": _one_value_for_a_huge_shape()}),
     grpc.StatusCode.INVALID_ARGUMENT,
     r"would take 32000000000 bytes decoded \('features': \(1000000000, 8\)\), more "
     r"than the limit of 33554432 bytes"),
    (dict(signature="nope"), grpc.StatusCode.INVALID_ARGUMENT,
     r'signature name: "nope" not found.*\[\'serving_default\'\]'),
    (dict(output_filter=["species", "bogus"]), grpc.StatusCode.INVALID_ARGUMENT,
     r"output_filter .* names unknown output\(s\) \['bogus'\]; signature "
     r"'serving_default' has outputs"),
    # Labels come with a --model-config-file (tests/test_serving_production.py).
    (dict(label="stable"), grpc.StatusCode.NOT_FOUND,
     r"Unknown version label 'stable' of model tab; it has no version labels"),
]


@pytest.mark.parametrize("change, code, message", BAD_PREDICTS)
def test_bad_predicts_get_tf_serving_codes_and_the_server_stays_up(
        stub, change, code, message):
    request = predict_request(change.get("inputs", {"features": FEATURES}),
                              name=change.get("name", "tab"),
                              version=change.get("version"),
                              signature=change.get("signature", ""),
                              output_filter=change.get("output_filter", ()))
    if "label" in change:
        request.model_spec.version_label = change["label"]
    got_code, details = rpc_error(stub.Predict, request)
    assert got_code == code, details
    assert re.search(message, details), details
    assert len(stub.Predict(predict_request({"features": FEATURES[:1]}),
                            timeout=10).outputs) == 4


def test_bad_metadata_and_status_requests(stub, model_stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["x"])
    request.model_spec.name = "tab"
    code, details = rpc_error(stub.GetModelMetadata, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "metadata_field is ['x']; the only metadata served is ['signature_def']" \
        in details
    request = get_model_metadata_pb2.GetModelMetadataRequest(
        metadata_field=["signature_def"])
    request.model_spec.name = "other"
    assert rpc_error(stub.GetModelMetadata, request)[0] == grpc.StatusCode.NOT_FOUND
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "tab"
    status.model_spec.version.value = 3
    code, details = rpc_error(model_stub.GetModelStatus, status)
    assert code == grpc.StatusCode.NOT_FOUND
    assert details == "Could not find version 3 of model tab"
    code, details = rpc_error(stub.MultiInference, predict_pb2.PredictRequest())
    assert code == grpc.StatusCode.UNIMPLEMENTED and "call Classify or Regress" in details


def test_message_over_the_limit_is_refused(served):
    server, channel, _ = start(served[0], max_message_bytes=1024)
    try:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        big = RNG.normal(size=(64, 8)).astype("float32")  # 2 KiB of values
        code, details = rpc_error(stub.Predict, predict_request({"features": big}))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "larger than max" in details
        assert len(stub.Predict(predict_request({"features": big[:2]}),
                                timeout=10).outputs) == 4
    finally:
        channel.close()
        server.stop(grace=None).wait(10)


def test_concurrent_clients_get_their_own_answers(tabular, stub):
    # 8 threads x 20 requests, each thread with its own rows: a mix-up
    # between concurrent requests shows as a wrong answer.
    rows = [RNG.normal(size=(1 + t % 3, 8)).astype("float32") for t in range(8)]
    expected = [direct(tabular[1], features=x) for x in rows]
    errors = []

    def worker(t):
        for _ in range(20):
            try:
                got = outputs_of(stub.Predict(predict_request({"features": rows[t]}),
                                              timeout=30))
            except grpc.RpcError as error:
                errors.append(f"thread {t}: {error.code()} {error.details()}")
                continue
            for name in OUTPUTS:
                if not np.allclose(got[name], expected[t][name], rtol=1e-6):
                    errors.append(f"thread {t}: {name} differs")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_new_version_is_served_over_grpc(tabular, tmp_path):
    shutil.copytree(os.path.join(tabular[0], "1"), tmp_path / "1")
    app = create_app(str(tmp_path), "tab")
    server, channel, _ = start(app)
    try:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        shutil.copytree(tmp_path / "1", tmp_path / "2")
        app.state.manager.poll()  # what the watcher does every --poll-seconds
        response = stub.Predict(predict_request({"features": FEATURES}), timeout=10)
        assert response.model_spec.version.value == 2
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "tab"
        status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
            request, timeout=10)
        states = get_model_status_pb2.ModelVersionStatus
        assert [(s.version, s.state) for s in status.model_version_status] == [
            (2, states.AVAILABLE), (1, states.END)]
    finally:
        channel.close()
        server.stop(grace=None).wait(10)


def test_port_in_use_and_bad_arguments(served):
    with pytest.raises(OSError, match=r"Cannot bind the gRPC server to "
                       r"127\.0\.0\.1:\d+.*--grpc-port"):
        create_grpc_server(served[0].state.manager, port=served[2])
    with pytest.raises(ValueError, match="Received: max_workers=0"):
        create_grpc_server(served[0].state.manager, port=0, max_workers=0)


# -- command line -------------------------------------------------------------------


def test_cli_serve_grpc_port(monkeypatch, tmp_path, capsys):
    calls = []
    monkeypatch.setattr(cli, "serve", lambda *a, **k: calls.append((a, k)))
    assert cli.main(["serve", str(tmp_path), "--name", "m", "--grpc-port", "8500"]) == 0
    assert calls[0][1]["grpc_port"] == 8500 and calls[0][1]["port"] == 8501
    assert cli.main(["serve", str(tmp_path), "--name", "m"]) == 0
    assert "grpc_port" not in calls[1][1]  # REST only: server.serve's arguments
    assert cli.main(["serve", str(tmp_path), "--name", "m", "--grpc-port", "0"]) == 2
    assert "--grpc-port 0 is not a TCP port" in capsys.readouterr().err


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.large  # `kerasmtl serve` in a subprocess: TensorFlow starts (~15 s)
def test_kerasmtl_serve_runs_rest_and_grpc_in_one_process(tabular):
    port, grpc_port = _free_port(), _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "kerasmtl", "serve", tabular[0], "--name", "tab",
         "--port", str(port), "--grpc-port", str(grpc_port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        rest = Client(f"http://127.0.0.1:{port}", "tab", timeout=5)
        deadline = time.monotonic() + 120
        while True:
            try:
                rest.status()
                break
            except ConnectionError:
                assert process.poll() is None, process.stderr.read().decode()[-3000:]
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.5)
        over_grpc = Client(f"127.0.0.1:{grpc_port}", "tab", protocol="grpc")
        expected = rest.predict(FEATURES)
        got = over_grpc.predict(FEATURES)
        for name in OUTPUTS:
            np.testing.assert_allclose(got[name], expected[name], rtol=1e-6)
        assert over_grpc.status() == rest.status()
        over_grpc.close()
    finally:
        process.send_signal(signal.SIGINT)
        # uvicorn shuts down, then re-raises the SIGINT it caught (as REST alone).
        assert process.wait(30) in (0, -signal.SIGINT)
