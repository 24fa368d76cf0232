"""`kerasmtl serve --enable-batching`: concurrent predict requests merged into
one call of the signature (`kerasmtl.serving.batching`).

The batcher's rules are checked on small Python signatures that record every
call (which rows ran together), with parameters that make batches form
deterministically: one batch thread and a long timeout, so a batch runs when
it is full. The served paths (REST row and columnar, gRPC through the official
stub) run an exported Keras model and compare every answer with a direct,
unbatched call of the signature.

Float tolerance: a merged call may round differently in the last bits, since
TensorFlow's CPU kernels (oneDNN matmuls) take other paths for other batch
sizes. Measured on 2 x86 cores (TF 2.21) against each row run alone: at most
6e-7 absolute and 2.6e-6 relative on float32 outputs (benchmarks/serving.py's
model, batches of 2-32 rows), 1.2e-7 absolute on this file's model; class
ids and 0/1 labels equal. The tests allow rtol 1e-5, atol 1e-6.
"""

import os
import re
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import grpc
import httpx
import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

import kerasmtl as mtl
from harness import running_server
from kerasmtl import cli
from kerasmtl.export import export_saved_model
from kerasmtl.serving.batching import (
    Batcher,
    BatchingParameters,
    batching_from_flags,
    read_batching_parameters,
)
from kerasmtl.serving.codec import TensorInfo
from kerasmtl.serving.errors import ServingError
from kerasmtl.serving.grpc_server import create_grpc_server
from kerasmtl.serving.loaded_version import Signature
from kerasmtl.serving.server import create_app

with warnings.catch_warnings():  # starlette's note about its httpx backend
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

RTOL, ATOL = 1e-5, 1e-6
# Long enough that a batch runs only when full: the tests fill every batch.
WAIT_FOR_FULL = 10_000_000


@pytest.fixture(autouse=True)
def _seed_and_clear():
    yield  # overrides conftest's clear_session (~1 s each); models are built once


# -- the parameters file ------------------------------------------------------------


def test_parameters_file_as_tf_serving_writes_it(tmp_path):
    path = tmp_path / "batching.config"
    # TF Serving's own example (serving_config.md), with a comment.
    path.write_text("max_batch_size { value: 128 }\nbatch_timeout_micros { value: 0 }\n"
                    "# online serving\nmax_enqueued_batches { value: 1000000 }\n"
                    "num_batch_threads { value: 8 }\n")
    assert read_batching_parameters(path) == BatchingParameters(
        max_batch_size=128, batch_timeout_micros=0, max_enqueued_batches=1_000_000,
        num_batch_threads=8)
    path.write_text('batch_timeout_micros: { value: 500 } thread_pool_name { value: "b" }')
    parameters = read_batching_parameters(path)
    # What the file leaves out keeps TF Serving's defaults.
    assert (parameters.max_batch_size, parameters.max_enqueued_batches,
            parameters.batch_timeout_micros, parameters.thread_pool_name) == (
        1000, 10, 500, "b")
    assert batching_from_flags(False, None) is None
    assert batching_from_flags(True, None) == BatchingParameters()
    assert batching_from_flags(True, path) == parameters
    with pytest.raises(ValueError, match=r"batching.config is given without "
                       r"--enable-batching"):
        batching_from_flags(False, path)


