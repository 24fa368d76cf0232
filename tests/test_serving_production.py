"""`kerasmtl serve` in production: metrics, health, access logs, model config
files with version policies and labels (REST and gRPC), config reload.

The models are small `tf.Module`s whose answer says which version ran
(`total = version * sum(features)`), saved once per module; requests go
through Starlette's TestClient and the official gRPC stubs in-process.
"""

import json
import logging
import math
import os
import re
import threading
import warnings
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from kerasmtl import cli
from kerasmtl.serving.grpc_server import create_grpc_server
from kerasmtl.serving.model_config import VersionPolicy, read_model_config
from kerasmtl.serving.model_manager import ModelManager
from kerasmtl.serving.monitoring import LATENCY_BUCKETS_US
from kerasmtl.serving.server import create_app

with warnings.catch_warnings():  # starlette's note about its httpx backend
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

ROW = [1.0] * 8  # sum 8: version N answers 8 * N


@pytest.fixture(autouse=True)
def _seed_and_clear():
    yield  # overrides conftest's clear_session (~1 s each): no Keras model here


class Scaled(tf.Module):
    def __init__(self, version: int):
        super().__init__()
        self.version = tf.constant(float(version))

    @tf.function(input_signature=[tf.TensorSpec([None, 8], tf.float32, name="features")])
    def serve(self, features):
        return {"total": self.version * tf.reduce_sum(features, axis=1)}


def save_versions(base, versions):
    for version in versions:
        module = Scaled(version)
        tf.saved_model.save(module, str(base / str(version)), signatures={
            "serving_default": module.serve.get_concrete_function()})
    return str(base)


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {"a": save_versions(root / "a", [1, 2, 3]), "b": save_versions(root / "b", [1])}


CONFIG = """model_config_list {{
  config {{
    name: "a"
    base_path: "{a}"
    model_platform: "tensorflow"
    model_version_policy {{ specific {{ versions: 1 versions: 3 }} }}
    version_labels {{ key: "stable" value: {stable} }}
    version_labels {{ key: "canary" value: 3 }}
  }}
  config {{
    name: "b"
    base_path: "b"
  }}
}}
"""


def write_config(path, bases, stable=1):
    path.write_text(CONFIG.format(a=bases["a"], stable=stable))
    return path


def predict(client, path, rows=(ROW,)):
    return client.post(f"/v1/models/{path}:predict", json={"instances": list(rows)})


# -- metrics ------------------------------------------------------------------------

_SAMPLE = re.compile(r'^(?P<name>[:a-zA-Z_][:a-zA-Z0-9_]*)\{(?P<labels>[^}]*)\} '
                     r'(?P<value>[0-9.e+-]+)$')


def parse_metrics(text):
    """Prometheus text format -> [(name, {label: value}, float)], strictly."""
    samples = []
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a Prometheus sample line: {line!r}"
        labels = dict(re.findall(r'([a-zA-Z_]+)="((?:[^"\\]|\\.)*)"', match["labels"]))
        samples.append((match["name"], labels, float(match["value"])))
    return samples


def counts(samples, **labels):
    return sum(v for n, ls, v in samples if n == ":tensorflow:serving:request_count"
               and all(ls.get(k) == w for k, w in labels.items()))


