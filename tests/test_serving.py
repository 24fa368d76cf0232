"""`kerasmtl serve`: TF Serving's REST API over exported SavedModels.

End-to-end tests run the real server (uvicorn, in a thread, on a free loopback
port) and compare every output with a direct call of the loaded SavedModel's
signature; the many bad-input cases use Starlette's TestClient on the same app.
"""

import base64
import http.client
import inspect
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import httpx
import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasmtl as mtl
from harness import running_server
from kerasmtl import cli
from kerasmtl.export import export_saved_model
from kerasmtl.serving import codec
from kerasmtl.serving.client import Client
from kerasmtl.serving.errors import ServingError
from kerasmtl.serving.server import create_app, serve

with warnings.catch_warnings():  # starlette's note about its httpx backend
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

RNG = np.random.default_rng(0)
FEATURES = RNG.normal(size=(5, 8)).astype("float32")
TOKENS = np.array([["a", "b", "c"], ["c", "zz", ""], ["b", "b", "a"]])
OUTPUTS = ["size", "size_prediction", "species", "species_prediction", "tags",
           "tags_prediction"]


@pytest.fixture(autouse=True)
def _seed_and_clear():
    # Overrides conftest's: its keras clear_session() after every test costs
    # ~0.7 s here (a full garbage collection with SavedModels loaded), times
    # the many request cases. Models are built only in fixtures.
    keras.utils.set_random_seed(0)
    yield


# -- models (exported once per module) --------------------------------------


def tabular_model(units: int = 8) -> mtl.MultiTaskModel:
    tasks = [
        mtl.tasks.Classification("species", num_classes=3),
        mtl.tasks.Regression("size"),
        mtl.tasks.MultiLabel("tags", num_labels=4),
    ]
    x = keras.Input((8,), name="features")
    return mtl.sharing.hard_sharing(x, keras.layers.Dense(units, "relu")(x), tasks)


def token_model() -> mtl.MultiTaskModel:
    tokens = keras.Input((None,), dtype="string", name="tokens")
    ids = keras.layers.StringLookup(vocabulary=["a", "b", "c"], mask_token="")(tokens)
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(5, 4)(ids))
    tasks = [mtl.tasks.Classification("topic", 2), mtl.tasks.MultiLabel("labels", 3)]
    return mtl.sharing.hard_sharing(tokens, pooled, tasks)


class Echo(tf.Module):
    """A plain SavedModel with string and int inputs and a `_bytes` output."""

    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.string, name="text"),
        tf.TensorSpec([None], tf.int32, name="count"),
    ])
    def serve(self, text, count):
        return {"shout": tf.strings.upper(text), "echo_bytes": text, "double": count * 2}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def lengths(self, text):
        return {"length": tf.strings.length(text)}


@pytest.fixture(scope="module")
def tabular(tmp_path_factory):
    base = tmp_path_factory.mktemp("tabular")
    version_dir = export_saved_model(tabular_model(), base)
    return str(base), tf.saved_model.load(version_dir).signatures["serving_default"]


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    base = tmp_path_factory.mktemp("tokens")
    version_dir = export_saved_model(token_model(), base)
    return str(base), tf.saved_model.load(version_dir).signatures["serving_default"]


@pytest.fixture(scope="module")
def echo(tmp_path_factory):
    base = tmp_path_factory.mktemp("echo")
    module = Echo()
    tf.saved_model.save(module, str(base / "1"), signatures={
        "serving_default": module.serve.get_concrete_function(),
        "lengths": module.lengths.get_concrete_function(),
    })
    return str(base)


def direct(signature, **inputs) -> dict:
    return {k: v.numpy() for k, v in signature(**{
        k: tf.constant(v) for k, v in inputs.items()}).items()}


@pytest.fixture(scope="module")
def tabular_url(tabular):
    with running_server(create_app(tabular[0], "tab")) as url:
        yield url