@pytest.mark.parametrize("text, message", [
    ("max_batch_size { value: 8 }\nmax_batch_sise { value: 8 }\n",
     r":2: Message type BatchingParameters has no field named \"max_batch_sise\"\. "
     r"Expected TF Serving's batching parameters.*KEY \{ value: N \}"),
    ("max_batch_size { value: 8 }\n\nnum_batch_threads { value: abc }\n",
     r":3: .*Couldn't parse integer: abc\."),
    ("max_batch_size { value: 8 }\nnum_batch_threads { value: 0 }\n",
     r":2: num_batch_threads: Expected an int in \[1, 1024\]\. Received: value: 0\."),
    ("# comment\nmax_enqueued_batches { value: -1 }\n",
     r":2: max_enqueued_batches: Expected an int in \[1, "),
    ("max_batch_size: 8\n", r':1: .*Expected "\{"'),
    ("max_batch_size { value: 8 }\nallowed_batch_sizes: 4\nallowed_batch_sizes: 8\n",
     r":2: allowed_batch_sizes is not supported by kerasmtl serve \(batches are not "
     r"padded to allowed sizes\); remove it\."),
    ("pad_variable_length_inputs: true\n",
     r":1: pad_variable_length_inputs is not supported"),
])
def test_parameters_file_errors_name_the_file_and_line(tmp_path, text, message):
    path = tmp_path / "batching.config"
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"^{str(path)}{message}"):
        read_batching_parameters(path)


def test_parameters_are_checked_in_code_too(tmp_path):
    with pytest.raises(ValueError, match=r"Invalid value for argument `max_batch_size`"
                       r"\. Expected an int in \[1, .*Received: max_batch_size=0"):
        BatchingParameters(max_batch_size=0)
    with pytest.raises(ValueError, match=r"Cannot read the batching parameters file"):
        read_batching_parameters(tmp_path / "missing.config")


# -- the batcher, on Python signatures that record their calls --------------------------


def recording_signature(function, inputs=None, outputs=None):
    """A `Signature` over `function(x) -> dict` that records each call's rows."""
    calls = []

    def call(x):
        calls.append(x.numpy())
        return function(x)

    inputs = inputs or {"x": TensorInfo("x", "DT_FLOAT", (-1, -1))}
    outputs = outputs or {"y": TensorInfo("y", "DT_FLOAT", (-1, -1))}
    return Signature("serving_default", call, inputs, outputs), calls


def double(x):
    return {"y": x * 2.0}


def concurrently(batcher, signature, requests):
    """Runs each request from its own thread; returns outputs or errors."""
    results = [None] * len(requests)

    def one(i):
        try:
            results[i] = batcher.run(signature, {"x": requests[i]}, "m")
        except ServingError as error:
            results[i] = error

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def rows(n, width=2, start=0.0):
    return (start + np.arange(n * width, dtype="float32")).reshape(n, width)


def test_concurrent_requests_merge_into_one_call_and_get_their_own_rows():
    signature, calls = recording_signature(double)
    requests = [rows(1, start=0), rows(2, start=10), rows(1, start=20), rows(3, start=30)]
    batcher = Batcher(BatchingParameters(max_batch_size=7, num_batch_threads=1,
                                         batch_timeout_micros=WAIT_FOR_FULL))
    results = concurrently(batcher, signature, requests)
    assert [len(c) for c in calls] == [7]  # one call with every row
    assert batcher.batch_sizes == {4: 1}
    for request, result in zip(requests, results):
        np.testing.assert_array_equal(result["y"], request * 2)
    batcher.stop()
    # /monitoring's batching metrics, in TensorFlow's batching names.
    text = batcher.metrics.exposition()
    op = 'model_name="m",op_name="serving_default"'
    prefix = ":tensorflow:serving:batching:"
    assert f"{prefix}processed_batch_size_v2{{{op},batch_size=\"7\"}} 1" in text
    assert f"{prefix}input_batch_size_v2_count{{{op}}} 4" in text
    assert f"{prefix}input_batch_size_v2_sum{{{op}}} 7" in text
    assert f'{prefix}input_batch_size_v2_bucket{{{op},le="2"}} 3' in text
    assert f'{prefix}batch_delay_us_v2_count{{{op},processed_batch_size="7"}} 4' in text
    assert f"{prefix}max_batch_size{{{op}}} 7" in text