def test_metrics_count_requests_by_model_version_and_status(bases):
    app = create_app(bases["a"], "a")
    grpc_server, port = create_grpc_server(app.state.models, port=0,
                                           metrics=app.state.metrics)
    grpc_server.start()
    try:
        with TestClient(app) as client:
            for _ in range(3):
                assert predict(client, "a").status_code == 200
            assert predict(client, "a", [[1.0] * 7]).status_code == 400
            assert predict(client, "nope").status_code == 404
            assert client.get("/v1/models/a").status_code == 200
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                request = predict_pb2.PredictRequest()
                request.model_spec.name = "a"
                request.inputs["features"].CopyFrom(tf.make_tensor_proto(np.array([ROW], "float32")))
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                assert stub.Predict(request, timeout=10).model_spec.version.value == 3
            response = client.get("/monitoring/prometheus/metrics")
    finally:
        grpc_server.stop(None)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = parse_metrics(response.text)
    assert counts(samples, model_name="a", version="3", API="Predict",
                  signature_name="serving_default", entrypoint="REST", status="OK") == 3
    assert counts(samples, model_name="a", API="Predict",
                  status="INVALID_ARGUMENT") == 1
    # An unknown model counts under model_name="": clients cannot add series.
    assert counts(samples, model_name="", API="Predict", status="NOT_FOUND") == 1
    assert counts(samples, model_name="a", API="GetModelStatus", status="OK") == 1
    assert counts(samples, model_name="a", version="3", entrypoint="GRPC",
                  API="Predict", status="OK") == 1
    assert "nope" not in response.text

    histograms = {}
    for name, labels, value in samples:
        if name.startswith(":tensorflow:serving:request_latency"):
            key = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
            histograms.setdefault(key, {})[name.rsplit("_", 1)[-1] + labels.get(
                "le", "")] = value
    rest_predict = histograms[(("API", "Predict"), ("entrypoint", "REST"),
                               ("model_name", "a"), ("version", "3"))]
    assert rest_predict["count"] == 4 and rest_predict["sum"] > 0  # the 400 too
    for series in histograms.values():
        buckets = [series["bucket" + f"{b:.10g}"] for b in LATENCY_BUCKETS_US]
        buckets.append(series["bucket+Inf"])
        assert buckets == sorted(buckets), buckets  # cumulative: never decreasing
        assert buckets[-1] == series["count"]
    assert math.isclose(LATENCY_BUCKETS_US[1] / LATENCY_BUCKETS_US[0], 1.8)


# -- health, access log -------------------------------------------------------------


def test_healthz_is_200_with_a_version_loaded_and_503_without(bases, tmp_path):
    with TestClient(create_app(bases["b"], "b")) as client:
        response = client.get("/healthz")
        assert response.status_code == 200
        assert response.json() == {"status": "ok", "models": {"b": [1]}}
    with TestClient(create_app(tmp_path, "empty")) as client:
        response = client.get("/healthz")
        assert response.status_code == 503
        assert response.json() == {"status": "unavailable", "models": {"empty": []}}


def test_access_log_writes_one_json_line_per_request_when_asked(bases, caplog):
    caplog.set_level(logging.INFO, logger="kerasmtl.serving.access")
    with TestClient(create_app(bases["b"], "b")) as client:
        assert predict(client, "b").status_code == 200
    assert not [r for r in caplog.records if r.name == "kerasmtl.serving.access"]

    with TestClient(create_app(bases["b"], "b", access_log=True)) as client:
        ok = predict(client, "b")
        assert predict(client, "b", [[1.0] * 7]).status_code == 400
    lines = [json.loads(r.getMessage()) for r in caplog.records
             if r.name == "kerasmtl.serving.access"]
    assert len(lines) == 2
    first, second = lines
    assert {k: first[k] for k in ("method", "path", "model", "version", "status",
                                  "api", "signature")} == {
        "method": "POST", "path": "/v1/models/b:predict", "model": "b", "version": "1",
        "status": 200, "api": "Predict", "signature": "serving_default"}
    assert first["bytes"] == len(ok.content) and first["bytes_in"] > 0
    assert 0 < first["latency_ms"] < 60_000
    assert second["status"] == 400 and second["version"] == "1"


# -- model config: several models, version policies, labels ---------------------------


@pytest.fixture(scope="module")
def config_app(bases):
    # "b" is relative: read from the config file's directory.
    path = write_config(Path(bases["a"]).parent / "m.config", bases)
    with TestClient(create_app(model_config_file=path)) as client:
        yield client