def wait_for(condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# -- end to end, over a real socket ------------------------------------------


def test_row_format_over_http_matches_direct_call(tabular, tabular_url):
    expected = direct(tabular[1], features=FEATURES)
    response = httpx.post(f"{tabular_url}/v1/models/tab:predict",
                          json={"instances": FEATURES.tolist()})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    predictions = response.json()["predictions"]
    assert len(predictions) == len(FEATURES)
    assert all(sorted(row) == OUTPUTS for row in predictions)
    for name in OUTPUTS:
        got = np.array([row[name] for row in predictions], expected[name].dtype)
        np.testing.assert_array_equal(got, expected[name], err_msg=name)


def test_client_columnar_status_and_metadata(tabular, tabular_url):
    client = Client(tabular_url, "tab", timeout=10)
    expected = direct(tabular[1], features=FEATURES)
    for inputs in ({"features": FEATURES}, FEATURES):  # dict, or one array
        got = client.predict(inputs)
        assert sorted(got) == OUTPUTS
        for name in OUTPUTS:
            assert got[name].dtype == expected[name].dtype, name
            np.testing.assert_array_equal(got[name], expected[name], err_msg=name)

    assert client.status() == {"model_version_status": [{
        "version": "1", "state": "AVAILABLE",
        "status": {"error_code": "OK", "error_message": ""}}]}
    assert Client(tabular_url, "tab", version=1).status() == client.status()
    metadata = client.metadata()
    assert metadata["model_spec"] == {"name": "tab", "signature_name": "", "version": "1"}
    signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    features = signature["inputs"]["features"]
    assert features["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in features["tensor_shape"]["dim"]] == ["-1", "8"]
    assert signature["outputs"]["species_prediction"]["dtype"] == "DT_INT32"
    assert [d["size"] for d in signature["outputs"]["tags"]["tensor_shape"]["dim"]] == [
        "-1", "4"]

    with pytest.raises(ServingError, match=r"404 .*Specific\(tab, 7\)") as info:
        Client(tabular_url, "tab", version=7).predict(FEATURES)
    assert info.value.status_code == 404
    with pytest.raises(ServingError, match=r"Input 'features' has shape \(5, 3\)"):
        client.predict(FEATURES[:, :3])


def test_concurrent_clients_get_their_own_answers(tabular, tabular_url):
    # 8 threads x 100 requests, each thread with its own rows: any mix-up
    # between concurrent requests shows as a wrong answer.
    rows = [RNG.normal(size=(1 + t % 3, 8)).astype("float32") for t in range(8)]
    expected = [direct(tabular[1], features=x) for x in rows]
    errors = []

    def worker(t):
        with httpx.Client(base_url=tabular_url, timeout=30) as session:
            for _ in range(100):
                r = session.post("/v1/models/tab:predict",
                              json={"inputs": {"features": rows[t].tolist()}})
                if r.status_code != 200:
                    errors.append(r.text)
                    continue
                out = r.json()["outputs"]
                for name in ("species", "tags_prediction", "size"):
                    got = np.asarray(out[name], expected[t][name].dtype)
                    if not np.array_equal(got, expected[t][name]):
                        errors.append(f"thread {t}: {name} differs")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_string_tokens_row_columnar_and_b64(tokens):
    base, signature = tokens
    expected = direct(signature, tokens=TOKENS)
    with running_server(create_app(base, "tok")) as url:
        row = httpx.post(f"{url}/v1/models/tok:predict",
                         json={"instances": TOKENS.tolist()}).json()["predictions"]
        b64 = [[{"b64": base64.b64encode(t.encode()).decode()} for t in r] for r in TOKENS]
        columnar = httpx.post(f"{url}/v1/models/tok:predict",
                              json={"inputs": {"tokens": b64}}).json()["outputs"]
        client = Client(url, "tok").predict({"tokens": TOKENS})
        as_bytes = Client(url, "tok").predict(np.char.encode(TOKENS))
    for name, want in expected.items():
        np.testing.assert_array_equal(np.array([r[name] for r in row], want.dtype), want)
        np.testing.assert_array_equal(np.asarray(columnar[name], want.dtype), want)
        np.testing.assert_array_equal(client[name], want)
        np.testing.assert_array_equal(as_bytes[name], want)


def test_binary_strings_several_inputs_and_signatures(echo):
    text = ["hi", "\u00e9t\u00e9", "x"]
    binary = b"\x00\xff\xfe"
    with TestClient(create_app(echo, "echo")) as client:
        out = client.post("/v1/models/echo:predict", json={"instances": [
            {"text": t, "count": i} for i, t in enumerate(text)]}).json()["predictions"]
        assert out == [
            {"double": 2 * i, "echo_bytes": {"b64": base64.b64encode(t.encode()).decode()},
             "shout": t.encode().upper().decode()}  # ASCII-only, as TensorFlow's
            for i, t in enumerate(text)]
        # Binary input as {"b64": ...}; a non-UTF-8 string output goes out as b64.
        answer = client.post("/v1/models/echo:predict", json={"inputs": {
            "text": [{"b64": base64.b64encode(binary).decode()}], "count": [1]}}).json()
        assert answer["outputs"]["echo_bytes"] == [{"b64": "AP/+"}]
        assert answer["outputs"]["shout"] == [{"b64": "AP/+"}]
        lengths = client.post("/v1/models/echo:predict", json={
            "signature_name": "lengths", "instances": text}).json()
        assert lengths == {"predictions": [2, 5, 1]}  # bytes, not characters

    with running_server(create_app(echo, "echo")) as url:
        got = Client(url, "echo").predict({"text": np.array([b"a", binary], object),
                                           "count": np.array([3, 4], "int32")})
        assert got["echo_bytes"].tolist() == [b"a", binary]
        assert got["double"].dtype == np.int32 and got["double"].tolist() == [6, 8]
        single = Client(url, "echo", signature_name="lengths").predict(np.array(["abc"]))
        assert list(single) == ["length"] and single["length"].tolist() == [3]


# -- bad requests: 4xx with a clear message, and the server keeps serving ----


@pytest.fixture(scope="module")
def app_client(tabular):
    with TestClient(create_app(tabular[0], "tab", max_body_bytes=20_000)) as client:
        yield client


ROW = [0.0] * 8


@pytest.mark.parametrize("body, status, message", [
    (b"{not json", 400, r"JSON Parse error: Expecting property name"),
    (b"", 400, r"JSON Parse error: The document is empty"),
    (b"[1, 2]", 400, r"Is not object"),
    ({"instances": [ROW], "inputs": [ROW]}, 400, r"both 'instances' and 'inputs'"),
    ({"rows": [ROW]}, 400, r"Missing 'inputs' or 'instances' key"),
    ({"instances": []}, 400, r"Empty batch: the 'instances' list has no values"),
    ({"inputs": []}, 400, r"Empty batch: input 'features' has no rows"),
    ({"instances": ROW}, 400,
     r"Input 'features' has shape \(8,\) with one row per instance \(rank 1, "
     r"expected rank 2\); the signature expects \(-1, 8\)"),
    ({"instances": [[0.0] * 7]}, 400,
     r"Input 'features' has shape \(1, 7\) .*\(a size differs\); the signature "
     r"expects \(-1, 8\)"),
    ({"inputs": {"features": [[[0.0] * 8]]}}, 400,
     r"shape \(1, 1, 8\) \(rank 3, expected rank 2\)"),
    ({"instances": [ROW, [0.0] * 7]}, 400,
     r"Input 'features' is ragged: element \[1\] has 7 entries where the first "
     r"list at that depth has 8"),
    ({"instances": [ROW, 1.0]}, 400, r"ragged: element \[1\] is a number where a list"),
    ({"instances": [["a"] * 8]}, 400,
     r"Input 'features' expects DT_FLOAT values \(a number\); element \[0\]\[0\] is "
     r'a string "a"'),
    ({"instances": [[1.0] * 7 + [True]]}, 400, r"element \[0\]\[7\] is a boolean true"),
    ({"instances": [[1.0] * 7 + [None]]}, 400, r"element \[0\]\[7\] is null"),
    ({"instances": [[1.0] * 7 + [{"b64": "AA=="}]]}, 400, r'is a \{"b64": ...\} object'),
    ({"instances": [[1e39] * 8]}, 400, r"Cannot convert JSON value 1e\+39 .* without "
     r"loss of precision"),
    ({"instances": [{"features": ROW, "extra": 1}]}, 400,
     r"Instance 0 has unknown input\(s\) \['extra'\]; the signature's inputs are "
     r"\['features'\]"),
    ({"inputs": {"feature": [ROW]}}, 400,
     r"'inputs' object is missing input\(s\) \['features'\] and has unknown input\(s\) "
     r"\['feature'\]"),
    ({"instances": [ROW], "signature_name": "nope"}, 400,
     r'Serving signature name: "nope" not found .* has \[\'serving_default\'\]'),
    ({"instances": [ROW], "signature_name": 3}, 400, r"'signature_name' must be a string"),
    ({"instances": [[0.0] * 8] * 600}, 413, r"exceeds the limit of 20000 bytes"),
])
def test_bad_predict_requests(app_client, body, status, message):
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    response = app_client.post("/v1/models/tab:predict", **kwargs)
    assert response.status_code == status, response.text[:500]
    assert set(response.json()) == {"error"}  # TF Serving's error body
    assert re.search(message, response.json()["error"]), response.json()["error"]
    ok = app_client.post("/v1/models/tab:predict", json={"instances": [ROW]})
    assert ok.status_code == 200  # still serving


@pytest.mark.parametrize("method, path, status, message", [
    ("POST", "/v1/models/other:predict", 404,
     r"Servable not found for request: Latest\(other\)\. This server serves model 'tab'"),
    ("POST", "/v1/models/tab/versions/2:predict", 404,
     r"Specific\(tab, 2\) \(version 1 is the only one loaded"),
    ("GET", "/v1/models/tab/versions/2", 404, r"Could not find version 2 of model tab"),
    ("GET", "/v1/models/tab/versions/2/metadata", 404, r"Specific\(tab, 2\)"),
    ("GET", "/v1/models/other", 404, r"Could not find any versions of model other"),
    ("GET", "/v1/models/%2E%2E", 400, r"Invalid model name '\.\.'"),
    ("POST", "/v1/models/%2E%2E:predict", 400, r"Invalid model name '\.\.'"),
    ("POST", "/v1/models/..%2F..%2Fetc:predict", 400, r"Malformed request: POST /v1/models/\.\./\.\./etc:predict"),
    ("POST", "/v1/models/tab%2F1:predict", 400, r"Malformed request"),
    ("GET", "/v1/models/tab:predict", 400, r"Malformed request: GET /v1/models/tab:predict"),
    ("POST", "/v1/models/tab:classify", 400, r'A :classify request needs "examples"'),
    ("DELETE", "/v1/models/tab", 400, r"Malformed request: DELETE"),
    ("GET", "/metrics", 404, r"Not found: /metrics"),
])
def test_bad_paths(app_client, method, path, status, message):
    response = app_client.request(method, path, content=b'{"instances": [[0,0,0,0,0,0,0,0]]}')
    assert response.status_code == status, response.text
    assert re.search(message, response.json()["error"]), response.json()["error"]


def test_raw_path_traversal_and_oversized_body_over_a_socket(tabular_url):
    host, port = tabular_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    for path in ("/v1/models/../../etc/passwd", "/v1/models/tab/../x:predict"):
        connection.request("POST", path, body=b"{}")
        response = connection.getresponse()
        assert response.status == 400
        assert "Malformed request" in json.loads(response.read())["error"]
    connection.close()
    big = b'{"instances": [' + b"[0,0,0,0,0,0,0,0]," * 300_000 + b"[0,0,0,0,0,0,0,0]]}"
    response = httpx.post(f"{tabular_url}/v1/models/tab:predict", content=big)
    assert response.status_code == 413
    assert "exceeds the limit of 4194304 bytes" in response.json()["error"]
    assert httpx.get(f"{tabular_url}/v1/models/tab").status_code == 200


def test_chunked_body_over_the_limit(app_client):
    def chunks():
        yield b'{"instances": ['
        for _ in range(2000):
            yield b"[0,0,0,0,0,0,0,0],"
        yield b"[0,0,0,0,0,0,0,0]]}"

    response = app_client.post("/v1/models/tab:predict", content=chunks())
    assert response.status_code == 413, response.text


def test_int_inputs_are_strict(echo):
    with TestClient(create_app(echo, "echo")) as client:
        def error(count):
            r = client.post("/v1/models/echo:predict",
                            json={"inputs": {"text": ["a"], "count": count}})
            assert r.status_code == 400, r.text
            return r.json()["error"]

        assert "element [0] is a number 1.5" in error([1.5])
        assert "expects DT_INT32 values (an integer)" in error([2.0])
        assert "holds 3000000000, outside [-2147483648, 2147483647]" in error([3_000_000_000])
        assert "element [0] is a string" in error(["1"])
        r = client.post("/v1/models/echo:predict", json={"instances": [1, 2]})
        assert "plain list, but the signature has several inputs ['count', 'text']" in (
            r.json()["error"])


# -- versions ------------------------------------------------------------------


def test_new_version_is_picked_up_and_old_one_unloaded(tmp_path):
    base = tmp_path / "m"
    v1 = tf.saved_model.load(export_saved_model(tabular_model(), base))
    app = create_app(base, "m", poll_seconds=0.05)
    with running_server(app) as url:
        client = Client(url, "m")
        first = client.predict(FEATURES)
        np.testing.assert_array_equal(
            first["size"], direct(v1.signatures["serving_default"], features=FEATURES)["size"])
        v2_dir = export_saved_model(tabular_model(units=4), base)
        wait_for(lambda: client.status()["model_version_status"][0] == {
            "version": "2", "state": "AVAILABLE",
            "status": {"error_code": "OK", "error_message": ""}})
        assert [(s["version"], s["state"]) for s in client.status()["model_version_status"]] == [
            ("2", "AVAILABLE"), ("1", "END")]
        want = direct(tf.saved_model.load(v2_dir).signatures["serving_default"],
                      features=FEATURES)
        np.testing.assert_array_equal(client.predict(FEATURES)["size"], want["size"])
        np.testing.assert_array_equal(
            Client(url, "m", version=2).predict(FEATURES)["tags"], want["tags"])
        assert client.metadata()["model_spec"]["version"] == "2"
        # Like TF Serving's default policy, only the newest version is served.
        with pytest.raises(ServingError, match=r"Specific\(m, 1\)") as info:
            Client(url, "m", version=1).predict(FEATURES)
        assert info.value.status_code == 404


def test_hidden_temp_dir_is_ignored_until_renamed(tabular, tmp_path):
    base = tmp_path / "m"
    shutil.copytree(os.path.join(tabular[0], "1"), base / "1")
    app = create_app(base, "m")
    manager = app.state.manager
    # An export in progress: a hidden temp dir, first empty, then complete.
    temp = base / ".tmp-export-abc"
    temp.mkdir()
    (temp / "saved_model.pb").write_bytes(b"half")
    manager.poll()
    shutil.rmtree(temp)
    shutil.copytree(os.path.join(tabular[0], "1"), temp)
    (base / "notes").mkdir()  # not an integer: ignored too
    manager.poll()
    assert manager.get().version == 1
    assert [s["version"] for s in manager.status()["model_version_status"]] == ["1"]
    os.rename(temp, base / "2")
    manager.poll()
    assert manager.get().version == 2
    shutil.rmtree(base / "2")  # the served version removed: back to the newest left
    manager.poll()
    assert manager.get().version == 1


def test_version_that_fails_to_load_is_reported_not_fatal(tabular, tmp_path, caplog):
    base = tmp_path / "m"
    shutil.copytree(os.path.join(tabular[0], "1"), base / "1")
    (base / "3").mkdir()
    (base / "3" / "saved_model.pb").write_bytes(b"not a SavedModel")
    with TestClient(create_app(base, "m")) as client:  # v3 fails, v1 is served
        manager = client.app.state.manager
        states = client.get("/v1/models/m").json()["model_version_status"]
        assert [(s["version"], s["state"]) for s in states] == [
            ("3", "END"), ("1", "AVAILABLE")]
        assert states[0]["status"]["error_code"] != "OK"
        assert states[0]["status"]["error_message"]
        assert client.post("/v1/models/m:predict",
                           json={"instances": [ROW]}).status_code == 200
        assert "Version 3 of model 'm' failed to load" in caplog.text
        manager.poll()  # unchanged files: not retried
        assert manager.get().version == 1
        shutil.rmtree(base / "3")  # the export is redone, complete this time
        shutil.copytree(os.path.join(tabular[0], "1"), base / "3")
        manager.poll()
        assert manager.get().version == 3
        assert client.get("/v1/models/m/versions/3").json()["model_version_status"][0][
            "state"] == "AVAILABLE"


def test_empty_base_path_and_bad_arguments(tmp_path):
    with TestClient(create_app(tmp_path, "m")) as client:
        r = client.get("/v1/models/m")
        assert r.status_code == 404 and "Could not find any versions of model m" in r.text
        r = client.post("/v1/models/m:predict", json={"instances": [ROW]})
        assert r.status_code == 404 and "no version is loaded yet" in r.text
    with pytest.raises(ValueError, match=r"base path '.*missing' is not a directory"):
        create_app(tmp_path / "missing", "m")
    with pytest.raises(ValueError, match=r"Invalid model name '\.\.'"):
        create_app(tmp_path, "..")
    with pytest.raises(ValueError, match=r"`max_body_bytes`"):
        create_app(tmp_path, "m", max_body_bytes=0)
    with pytest.raises(ValueError, match=r"`url`"):
        Client("localhost:8501", "m")


def test_client_cannot_connect():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with pytest.raises(ConnectionError, match=r"Cannot reach http://127\.0\.0\.1"):
        Client(f"http://127.0.0.1:{port}", "m", timeout=5).status()


# -- codec -------------------------------------------------------------------


def test_codec_round_trips_special_floats_and_scalars():
    info = {"x": codec.TensorInfo("x", "DT_FLOAT", (-1,))}
    body = b'{"inputs": [1, NaN, Infinity, -Infinity, 0.1]}'
    fmt, arrays = codec.decode_inputs(codec.parse_predict_request(body), info)
    assert fmt == codec.COLUMNAR and arrays["x"].dtype == np.float32
    np.testing.assert_array_equal(arrays["x"], np.float32([1, np.nan, np.inf, -np.inf, 0.1]))
    text = codec.dumps(codec.encode_outputs({"y": arrays["x"]}, codec.COLUMNAR))
    assert text.startswith(b'{"outputs":[1.0,NaN,Infinity,-Infinity,0.10000000149')
    back = codec.from_json_value(json.loads(text)["outputs"], "DT_FLOAT")
    np.testing.assert_array_equal(back, arrays["x"])  # exact float32 round trip
    rows = codec.encode_outputs({"a": np.zeros(2), "b": np.zeros((2, 0))}, codec.ROW)
    assert rows == {"predictions": [{"a": 0.0, "b": []}, {"a": 0.0, "b": []}]}
    with pytest.raises(ServingError, match=r"no common batch size"):
        codec.encode_outputs({"a": np.zeros(2), "b": np.zeros(3)}, codec.ROW)
    with pytest.raises(ServingError, match=r"without loss of precision"):
        codec.decode_inputs(codec.parse_predict_request(b'{"inputs": [16777217]}'), info)


@pytest.mark.parametrize("body", [
    b'{"a": [1, NaN, -Infinity, 0.1, -0.0, 1e-5, 1e400]}',  # orjson rejects NaN & co.
    b'{"a": [18446744073709551615, -9223372036854775808]}',  # 64-bit ints: both exact
    b'{"a": [18446744073709551616, -9223372036854775809, 1e19]}',  # orjson: floats
    b'{"a": {"b": [123456789012345678901234567890]}}',
    b'\xef\xbb\xbf{"a": "\\ud800"}',  # a UTF-8 BOM, a lone surrogate
    '{"a": "\u00e9"}'.encode("utf-16"),
    b"[" * 600 + b"]" * 600,  # deeper than orjson is trusted with, but parses
])
def test_codec_loads_is_json_loads(body):
    expected = json.loads(body)
    assert json.dumps(codec.loads(body)) == json.dumps(expected)  # NaN != NaN


def test_codec_fast_parse_keeps_json_errors_and_values():
    info = {"x": codec.TensorInfo("x", "DT_FLOAT", (-1,))}

    def decode(body):
        return codec.decode_inputs(codec.parse_predict_request(body), info)[1]["x"]

    # orjson reads this integer literal as 1e20, which float32 holds; json
    # keeps it an int, which numpy cannot pack with floats: rejected as before.
    with pytest.raises(ServingError, match=r"holds values that do not fit DT_FLOAT"):
        decode(b'{"inputs": [100000000000000000000]}')
    np.testing.assert_array_equal(decode(b'{"inputs": [1e20, 0.5]}'), np.float32([1e20, 0.5]))
    # "false" has no r, so the quick search for bodies without words must look
    # for an l too.
    with pytest.raises(ServingError, match=r"element \[1\] is a boolean false"):
        decode(b'{"inputs": [1.0, false]}')
    with pytest.raises(ServingError, match=r"element \[0\] is a boolean true"):
        decode(b'{"inputs": [true, 1.0]}')
    deep = b"[" * 1000 + b"]" * 1000  # orjson parses up to 1024 levels, json not
    with pytest.raises(ServingError, match=r"JSON Parse error: maximum recursion depth"):
        codec.parse_predict_request(b'{"inputs": [1], "x": ' + deep + b"}")
    with pytest.raises(ServingError, match=r"'signature_name' must be a string value. "
                       r"Received: 100000000000000000000$"):
        codec.parse_predict_request(b'{"inputs": [1], "signature_name": 100000000000000000000}')
    assert codec.dumps({"a": None, "b": 10**20, "c": [float("nan"), 0.1]}) == (
        b'{"a":null,"b":100000000000000000000,"c":[NaN,0.1]}')
    assert codec.dumps({"a": "\u00e9", "b": [1.5]}) == '{"a":"\u00e9","b":[1.5]}'.encode()


def test_cli_serve_parses_and_calls_the_library(monkeypatch, tmp_path, capsys):
    calls = []
    monkeypatch.setattr(cli, "serve", lambda *a, **k: calls.append((a, k)))
    assert cli.main(["serve", str(tmp_path), "--name", "m", "--port", "9000"]) == 0
    assert calls == [((str(tmp_path), "m"), {
        "host": "127.0.0.1", "port": 9000, "max_body_bytes": 4 * 1024 * 1024,
        "poll_seconds": 1.0, "max_requests": 64, "max_connections": 1000,
        "header_timeout": 10.0, "body_timeout": 60.0, "keep_alive_timeout": 5.0})]
    # The CLI repeats the server's defaults (so --help loads no TensorFlow).
    defaults = inspect.signature(serve).parameters
    assert {k: v for k, v in calls[0][1].items() if k not in ("port",)} == {
        k: defaults[k].default for k in calls[0][1] if k != "port"}
    calls.clear()
    cli.main(["serve", str(tmp_path), "--name", "m", "--max-connections", "20",
              "--header-timeout", "0.5", "--body-timeout", "2", "--keep-alive-timeout",
              "1", "--max-requests", "3"])
    assert {k: calls[0][1][k] for k in ("max_connections", "header_timeout", "body_timeout",
                                        "keep_alive_timeout", "max_requests")} == {
        "max_connections": 20, "header_timeout": 0.5, "body_timeout": 2.0,
        "keep_alive_timeout": 1.0, "max_requests": 3}
    monkeypatch.undo()
    assert cli.main(["serve", str(tmp_path / "nope"), "--name", "m"]) == 2
    assert "is not a directory" in capsys.readouterr().err


# -- benchmark ------------------------------------------------------------------


@pytest.mark.large  # two TensorFlow processes (benchmark and `kerasmtl serve`)
def test_serving_benchmark_quick_prints_a_table():
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "serving.py"), "--quick"],
        cwd=root, capture_output=True, text=True, timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for batch in (1, 32):
        for clients in (1, 8):
            row = re.search(rf"^\s+{batch}\s+{clients}\s+[\d.]+ \|.* (\d+\.\d+) \|.* "
                            r"(\d+\.\d+)$", out, re.M)
            # REST and gRPC ratios, each a positive number
            assert row and float(row.group(1)) > 0 and float(row.group(2)) > 0, out
    assert re.search(r"^verdict: batch 32, 8 clients REST ratio \d+\.\d+ vs target >= 0\.7",
                     out, re.M), out
    growth = re.search(r"^  growth after the first \d+ requests: [+-]\d+\.\d MiB$", out, re.M)
    assert growth, out