def test_lone_request_runs_at_once_with_the_default_timeout():
    signature, calls = recording_signature(double)
    batcher = Batcher()  # TF Serving's defaults: timeout 0
    start = time.monotonic()
    out = batcher.run(signature, {"x": rows(2)}, "m")
    assert time.monotonic() - start < 5
    np.testing.assert_array_equal(out["y"], rows(2) * 2)
    assert [len(c) for c in calls] == [2]
    batcher.stop()
    assert batcher._threads == []  # they exit when stopped
    np.testing.assert_array_equal(  # and start again for a later request
        batcher.run(signature, {"x": rows(1)}, "m")["y"], rows(1) * 2)
    batcher.stop()


def test_request_over_max_batch_size_runs_alone_and_others_still_merge():
    signature, calls = recording_signature(double)
    batcher = Batcher(BatchingParameters(max_batch_size=4, num_batch_threads=1,
                                         batch_timeout_micros=WAIT_FOR_FULL))
    requests = [rows(6, start=100)] + [rows(1, start=i) for i in range(4)]
    results = concurrently(batcher, signature, requests)
    assert sorted(len(c) for c in calls) == [4, 6]
    for request, result in zip(requests, results):
        np.testing.assert_array_equal(result["y"], request * 2)
    batcher.stop()


def test_requests_of_other_shapes_or_dtypes_go_in_separate_batches():
    signature, calls = recording_signature(double)
    batcher = Batcher(BatchingParameters(max_batch_size=2, num_batch_threads=1,
                                         batch_timeout_micros=WAIT_FOR_FULL))
    requests = [rows(1, 2), rows(1, 3), rows(1, 2, start=5), rows(1, 3, start=5)]
    results = concurrently(batcher, signature, requests)
    assert sorted(c.shape for c in calls) == [(2, 2), (2, 3)]
    for request, result in zip(requests, results):
        np.testing.assert_array_equal(result["y"], request * 2)
    # Columnar inputs whose first dimensions differ are never merged.
    two = {"a": TensorInfo("a", "DT_FLOAT", None), "b": TensorInfo("b", "DT_FLOAT", None)}
    pair = Signature("serving_default", lambda a, b: {"s": tf.reduce_sum(a) + b}, two,
                     {"s": TensorInfo("s", "DT_FLOAT", None)})
    out = batcher.run(pair, {"a": rows(3), "b": np.ones(1, "float32")}, "m")
    np.testing.assert_array_equal(out["s"], [16.0])
    batcher.stop()


def test_queue_full_is_refused_with_503_retry_later():
    entered, release = threading.Event(), threading.Event()

    def blocked(x):
        entered.set()
        release.wait(30)
        return double(x)

    signature, calls = recording_signature(blocked)
    batcher = Batcher(BatchingParameters(max_batch_size=1, max_enqueued_batches=1,
                                         num_batch_threads=1))
    results = []
    first = threading.Thread(target=lambda: results.append(
        batcher.run(signature, {"x": rows(1)}, "m")))
    first.start()
    assert entered.wait(30)  # the only thread runs the first request
    second = threading.Thread(target=lambda: results.append(
        batcher.run(signature, {"x": rows(1)}, "m")))
    second.start()
    deadline = time.monotonic() + 30
    while not batcher._queues:  # the second request waits in the queue
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with pytest.raises(ServingError, match=r"The batch queue of model 'm' \(signature "
                       r"'serving_default'\) is full: 1 batches wait "
                       r"\(max_enqueued_batches.*Retry later\.") as info:
        batcher.run(signature, {"x": rows(1)}, "m")
    assert info.value.status_code == 503
    release.set()
    first.join(30)
    second.join(30)
    assert len(results) == 2 and len(calls) == 2
    batcher.stop()