def test_config_serves_two_models_with_a_specific_versions_policy(config_app):
    status = config_app.get("/v1/models/a").json()["model_version_status"]
    assert [(s["version"], s["state"]) for s in status] == [("3", "AVAILABLE"),
                                                            ("1", "AVAILABLE")]
    assert predict(config_app, "a").json() == {"predictions": [24.0]}  # newest: 3
    assert predict(config_app, "a/versions/1").json() == {"predictions": [8.0]}
    missing = predict(config_app, "a/versions/2")
    assert missing.status_code == 404
    assert "versions [3, 1] are loaded: this server serves versions [1, 3] only" in (
        missing.json()["error"])
    assert predict(config_app, "b").json() == {"predictions": [8.0]}
    other = predict(config_app, "c")
    assert other.status_code == 404
    assert "This server serves models ['a', 'b']" in other.json()["error"]
    assert config_app.get("/healthz").json()["models"] == {"a": [3, 1], "b": [1]}


def test_labels_over_rest(config_app):
    assert predict(config_app, "a/labels/stable").json() == {"predictions": [8.0]}
    assert predict(config_app, "a/labels/canary").json() == {"predictions": [24.0]}
    metadata = config_app.get("/v1/models/a/labels/stable/metadata").json()
    assert metadata["model_spec"]["version"] == "1"
    status = config_app.get("/v1/models/a/labels/canary").json()
    assert [s["version"] for s in status["model_version_status"]] == ["3"]
    unknown = predict(config_app, "a/labels/beta")
    assert unknown.status_code == 404
    assert unknown.json()["error"] == (
        "Unknown version label 'beta' of model a; its labels are 'canary' (version 3), "
        "'stable' (version 1).")
    assert predict(config_app, "b/labels/stable").status_code == 404


def test_labels_over_grpc(config_app):
    models = config_app.app.state.models
    server, port = create_grpc_server(models, port=0)
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            for label, version in (("stable", 1), ("canary", 3)):
                request = predict_pb2.PredictRequest()
                request.model_spec.name = "a"
                request.model_spec.version_label = label
                request.inputs["features"].CopyFrom(tf.make_tensor_proto(np.array([ROW], "float32")))
                response = stub.Predict(request, timeout=10)
                assert response.model_spec.version.value == version
                assert tf.make_ndarray(response.outputs["total"]).tolist() == [8.0 * version]
            request.model_spec.version_label = "beta"
            with pytest.raises(grpc.RpcError) as raised:
                stub.Predict(request, timeout=10)
            assert raised.value.code() == grpc.StatusCode.NOT_FOUND
            assert "its labels are 'canary' (version 3)" in raised.value.details()
            status_request = get_model_status_pb2.GetModelStatusRequest()
            status_request.model_spec.name = "a"
            status_request.model_spec.version_label = "stable"
            status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
                status_request, timeout=10)
            assert [s.version for s in status.model_version_status] == [1]
    finally:
        server.stop(None)


def test_label_moves_from_v1_to_v2_when_the_config_is_rewritten(bases, tmp_path):
    config = write_config(tmp_path / "m.config", {**bases, "b": None}, stable=1)
    config.write_text(config.read_text().replace('base_path: "b"',
                                                 f'base_path: "{bases["b"]}"'))
    app = create_app(model_config_file=config)
    models = app.state.models
    manager = models.managers["a"]
    failures, stop = [], threading.Event()

    def ask_stable():  # a client under load: every request must be answered
        while not stop.is_set():
            try:
                manager.get(label="stable")
            except Exception as error:  # noqa: BLE001 (recorded, then asserted)
                failures.append(error)
            stop.wait(0.001)

    with TestClient(app) as client:
        assert predict(client, "a/labels/stable").json() == {"predictions": [8.0]}
        thread = threading.Thread(target=ask_stable)
        thread.start()
        try:
            # Version 2 joins the policy and takes the label.
            text = config.read_text().replace("versions: 1 versions: 3",
                                              "versions: 1 versions: 2 versions: 3")
            config.write_text(text.replace('key: "stable" value: 1',
                                           'key: "stable" value: 2'))
            stamp = os.stat(config).st_mtime_ns + 10**9
            os.utime(config, ns=(stamp, stamp))  # a changed stamp, however coarse
            assert models.reload_if_changed()
        finally:
            stop.set()
            thread.join(10)
        assert not failures, failures[:3]
        assert predict(client, "a/labels/stable").json() == {"predictions": [16.0]}
        assert manager.served_versions() == [3, 2, 1]

        # A broken file is logged and the running config kept.
        config.write_text("model_config_list { config { name: }")
        os.utime(config, ns=(stamp + 10**9, stamp + 10**9))
        assert not models.reload_if_changed()
        assert predict(client, "a/labels/stable").json() == {"predictions": [16.0]}


