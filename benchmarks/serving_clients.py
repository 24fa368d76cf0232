"""The load side of `benchmarks/serving.py`: client threads that call a
model in a loop and time each call (`run_clients`), the calls themselves
(in-process signature, REST, gRPC), answer checks against the direct call,
and starting `kerasmtl serve` in a subprocess. Linux's /proc gives the CPU
time and resident memory of the processes measured."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

MODEL_NAME = "bench"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Result:
    requests: int
    seconds: float
    latencies_ms: np.ndarray
    cpu_seconds: float | None = None  # of the processes measured, while timed

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def cpu_text(self) -> str:
        if self.cpu_seconds is None or not self.requests:
            return "-"
        return f"{self.cpu_seconds / self.requests * 1e3:.2f}"


def cpu_seconds(pids: Sequence[int]) -> float | None:
    """User + system CPU seconds of processes `pids` so far; None off Linux."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def run_clients(
    make_call: Callable[[], Callable[[], None]],
    clients: int,
    warmup: float,
    seconds: float,
    pids: Sequence[int] = (),
) -> Result:
    """`clients` threads call their own `make_call()` in a loop; times them.

    The CPU time of processes `pids` is measured over the timed seconds.
    """
    # Both are set once every client is ready; until then all calls warm up.
    start_at, stop_at = [float("inf")], [float("inf")]
    latencies: list[list[float]] = [[] for _ in range(clients)]
    barrier = threading.Barrier(clients + 1)
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            call = make_call()
            barrier.wait()
            while time.perf_counter() < start_at[0]:  # warm-up, not recorded
                call()
            while (now := time.perf_counter()) < stop_at[0]:
                call()
                latencies[i].append(time.perf_counter() - now)
        except BaseException as error:  # report it, do not hang the barrier
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        pass
    now = time.perf_counter()
    stop_at[0] = now + warmup + seconds
    start_at[0] = now + warmup
    cpu = None
    if not errors:
        time.sleep(warmup)
        before = cpu_seconds(pids)
        time.sleep(seconds)
        after = cpu_seconds(pids)
        if before is not None and after is not None:
            cpu = after - before
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    flat = np.array([x for per in latencies for x in per]) * 1e3
    return Result(len(flat), seconds, flat, cpu)


def direct_call(signature, x: np.ndarray) -> Callable[[], Callable[[], None]]:
    def make():
        def call():
            outputs = signature(features=tf.convert_to_tensor(x))
            {k: v.numpy() for k, v in outputs.items()}

        return call

    return make


def http_call(port: int, body: bytes) -> Callable[[], Callable[[], None]]:
    path = f"/v1/models/{MODEL_NAME}:predict"
    headers = {"Content-Type": "application/json"}

    def make():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

        def call():
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {data[:300]!r}")

        return call

    return make


def grpc_request(x: np.ndarray):
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL_NAME
    request.inputs["features"].CopyFrom(tf.make_tensor_proto(x))
    return request


def grpc_call(port: int, request) -> Callable[[], Callable[[], None]]:
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    def make():
        channel = grpc.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", -1)])
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

        def call():
            stub.Predict(request, timeout=60)

        return call

    return make


def check_grpc_answer(port: int, request, expected: dict) -> None:
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
            request, timeout=60)
        call_answer = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
    for name, want in expected.items():
        if not np.array_equal(call_answer[name], want):
            raise AssertionError(f"gRPC output '{name}' differs from the direct call")


def resident_kib(pid: int) -> int | None:
    """VmRSS of process `pid` in KiB; None off Linux."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def check_answer(port: int, body: bytes, expected: dict) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("POST", f"/v1/models/{MODEL_NAME}:predict", body=body)
    rows = json.loads(connection.getresponse().read())["predictions"]
    connection.close()
    for name, want in expected.items():
        got = np.array([row[name] for row in rows], dtype=want.dtype)
        if not np.array_equal(got, want):
            raise AssertionError(f"served output '{name}' differs from the direct call")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(base_path: str, port: int, grpc_port: int,
                 extra: Sequence[str] = ()) -> subprocess.Popen:
    command = [sys.executable, "-m", "kerasmtl.cli", "serve", base_path, "--name",
               MODEL_NAME, "--port", str(port), "--grpc-port", str(grpc_port),
               "--poll-seconds", "60", *extra]
    env = {**os.environ, "PYTHONPATH": REPO_ROOT + os.pathsep + os.environ.get(
        "PYTHONPATH", "")}
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"kerasmtl serve exited:\n{server.stderr.read()[-3000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", f"/v1/models/{MODEL_NAME}")
            if connection.getresponse().status == 200:
                return server
        except OSError:
            pass
        time.sleep(0.2)
    server.kill()
    raise RuntimeError("kerasmtl serve did not answer within 120 s")