def test_a_bad_value_seen_only_by_the_model_fails_alone():
    def non_negative(x):
        tf.debugging.assert_non_negative(x, message="x must be >= 0")
        return double(x)

    signature, calls = recording_signature(non_negative)
    batcher = Batcher(BatchingParameters(max_batch_size=4, num_batch_threads=1,
                                         batch_timeout_micros=WAIT_FOR_FULL))
    requests = [rows(1, start=1), -rows(1, start=1), rows(1, start=5), rows(1, start=9)]
    results = concurrently(batcher, signature, requests)
    # The merged call failed (400); each request then ran alone.
    assert [len(c) for c in calls] == [4, 1, 1, 1, 1]
    assert isinstance(results[1], ServingError) and results[1].status_code == 400
    assert "x must be >= 0" in results[1].message
    for i in (0, 2, 3):
        np.testing.assert_array_equal(results[i]["y"], requests[i] * 2)
    batcher.stop()


def test_model_failure_reaches_every_request_of_the_batch_alike():
    def broken(x):
        raise tf.errors.InternalError(None, None, "kernel exploded")

    signature, calls = recording_signature(broken)
    batcher = Batcher(BatchingParameters(max_batch_size=3, num_batch_threads=1,
                                         batch_timeout_micros=WAIT_FOR_FULL))
    results = concurrently(batcher, signature, [rows(1) for _ in range(3)])
    assert len(calls) == 1
    assert all(isinstance(r, ServingError) and r.status_code == 500 for r in results)
    assert {r.message for r in results} == {
        "Signature 'serving_default' failed: kernel exploded (the whole batch of 3 "
        "requests merged by --enable-batching failed)"}
    batcher.stop()


def test_outputs_without_the_batch_dimension_are_not_merged():
    total = {"total": TensorInfo("total", "DT_FLOAT", None)}  # unknown rank
    signature, calls = recording_signature(
        lambda x: {"total": tf.reduce_sum(x)}, outputs=total)
    batcher = Batcher(BatchingParameters(max_batch_size=2, num_batch_threads=1,
                                         batch_timeout_micros=WAIT_FOR_FULL))
    results = concurrently(batcher, signature, [rows(1), rows(1, start=10)])
    # Merged once, found unsplittable, each run alone; not merged again.
    assert [len(c) for c in calls] == [2, 1, 1]
    assert [float(r["total"]) for r in results] == [1.0, 21.0]
    assert batcher.run(signature, {"x": rows(1)}, "m")["total"] == 1.0
    assert [len(c) for c in calls] == [2, 1, 1, 1]
    # A declared scalar output is known beforehand: never merged.
    scalar = {"total": TensorInfo("total", "DT_FLOAT", ())}
    signature, calls = recording_signature(
        lambda x: {"total": tf.reduce_sum(x)}, outputs=scalar)
    concurrently(Batcher(BatchingParameters(max_batch_size=2, num_batch_threads=1)),
                 signature, [rows(1), rows(1)])
    assert [len(c) for c in calls] == [1, 1]
    batcher.stop()


# -- served: REST and gRPC on an exported model ----------------------------------------


@pytest.fixture(scope="module")
def tabular(tmp_path_factory):
    keras.utils.set_random_seed(0)
    tasks = [mtl.tasks.Classification("species", num_classes=3),
             mtl.tasks.Regression("size"), mtl.tasks.MultiLabel("tags", num_labels=4)]
    x = keras.Input((8,), name="features")
    model = mtl.sharing.hard_sharing(x, keras.layers.Dense(16, "relu")(x), tasks)
    base = tmp_path_factory.mktemp("tabular")
    version_dir = export_saved_model(model, base)
    return str(base), tf.saved_model.load(version_dir).signatures["serving_default"]


def direct(signature, x):
    return {k: v.numpy() for k, v in signature(features=tf.constant(x)).items()}


def assert_close(got: dict, expected: dict):
    assert sorted(got) == sorted(expected)
    for name, want in expected.items():
        have = np.asarray(got[name], want.dtype)
        if want.dtype.kind == "f":
            np.testing.assert_allclose(have, want, rtol=RTOL, atol=ATOL, err_msg=name)
        else:
            np.testing.assert_array_equal(have, want, err_msg=name)


def batched_app(base, clients):
    # A batch runs when every client's request is in it.
    return create_app(base, "tab", batching=BatchingParameters(
        max_batch_size=clients, num_batch_threads=1, batch_timeout_micros=WAIT_FOR_FULL))


