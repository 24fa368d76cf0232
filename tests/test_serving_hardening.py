"""`kerasmtl serve` under hostile input and load (issue 22, items 1-6).

What one request may cost in memory (measured with tracemalloc), deep
nesting, slow and idle connections against a capped server under a tight
open-file limit, saturation (503), log floods, and the client's view of a 413.
Servers run in a thread on a free loopback port and stop with the test.
"""

import contextlib
import logging
import os
import re
import resource
import select
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
import warnings

import httpx
import numpy as np
import orjson
import pytest
import tensorflow as tf

from harness import running_uvicorn
from kerasmtl.serving import codec, rest_api, server
from kerasmtl.serving.client import Client
from kerasmtl.serving.connection_guard import ConnectionLimits, RepeatFilter
from kerasmtl.serving.errors import ServingError
from kerasmtl.serving.server import create_app, uvicorn_config

with warnings.catch_warnings():  # starlette's note about its httpx backend
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

FEATURES = np.arange(16, dtype="float32").reshape(2, 8)


@pytest.fixture(autouse=True)
def _seed_and_clear():
    yield  # overrides conftest's clear_session (~1 s each): no Keras model here


class Tiny(tf.Module):
    """A float input and a string input, in two signatures."""

    @tf.function(input_signature=[tf.TensorSpec([None, 8], tf.float32, name="features")])
    def serve(self, features):
        return {"total": tf.reduce_sum(features, axis=1)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def lengths(self, text):
        return {"length": tf.strings.length(text)}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    module = Tiny()
    tf.saved_model.save(module, str(path / "1"), signatures={
        "serving_default": module.serve.get_concrete_function(),
        "lengths": module.lengths.get_concrete_function(),
    })
    return str(path)


@contextlib.contextmanager
def guarded_server(app, limits: ConnectionLimits, http: str = "auto"):
    """Runs `app` as `serve` would (connection guard, log filter) on a free
    loopback port, with the `http` parser; yields its URL and the guard's
    shared state."""
    config = uvicorn_config(app, limits, http=http, log_level="warning")
    with running_uvicorn(config) as url:
        yield url, config.http.guard


def wait_for(condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def read_until_closed(sock: socket.socket, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


# -- 1. memory: a bounded multiple of the body -----------------------------------


FLOAT_INPUT = {"x": codec.TensorInfo("x", "DT_FLOAT", (-1, 8))}
ANY_FLOAT = {"x": codec.TensorInfo("x", "DT_FLOAT", None)}
STRING_INPUT = {"x": codec.TensorInfo("x", "DT_STRING", None)}
N = 1000  # rows: bodies of ~20-50 KB (and one long string), quick under tracemalloc


def _rows(row: bytes, n: int = N, tail: bytes = b"") -> bytes:
    return b'{"instances": [' + b",".join([row] * n) + tail + b"]}"


LONG = b'"' + b"a" * 100_000 + b'"'
HOSTILE_BODIES = {
    # The case: one long string among numbers (numpy made a <U100000>
    # array of every element, twice: 1.9 GB for 105 KB).
    "long string among floats": _rows(b"[1,1,1,1,1,1,1,1]", tail=b",[1,1,1,1,1,1,1," + LONG + b"]"),
    "strings of growing length": b'{"instances": [' + b",".join(
        b'["' + b"b" * i + b'",1,1,1,1,1,1,1]' for i in range(0, 2000, 4)) + b"]}",
    "null among floats": _rows(b"[1,1,1,1,1,1,1,null]"),
    "booleans": _rows(b"[true,false,true,false,true,false,true,false]"),
    "b64 objects": _rows(b'[{"b64":""},1,1,1,1,1,1,1]'),
    "empty lists": b'{"inputs": [' + b",".join([b"[]"] * 5_000) + b"]}",
    "nested one-element lists": b'{"inputs": ' + b"[" * 31 + b",".join([b"[0]"] * 4_000)
    + b"]" * 31 + b"}",
    "ragged rows": _rows(b"[1,1,1,1,1,1,1,1]", tail=b",[1]"),
    "huge integer": _rows(b"[1,1,1,1,1,1,1,1]", tail=b",[1,1,1,1,1,1,1,1" + b"0" * 4000 + b"]"),
    "many unknown inputs": b'{"inputs": {' + b",".join(
        b'"k%d": 1' % i for i in range(4_000)) + b"}}",
    "long signature name": b'{"instances": [[1]], "signature_name": [' + LONG + b"]}",
    "valid floats": _rows(b"[0.5,1.5,2.5,3.5,4.5,5.5,6.5,7.5]"),
    "valid ints": _rows(b"[0,1,2,3,4,5,6,7]"),
}


def decoding_peak(body: bytes, inputs) -> tuple[int, str]:
    """Peak bytes allocated while parsing and decoding `body`, and the outcome."""
    tracemalloc.start()
    try:
        codec.decode_inputs(codec.parse_predict_request(body), inputs)
        outcome = "ok"
    except ServingError as error:
        outcome = error.message
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, outcome


@pytest.mark.parametrize("name", sorted(HOSTILE_BODIES))
def test_decoding_costs_at_most_a_multiple_of_the_body(name):
    body = HOSTILE_BODIES[name]
    for inputs in (FLOAT_INPUT, ANY_FLOAT, STRING_INPUT):
        peak, outcome = decoding_peak(body, inputs)
        assert peak <= codec.MEMORY_PER_BODY_BYTE * len(body), (
            f"{name}, {inputs['x']}: {peak / len(body):.0f} bytes per body byte "
            f"({outcome[:100]})")
        assert len(outcome) < 500  # error messages quote values briefly


def test_a_long_string_where_a_float_is_expected_costs_no_more_than_parsing():
    body = b'{"instances": [["' + b"a" * 4_000_000 + b'", 1, 1, 1, 1, 1, 1, 1]]}'
    tracemalloc.start()
    orjson.loads(body)
    parsing = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    peak, outcome = decoding_peak(body, FLOAT_INPUT)
    assert peak <= 1.1 * parsing, (peak, parsing)
    assert re.fullmatch(r"Input 'x' expects DT_FLOAT values \(a number\); element \[0\]\[0\] "
                        r'is a string "a{50,}\.\.\.\.?', outcome), outcome


def test_a_long_string_where_a_float_is_expected_is_a_400_naming_the_input(base):
    body = b'{"instances": [' + b"[1,1,1,1,1,1,1,1]," * 100 + b'[1,1,1,1,1,1,1,"' + (
        b"a" * 4_000_000) + b'"]]}'
    with TestClient(create_app(base, "tiny")) as client:
        response = client.post("/v1/models/tiny:predict", content=body)
        assert response.status_code == 400, response.text[:300]
        assert re.match(r"Input 'features' expects DT_FLOAT values \(a number\); element "
                        r"\[100\]\[7\] is a string \"aaa", response.json()["error"])
        assert client.post("/v1/models/tiny:predict",
                           json={"instances": FEATURES.tolist()}).status_code == 200


def test_values_and_errors_are_unchanged():
    def decode(body, inputs=FLOAT_INPUT):
        return codec.decode_inputs(codec.parse_predict_request(body), inputs)[1]["x"]

    np.testing.assert_array_equal(decode(b'{"inputs": [[0, 1.5, 2, 3, 4, 5, 6, 7]]}'),
                                  np.float32([[0, 1.5, 2, 3, 4, 5, 6, 7]]))
    assert decode(b'{"inputs": [[]]}', ANY_FLOAT).shape == (1, 0)
    assert decode(b'{"inputs": 2.5}', ANY_FLOAT).shape == ()
    ints = {"x": codec.TensorInfo("x", "DT_INT64", (-1,))}
    assert decode(b'{"inputs": [9223372036854775807]}', ints).tolist() == [2**63 - 1]
    with pytest.raises(ServingError, match=r"holds values that do not fit DT_INT64"):
        decode(b'{"inputs": [-1, 18446744073709551616]}', ints)
    with pytest.raises(ServingError, match=r"element \[0\]\[1\] is a boolean true"):
        decode(b'{"inputs": [[1.0, true, 1, 1, 1, 1, 1, 1]]}')
    with pytest.raises(ServingError, match=r"unknown input\(s\) \['a', 'b', 'c', 'd', 'e'\] "
                       r"and 2 more"):
        decode(b'{"inputs": {"x": [1], "a": 1, "b": 1, "c": 1, "d": 1, "e": 1, "f": 1, '
               b'"g": 1}}')


# -- 6. the client reports the server's 413, not a broken pipe ------------------


def test_client_reports_the_413_of_an_oversized_body(base):
    big = np.zeros((250_000, 8), "float32")  # 8 MB of JSON: more than socket buffers
    with guarded_server(create_app(base, "tiny", max_body_bytes=20_000),
                        ConnectionLimits()) as (url, _):
        with pytest.raises(ServingError, match=r"^413 from .*: Request body of \d+ bytes or "
                           r"more exceeds the limit of 20000 bytes") as info:
            Client(url, "tiny", timeout=10).predict(big)
    assert info.value.status_code == 413


def test_client_reads_the_answer_of_a_server_that_closes_mid_body():
    # As a server does that answers before reading the body and closes (TF
    # Serving, or uvicorn when asked to close): the client's send then fails.
    listener = socket.create_server(("127.0.0.1", 0))
    answer = b'{"error": "Request body too large"}'

    def answer_and_close():
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: %d\r\n"
                         b"Connection: close\r\n\r\n%s" % (len(answer), answer))

    thread = threading.Thread(target=answer_and_close, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with pytest.raises(ServingError, match=r"^413 from .*: Request body too large$"):
            Client(url, "m", timeout=10).predict(np.zeros((250_000, 8), "float32"))
    finally:
        thread.join(10)
        listener.close()


# -- 3. deep nesting: a 400, at any depth -----------------------------------------


@pytest.mark.parametrize("depth", [33, 65, 700, 980])
def test_deeply_nested_string_input_is_a_400(base, depth):
    body = b'{"signature_name": "lengths", "inputs": ' + b"[" * depth + b'"a"' + (
        b"]" * depth) + b"}"
    with TestClient(create_app(base, "tiny")) as client:
        response = client.post("/v1/models/tiny:predict", content=body)
    assert response.status_code == 400, response.text[:300]
    assert re.search(r"Input 'text' is nested more than 32 lists deep; the signature "
                     r"expects rank 1|JSON Parse error: maximum recursion depth",
                     response.json()["error"]), response.json()["error"]
    for inputs in (STRING_INPUT, ANY_FLOAT):
        with pytest.raises(ServingError, match=r"nested more than 32 lists deep|recursion"):
            codec.decode_inputs(codec.parse_predict_request(body), inputs)


# -- 2. slow connections, saturation, log floods ----------------------------------


@contextlib.contextmanager
def open_file_limit(soft: int):
    old = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, old)


HEADERS = b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\n"
BODY = HEADERS + b'Content-Length: 1000\r\n\r\n{"instances": ['


def new_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.settimeout(10)
    return sock


def open_slow_connections(port: int, count: int, parts=(HEADERS, BODY), socks=None
                          ) -> list[socket.socket]:
    """`count` connections that stop mid-request, in their headers or body
    (`parts`, in turn), on new sockets or on `socks`."""
    slow = []
    for i in range(count):
        sock = socks[i] if socks else new_socket()
        slow.append(sock)
        sock.connect(("127.0.0.1", port))
        sock.sendall(parts[i % len(parts)])
    return slow


def readable(socks: list[socket.socket]) -> set[socket.socket]:
    """The sockets with data or a close to read (poll: fds may pass 1024)."""
    poller = select.poll()
    by_fd = {s.fileno(): s for s in socks}
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    return {by_fd[fd] for fd, _ in poller.poll(0)}


def served_or_closed(slow: list[socket.socket], guard) -> int:
    """How many slow connections the server holds or has closed."""
    return len(readable(slow)) + len(guard.connections)


PARSERS = pytest.mark.parametrize("http", ["h11", "httptools"])


def _check_served_under_slow_connections(base, count: int, cap: int, http: str = "auto"):
    # The files left to the server fit its `cap` connections and the sockets
    # asyncio may accept before the guard sees them: without the cap, the
    # server runs out of files long before `count` and accepts no one else.
    limits = ConnectionLimits(max_connections=cap, header_timeout=120, body_timeout=120)
    app = create_app(base, "tiny")
    with guarded_server(app, limits, http) as (url, guard):
        port = int(url.rsplit(":", 1)[1])
        clients = [new_socket() for _ in range(count)]
        well_behaved = new_socket()
        in_use = len(os.listdir("/proc/self/fd"))
        try:
            with open_file_limit(in_use + cap + server._BACKLOG + 40):
                slow = open_slow_connections(port, count, socks=clients)
                wait_for(lambda: served_or_closed(slow, guard) >= count)
                assert len(guard.connections) <= cap
                well_behaved.connect(("127.0.0.1", port))
                body = orjson.dumps({"instances": FEATURES.tolist()})
                well_behaved.sendall(
                    b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\nConnection: close"
                    b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                answer = read_until_closed(well_behaved)
        finally:
            for sock in (*clients, well_behaved):
                sock.close()
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]
    total = orjson.loads(answer.split(b"\r\n\r\n", 1)[1])["predictions"]
    np.testing.assert_allclose(total, FEATURES.sum(axis=1), rtol=1e-6)


@PARSERS
def test_a_client_is_served_while_many_slow_connections_are_open(base, http):
    _check_served_under_slow_connections(base, count=1000, cap=300, http=http)


@PARSERS
@pytest.mark.parametrize("part", [HEADERS, BODY], ids=["headers", "body"])
def test_slow_connections_past_the_cap_are_closed_oldest_first_with_503(base, part, http):
    limits = ConnectionLimits(max_connections=20, header_timeout=120, body_timeout=120)
    with guarded_server(create_app(base, "tiny"), limits, http) as (url, guard):
        port = int(url.rsplit(":", 1)[1])
        slow = []
        try:
            for _ in range(60):
                slow += open_slow_connections(port, 1, [part])
                # Each one's request is under way before the next connects.
                table = guard.headers if part is HEADERS else guard.bodies
                wait_for(lambda s=slow, t=table: len(readable(s)) + len(t) == len(s))
            assert len(guard.connections) == 20
            evicted = [read_until_closed(s) for s in slow[:40]]  # the oldest
            assert all(answer.startswith(b"HTTP/1.1 503 ") for answer in evicted)
            assert b"too many connections open; this one waited longest" in evicted[0]
            assert not readable(slow[40:])  # the newest: still open
            answer = Client(url, "tiny", timeout=10).predict(FEATURES)["total"]
            np.testing.assert_allclose(answer, FEATURES.sum(axis=1), rtol=1e-6)
            assert len(readable(slow[40:])) == 1  # the oldest made way for it
        finally:
            for sock in slow:
                sock.close()


@PARSERS
def test_slow_headers_and_bodies_time_out_with_408(base, caplog, http):
    limits = ConnectionLimits(header_timeout=0.3, body_timeout=0.3)
    with guarded_server(create_app(base, "tiny"), limits, http) as (url, guard):
        slow = open_slow_connections(int(url.rsplit(":", 1)[1]), 2)
        idle = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])))
        try:
            headers, body = (read_until_closed(s) for s in slow)
            never = read_until_closed(idle)
        finally:
            for sock in (*slow, idle):
                sock.close()
        wait_for(lambda: not guard.connections)
    assert headers.startswith(b"HTTP/1.1 408 ") and never.startswith(b"HTTP/1.1 408 ")
    assert b"did not send its request line and headers within 0.3 s" in headers
    assert body.startswith(b"HTTP/1.1 408 ")
    assert b"did not send its request body within 0.3 s" in body
    assert "Internal error" not in caplog.text  # the app saw a plain disconnect