# -- config errors --------------------------------------------------------------------


@pytest.mark.parametrize("text, message", [
    ("model_config_list {\n  config {\n    nam: \"a\"\n  }\n}",
     r"m\.config:3: Message type \"tensorflow\.serving\.ModelConfig\" has no field "
     r"named \"nam\""),
    ("model_config_list {}", r"m\.config:1: model_config_list has no config"),
    ('model_config_list {\n config { name: "a" base_path: "A" }\n'
     ' config { name: "a" base_path: "A" }\n}',
     r"m\.config:3: model config #2 'a': the name is used twice \(first at line 2\)"),
    ('model_config_list {\n config {\n  base_path: "A" }\n}',
     r"m\.config:2: model config #1 has no name"),
    ('model_config_list { config { name: "a" base_path: "nowhere" } }',
     r"model config #1 'a': base_path '.*nowhere' is not a directory"),
    ('model_config_list { config { name: "a" base_path: "A" model_platform: "onnx" } }',
     r"model_platform \"onnx\" is not served"),
    ('model_config_list { config { name: "a" base_path: "A"\n'
     '  model_version_policy { specific { versions: 1 } }\n'
     '  version_labels { key: "stable" value: 2 } } }',
     r"version label 'stable' names version 2, which the version policy does not "
     r"serve \(it serves versions \[1\] only\)"),
])
def test_bad_config_files_name_the_file_line_and_problem(tmp_path, text, message):
    (tmp_path / "A").mkdir()
    (tmp_path / "m.config").write_text(text)
    with pytest.raises(ValueError, match=message):
        read_model_config(tmp_path / "m.config")


def test_create_app_takes_a_base_path_or_a_config_not_both(bases, tmp_path):
    with pytest.raises(ValueError, match="either `base_path` and `name` or"):
        create_app(bases["b"], "b", model_config_file=tmp_path / "m.config")
    with pytest.raises(ValueError, match="Pass the model's `base_path` and `name`"):
        create_app()


# -- version policies (a fake loader: no TensorFlow) ------------------------------------


class FakeLoaded:
    def __init__(self, path, version):
        self.version = version


@pytest.mark.parametrize("policy, served", [
    (VersionPolicy(), [4]),
    (VersionPolicy("latest", num_versions=2), [4, 2]),  # 3 fails: the next one
    (VersionPolicy("all"), [4, 2, 1]),
    (VersionPolicy("specific", versions=(1, 3)), [1]),
])
def test_version_policies(tmp_path, policy, served):
    for version in (1, 2, 3, 4):
        (tmp_path / str(version)).mkdir()

    def loader(path, version):
        if version == 3:
            raise ValueError("broken")
        return FakeLoaded(path, version)

    manager = ModelManager(tmp_path, "m", loader=loader, policy=policy)
    manager.poll()
    assert manager.served_versions() == served
    manager.configure(VersionPolicy(), {"stable": 4})
    assert manager.served_versions() == [4]
    assert manager.get(label="stable").version == 4


# -- command line ---------------------------------------------------------------------


def test_cli_model_config_file_and_access_log(monkeypatch, tmp_path, capsys):
    calls = []
    monkeypatch.setattr(cli, "serve", lambda *a, **k: calls.append((a, k)))
    assert cli.main(["serve", "--model-config-file", "m.config", "--access-log"]) == 0
    assert calls[0][0] == (None, None)
    assert calls[0][1]["model_config_file"] == "m.config"
    assert calls[0][1]["access_log"] is True
    assert cli.main(["serve", str(tmp_path), "--name", "m",
                     "--model-config-file", "m.config"]) == 2
    assert "not both" in capsys.readouterr().err
    assert cli.main(["serve", str(tmp_path)]) == 2
    assert "Give the model's BASE_PATH and --name NAME" in capsys.readouterr().err