def test_rest_row_and_columnar_requests_merge_and_match_unbatched_calls(tabular):
    base, signature = tabular
    rng = np.random.default_rng(1)
    xs = [rng.normal(size=(1 + i % 2, 8)).astype("float32") for i in range(6)]
    expected = [direct(signature, x) for x in xs]
    app = batched_app(base, sum(len(x) for x in xs))
    answers = [None] * len(xs)

    def client(i):  # even clients send rows, odd ones columns
        body = ({"instances": xs[i].tolist()} if i % 2 == 0
                else {"inputs": {"features": xs[i].tolist()}})
        answers[i] = httpx.post(f"{url}/v1/models/tab:predict", json=body, timeout=30)

    with running_server(app) as url:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(xs))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        metrics = httpx.get(f"{url}/monitoring/prometheus/metrics", timeout=30).text
    assert app.state.batcher.batch_sizes == {6: 1}  # one call for all six
    assert (':tensorflow:serving:batching:processed_batch_size_v2{model_name="tab",'
            f'op_name="serving_default",batch_size="{sum(len(x) for x in xs)}"}} 1'
            in metrics), metrics
    assert ':tensorflow:serving:request_count{model_name="tab"' in metrics
    for i, response in enumerate(answers):
        assert response.status_code == 200, response.text
        if i % 2 == 0:
            rows_ = response.json()["predictions"]
            got = {k: [row[k] for row in rows_] for k in rows_[0]}
        else:
            got = response.json()["outputs"]
        assert_close(got, expected[i])