@PARSERS
def test_oversized_headers_are_refused_and_pipelined_requests_answered(base, http):
    with guarded_server(create_app(base, "tiny"), ConnectionLimits(), http) as (url, guard):
        port = int(url.rsplit(":", 1)[1])
        # h11 answers its own 400; for httptools, which sets no bound, ours.
        status = b"400" if http == "h11" else b"431"
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(HEADERS + b"X-Long: " + b"a" * 20000 + b"\r\n\r\n")
            answer = read_until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(HEADERS + b"X-Long: ")  # then a value that never ends
            try:
                for _ in range(40):
                    sock.sendall(b"a" * 500)
                    time.sleep(0.005)
            except OSError:  # closed by the server before the last piece
                pass
            answer = read_until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]
        body = orjson.dumps({"instances": FEATURES.tolist()})
        request = (b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\n"
                   b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(request * 2 + request.replace(b"Host: x", b"Host: x\r\n"
                                                       b"Connection: close"))
            answers = read_until_closed(sock)
        assert answers.count(b"HTTP/1.1 200 ") == 3, answers[:300]
        wait_for(lambda: not guard.connections)


def test_saturated_server_answers_503(base, monkeypatch):
    release = threading.Event()
    real_predict = rest_api.predict

    def slow_predict(*args):
        release.wait(30)
        return real_predict(*args)

    monkeypatch.setattr(rest_api, "predict", slow_predict)
    app = create_app(base, "tiny", max_requests=1)
    with guarded_server(app, ConnectionLimits()) as (url, _):
        first = {}
        thread = threading.Thread(target=lambda: first.update(
            response=httpx.post(f"{url}/v1/models/tiny:predict", timeout=30,
                                json={"instances": FEATURES.tolist()})))
        thread.start()
        try:
            wait_for(lambda: app.state.limits.in_progress == 1)
            busy = httpx.post(f"{url}/v1/models/tiny:predict", timeout=30,
                              json={"instances": FEATURES.tolist()})
        finally:
            release.set()
            thread.join(30)
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
    assert "Server busy: 1 requests are in progress (the --max-requests limit)" in (
        busy.json()["error"])
    assert first["response"].status_code == 200


def test_identical_log_lines_are_rate_limited():
    now = [0.0]
    records = []
    log = logging.getLogger("kerasmtl.test.repeats")
    log.propagate = False
    handler = logging.Handler()
    handler.emit = records.append
    log.addHandler(handler)
    log.addFilter(RepeatFilter(period=60.0, clock=lambda: now[0]))
    try:
        for i in range(10_000):
            log.warning("socket.accept() out of system resource (%d)", i)
            log.warning("Invalid HTTP request received.")
        now[0] = 61.0
        log.warning("Invalid HTTP request received.")
    finally:
        log.removeHandler(handler)
    assert [r.getMessage() for r in records] == [
        "socket.accept() out of system resource (0)",
        "Invalid HTTP request received.",
        "Invalid HTTP request received. (9999 more like this in the last 61 s were not "
        "logged)",
    ]
    uvicorn_config(lambda *args: None, ConnectionLimits())
    for name in ("uvicorn.error", "asyncio", "kerasmtl.serving"):
        assert any(isinstance(f, RepeatFilter) for f in logging.getLogger(name).filters)


def test_invalid_limits():
    with pytest.raises(ValueError, match=r"`max_connections`. Expected an int >= 1"):
        ConnectionLimits(max_connections=0)
    with pytest.raises(ValueError, match=r"`header_timeout`. Expected a number of seconds"):
        ConnectionLimits(header_timeout=0)
    with pytest.raises(ValueError, match=r"`max_requests`. Expected an int >= 1"):
        create_app("/nonexistent", "m", max_requests=0)


@pytest.mark.large  # `kerasmtl serve` in a subprocess, 1,100 connections
def test_kerasmtl_serve_under_an_open_file_limit_serves_past_1000_slow_connections(
        base, tmp_path):
    # The server's hard limit is 1024 files, so `serve` lowers its cap to fit;
    # 1,100 slow connections would otherwise exhaust it and lock everyone out.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = open(tmp_path / "server.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "kerasmtl.cli", "serve", base, "--name", "tiny",
         "--port", str(port), "--header-timeout", "120", "--body-timeout", "120"],
        stdout=log, stderr=subprocess.STDOUT,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024)),
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    slow = []
    try:
        client = Client(f"http://127.0.0.1:{port}", "tiny", timeout=10)

        def up():
            assert process.poll() is None, (tmp_path / "server.log").read_text()
            try:
                return client.status() is not None
            except ConnectionError:
                return False

        wait_for(up, timeout=120)
        slow = open_slow_connections(port, 1100)
        for _ in range(3):
            assert client.predict(FEATURES)["total"].tolist() == FEATURES.sum(1).tolist()
    finally:
        for sock in slow:
            sock.close()
        process.terminate()
        process.wait(30)
        log.close()
    text = (tmp_path / "server.log").read_text()
    assert "The open-file limit is 1024, too low for --max-connections 1000" in text
    assert text.count("\n") < 20, text[-3000:]  # no flood of tracebacks