def test_malformed_requests_among_good_ones_fail_alone(tabular):
    base, signature = tabular
    good = [np.full((1, 8), i, "float32") for i in range(4)]
    bad = [{"instances": [[1.0, 2.0, 3.0]]}, {"instances": [["x"] * 8]},
           {"inputs": {"features": [[1.0] * 8], "extra": [1]}}]
    app = batched_app(base, len(good))  # the good ones fill one batch
    answers = {}

    def client(key, body):
        answers[key] = httpx.post(f"{url}/v1/models/tab:predict", json=body, timeout=30)

    with running_server(app) as url:
        threads = [threading.Thread(target=client, args=(("good", i), {
            "instances": x.tolist()})) for i, x in enumerate(good)]
        threads += [threading.Thread(target=client, args=(("bad", i), body))
                    for i, body in enumerate(bad)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert app.state.batcher.batch_sizes == {4: 1}
    for i, x in enumerate(good):
        response = answers["good", i]
        assert response.status_code == 200, response.text
        rows_ = response.json()["predictions"]
        assert_close({k: [r[k] for r in rows_] for k in rows_[0]}, direct(signature, x))
    messages = [answers["bad", i].json()["error"] for i in range(len(bad))]
    assert [answers["bad", i].status_code for i in range(len(bad))] == [400] * 3
    assert "Input 'features' has shape (1, 3)" in messages[0]
    assert "expects DT_FLOAT values (a number)" in messages[1]
    assert "has unknown input(s) ['extra']" in messages[2]


def test_full_queue_is_503_with_retry_after_and_grpc_unavailable(tabular, monkeypatch):
    app = create_app(tabular[0], "tab", batching=BatchingParameters())

    def full(*args):
        raise ServingError("The batch queue of model 'tab' ... is full. Retry later.", 503)

    monkeypatch.setattr(app.state.batcher, "run", full)
    response = TestClient(app).post("/v1/models/tab:predict",
                                    json={"instances": [[0.0] * 8]})
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert "Retry later" in response.json()["error"]
    server, port = create_grpc_server(app.state.models, port=0, batcher=app.state.batcher)
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.Predict(predict_request(np.zeros((1, 8), "float32")), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "Retry later" in info.value.details()
    finally:
        server.stop(grace=None).wait(10)


def predict_request(x):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "tab"
    request.inputs["features"].CopyFrom(tf.make_tensor_proto(x))
    return request


def test_grpc_predicts_merge_with_rest_through_the_official_stub(tabular):
    base, signature = tabular
    rng = np.random.default_rng(2)
    xs = [rng.normal(size=(1, 8)).astype("float32") for _ in range(6)]
    expected = [direct(signature, x) for x in xs]
    app = batched_app(base, len(xs))
    server, port = create_grpc_server(app.state.models, port=0, batcher=app.state.batcher)
    server.start()
    answers = [None] * len(xs)

    def grpc_client(i):
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            response = stub.Predict(predict_request(xs[i]), timeout=30)
            answers[i] = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}

    def rest_client(i):
        body = {"inputs": {"features": xs[i].tolist()}}
        answers[i] = httpx.post(f"{url}/v1/models/tab:predict", json=body,
                                timeout=30).json()["outputs"]

    try:
        with running_server(app) as url:
            threads = [threading.Thread(target=grpc_client if i < 4 else rest_client,
                                        args=(i,)) for i in range(len(xs))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
    finally:
        server.stop(grace=None).wait(10)
    assert app.state.batcher.batch_sizes == {6: 1}  # 4 gRPC + 2 REST in one call
    for got, want in zip(answers, expected):
        assert_close(got, want)


def test_batching_is_off_by_default(tabular):
    app = create_app(tabular[0], "tab")
    assert app.state.batcher is None
    response = TestClient(app).post("/v1/models/tab:predict",
                                    json={"instances": [[0.5] * 8]})
    assert response.status_code == 200


# -- command line ---------------------------------------------------------------------


def test_cli_enable_batching_and_parameters_file(monkeypatch, tmp_path, capsys):
    calls = []
    monkeypatch.setattr(cli, "serve", lambda *a, **k: calls.append((a, k)))
    config = tmp_path / "batching.config"
    config.write_text("max_batch_size { value: 32 }\n")
    assert cli.main(["serve", str(tmp_path), "--name", "m"]) == 0
    assert "enable_batching" not in calls[0][1]  # off: server.serve's own defaults
    assert cli.main(["serve", str(tmp_path), "--name", "m", "--enable-batching"]) == 0
    assert calls[1][1]["enable_batching"] is True
    assert "batching_parameters_file" not in calls[1][1]
    assert cli.main(["serve", str(tmp_path), "--name", "m", "--enable-batching",
                     "--batching-parameters-file", str(config)]) == 0
    assert calls[2][1]["batching_parameters_file"] == str(config)
    assert cli.main(["serve", str(tmp_path), "--name", "m",
                     "--batching-parameters-file", str(config)]) == 2
    assert "needs --enable-batching" in capsys.readouterr().err
    monkeypatch.undo()
    config.write_text("max_batch_size { value: 32 }\nmax_batch { value: 1 }\n")
    # The real serve reads the file before it loads or binds anything.
    assert cli.main(["serve", str(tmp_path), "--name", "m", "--enable-batching",
                     "--batching-parameters-file", str(config)]) == 2
    assert f"{config}:2: Message type BatchingParameters has no field named " \
        '"max_batch"' in capsys.readouterr().err


# -- benchmark ------------------------------------------------------------------------


@pytest.mark.large  # three TensorFlow processes (benchmark and two servers), ~40 s
def test_serving_benchmark_compares_batching_on_and_off():
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "serving.py"), "--quick", "--batching",
         "--batch-sizes", "1", "--clients", "1", "--memory-requests", "0"],
        cwd=root, capture_output=True, text=True, timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    for clients in (8, 32):
        row = re.search(rf"^\s+{clients} \|.*\| +(\d+\.\d+)$", result.stdout, re.M)
        assert row and float(row.group(1)) > 0, result.stdout
    assert re.search(r"^numerical effect of merging \(32 rows.*at most \S+ absolute, "
                     r"\S+ relative; .*equal", result.stdout, re.M), result.stdout
