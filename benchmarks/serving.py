"""Throughput and latency of `kerasmtl serve` against calling the model in-process.

One run exports a shared-bottom multi-task model, starts `kerasmtl serve` on
it in a subprocess (as a user would run it), and measures, for batch sizes 1
and 32 and for 1 and 8 concurrent clients:

- over HTTP: requests per second, rows per second and the p50/p99 latency of
  `POST /v1/models/bench:predict` in TF Serving's row format
  (`{"instances": [...]}`), each client a thread with its own keep-alive
  connection, sending a body encoded once beforehand (the client's JSON
  encoding is not the server's cost) and reading the whole answer;
- in-process: the same with the loaded SavedModel's `serving_default`
  signature called directly from the same number of threads, numpy in and
  numpy out (what a Python program that embeds the model pays);
- over gRPC (`--grpc-port`): the same with TF Serving's official client stub
  (`PredictionServiceStub.Predict` from `tensorflow-serving-api`), each client
  with its own channel and a `PredictRequest` built once beforehand;
- the ratio of each served throughput to the direct call's: what fraction of
  it the server keeps. The target is >= 0.7 at batch 32 with 8 clients (REST);
- the CPU time per request over the timed seconds (Linux only): of this
  process for the direct call, of the server and this process (the clients)
  for the served one. When the clients keep every core busy, the ratio is
  about the ratio of these two, and they vary less than requests/s on a
  machine shared with other work.

Then the server's resident memory (VmRSS) is read after every `--memory-step`
of `--memory-requests` sequential REST requests (default 10,000 at batch 32):
it should stay flat once warm.

With `--batching`, a second `kerasmtl serve --enable-batching` (TF Serving's
default batching parameters: timeout 0, one batch thread per CPU) runs beside
the first, and REST at batch 1 is measured with 8 and 32 clients on both
servers, one after the other: requests/s, p50/p99 latency, CPU ms per request
and the gain (batching req/s / plain req/s). Its first answer is checked equal
to the direct call (a lone request runs alone), and the numerical effect of
merging is printed: the largest difference between 32 rows run in one call
and each row run alone, in-process.

The server's own cost per request is nearly fixed (HTTP in Python, the JSON
request parsed and the answer written by orjson, the values checked in numpy),
so the ratio depends on how heavy the model is: `--trunk-units` sets it. The default model is the
shared-bottom MLP of `sharing_cost.py` (128 features -> Dense 512, 512, 256,
three tasks with 64-unit towers). Each configuration runs `--seconds` after a
warm-up; the first answer of each is checked against the direct call (every
output, exactly). Clients and server share the machine's CPUs, as they do
when a server is benchmarked on one machine. Nothing here asserts a number.

Usage:
    python benchmarks/serving.py           # full run, about a minute
    python benchmarks/serving.py --quick   # tiny model, seconds (smoke test)
    python benchmarks/serving.py --memory-requests 0   # skip the memory run
    python benchmarks/serving.py --batching --batch-sizes 1 --clients 8 32 \
        --memory-requests 0 --seconds 2      # batching on vs off at batch 1
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import sys
import tempfile
import tracemalloc
from collections.abc import Sequence
from dataclasses import dataclass

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import orjson  # noqa: E402
import tensorflow as tf  # noqa: E402

import kerasmtl as mtl  # noqa: E402
from kerasmtl.serving import codec  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serving_clients import (  # noqa: E402
    MODEL_NAME,
    check_answer,
    check_grpc_answer,
    direct_call,
    free_port,
    grpc_call,
    grpc_request,
    http_call,
    resident_kib,
    run_clients,
    start_server,
)

TARGET_BATCH, TARGET_CLIENTS, TARGET_RATIO = 32, 8, 0.7


@dataclass
class Config:
    batch_sizes: tuple[int, ...] = (1, 32)
    clients: tuple[int, ...] = (1, 8)
    features: int = 128
    trunk_units: tuple[int, ...] = (512, 512, 256)
    head_units: int = 64
    seconds: float = 3.0
    warmup_seconds: float = 0.5
    seed: int = 0
    quick: bool = False
    memory_requests: int = 10_000
    memory_step: int = 2_000
    batching: bool = False
    batching_clients: tuple[int, ...] = (8, 32)


QUICK = dict(features=8, trunk_units=(16,), head_units=4, seconds=0.3,
             warmup_seconds=0.1, memory_requests=200, memory_step=100)


def build_model(config: Config) -> mtl.MultiTaskModel:
    hidden = [config.head_units] if config.head_units else []
    tasks = [
        mtl.tasks.Classification("species", num_classes=3, hidden_layers=hidden),
        mtl.tasks.Regression("size", hidden_layers=hidden),
        mtl.tasks.MultiLabel("tags", num_labels=5, hidden_layers=hidden),
    ]
    inputs = keras.Input((config.features,), name="features")
    x = inputs
    for i, units in enumerate(config.trunk_units):
        x = keras.layers.Dense(units, activation="relu", name=f"trunk_{i}")(x)
    return mtl.sharing.hard_sharing(inputs, x, tasks, name="bench")


def print_server_memory(port: int, pid: int, body: bytes, config: Config) -> None:
    """Server RSS every `memory_step` of `memory_requests` sequential requests."""
    if config.memory_requests <= 0 or resident_kib(pid) is None:
        return
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    path = f"/v1/models/{MODEL_NAME}:predict"
    readings = [(0, resident_kib(pid))]
    for done in range(1, config.memory_requests + 1):
        connection.request("POST", path, body=body)
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status} in the memory run")
        if done % config.memory_step == 0 or done == config.memory_requests:
            readings.append((done, resident_kib(pid)))
    connection.close()
    print(f"server memory over {config.memory_requests} sequential REST requests "
          f"({len(body) / 1024:.1f} KB bodies), VmRSS MiB after N requests:")
    print("  " + "  ".join(f"{n}: {kib / 1024:.1f}" for n, kib in readings))
    warm = readings[1][1]
    print(f"  growth after the first {readings[1][0]} requests: "
          f"{(readings[-1][1] - warm) / 1024:+.1f} MiB")


def environment_lines() -> list[str]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    devices = ", ".join(d.device_type for d in tf.config.list_physical_devices())
    return [
        f"python {platform.python_version()}, tensorflow {tf.__version__}, "
        f"keras {keras.__version__} ({keras.backend.backend()}), numpy {np.__version__}",
        f"CPUs: {os.cpu_count()} (usable {usable}), {platform.machine()}, "
        f"devices: {devices}",
    ]


def parse_args(argv: Sequence[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(
        description="Requests/s and latency of kerasmtl serve vs a direct call."
    )
    default = Config()
    parser.add_argument("--quick", action="store_true",
                        help="tiny model and short runs, for a smoke test")
    parser.add_argument("--batch-sizes", type=int, nargs="+")
    parser.add_argument("--clients", type=int, nargs="+")
    parser.add_argument("--features", type=int, help=f"default {default.features}")
    parser.add_argument("--trunk-units", type=int, nargs="+",
                        help=f"default {' '.join(map(str, default.trunk_units))}")
    parser.add_argument("--head-units", type=int, help=f"default {default.head_units}")
    parser.add_argument("--seconds", type=float,
                        help=f"timed seconds per configuration; default {default.seconds}")
    parser.add_argument("--seed", type=int, default=default.seed)
    parser.add_argument("--memory-requests", type=int,
                        help=f"requests of the memory run (0: none); default "
                        f"{default.memory_requests}")
    parser.add_argument("--batching", action="store_true",
                        help="also compare REST at batch 1 with 8 and 32 clients on "
                        "a second server run with --enable-batching")
    args = parser.parse_args(argv)
    values = dict(QUICK) if args.quick else {}
    for field in ("features", "head_units", "seconds", "memory_requests"):
        if getattr(args, field) is not None:
            values[field] = getattr(args, field)
    for field in ("batch_sizes", "clients", "trunk_units"):
        if getattr(args, field) is not None:
            values[field] = tuple(getattr(args, field))
    config = Config(seed=args.seed, quick=args.quick, batching=args.batching, **values)
    if min(config.batch_sizes) < 1 or min(config.clients) < 1 or config.seconds <= 0:
        parser.error("--batch-sizes and --clients must be >= 1, --seconds > 0")
    if config.memory_requests < 0:
        parser.error("--memory-requests must be >= 0")
    return config


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    keras.utils.set_random_seed(config.seed)
    print("== kerasmtl serving: kerasmtl serve over HTTP vs a direct in-process call ==")
    for line in environment_lines():
        print(line)
    print(
        f"model: {config.features} features -> Dense{list(config.trunk_units)}, three "
        f"tasks with {config.head_units or 'no'}-unit towers; row format requests; "
        f"{config.seconds:g} s per configuration after {config.warmup_seconds:g} s "
        "of warm-up" + ("  [--quick: tiny model, figures mean nothing]" if config.quick
                        else "")
    )

    with tempfile.TemporaryDirectory() as base:
        version_dir = mtl.export.export_saved_model(build_model(config), base)
        signature = tf.saved_model.load(version_dir).signatures["serving_default"]
        port, grpc_port = free_port(), free_port()
        server = start_server(base, port, grpc_port)
        try:
            rows = []
            rng = np.random.default_rng(config.seed)
            for batch in config.batch_sizes:
                x = rng.normal(size=(batch, config.features)).astype("float32")
                body = json.dumps({"instances": x.tolist()}).encode()
                expected = {k: v.numpy() for k, v in signature(
                    features=tf.constant(x)).items()}
                check_answer(port, body, expected)
                request = grpc_request(x)
                check_grpc_answer(grpc_port, request, expected)
                for clients in config.clients:
                    direct = run_clients(direct_call(signature, x), clients,
                                         config.warmup_seconds, config.seconds,
                                         pids=[os.getpid()])
                    served = run_clients(http_call(port, body), clients,
                                         config.warmup_seconds, config.seconds,
                                         pids=[server.pid, os.getpid()])
                    grpc_served = run_clients(grpc_call(grpc_port, request), clients,
                                              config.warmup_seconds, config.seconds,
                                              pids=[server.pid, os.getpid()])
                    rows.append((batch, clients, len(body), direct, served, grpc_served))
            print_table(rows, config)
            print_server_memory(port, server.pid, body, config)
            if config.batching:
                compare_batching(base, signature, port, server.pid, config)
        finally:
            server.terminate()
            server.wait(30)

    print_decoding_memory(config)
    return 0


def print_table(rows, config: Config) -> None:
    print(
        f"{'batch':>5} {'clients':>7} {'body KB':>7} | {'direct req/s':>12} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'CPU ms':>6} | {'REST req/s':>10} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'CPU ms':>6} {'ratio':>5} | {'gRPC req/s':>10} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'CPU ms':>6} {'ratio':>5}"
    )
    ratios = {}
    for batch, clients, size, direct, served, grpc_served in rows:
        ratio = served.rps / direct.rps
        grpc_ratio = grpc_served.rps / direct.rps
        ratios[(batch, clients)] = ratio
        d50, d99 = np.percentile(direct.latencies_ms, [50, 99])
        s50, s99 = np.percentile(served.latencies_ms, [50, 99])
        g50, g99 = np.percentile(grpc_served.latencies_ms, [50, 99])
        print(
            f"{batch:>5} {clients:>7} {size / 1024:>7.1f} | {direct.rps:>12.0f} "
            f"{d50:>7.2f} {d99:>7.2f} {direct.cpu_text():>6} | {served.rps:>10.0f} "
            f"{s50:>7.2f} {s99:>7.2f} {served.cpu_text():>6} {ratio:>5.2f} | "
            f"{grpc_served.rps:>10.0f} {g50:>7.2f} {g99:>7.2f} "
            f"{grpc_served.cpu_text():>6} {grpc_ratio:>5.2f}"
        )
    print("ratio = served req/s / direct req/s at the same batch and number of "
          "clients; a REST and a gRPC answer per batch size were checked equal to "
          "the direct call")
    print("CPU ms = CPU time per request: of this process (direct), of the server "
          "and the clients (served)")
    key = (TARGET_BATCH, TARGET_CLIENTS)
    if key in ratios:
        verdict = "MET" if ratios[key] >= TARGET_RATIO else "NOT MET"
        print(
            f"verdict: batch {TARGET_BATCH}, {TARGET_CLIENTS} clients REST ratio "
            f"{ratios[key]:.2f} vs target >= {TARGET_RATIO}: {verdict}"
            + (" (--quick: not a measurement)" if config.quick else "")
        )
    else:
        print(f"verdict: batch {TARGET_BATCH} with {TARGET_CLIENTS} clients not measured")


def compare_batching(base: str, signature, port: int, pid: int, config: Config) -> None:
    """REST at batch 1 on the plain server and on one with --enable-batching."""
    rng = np.random.default_rng(config.seed + 1)
    x = rng.normal(size=(1, config.features)).astype("float32")
    body = json.dumps({"instances": x.tolist()}).encode()
    expected = {k: v.numpy() for k, v in signature(features=tf.constant(x)).items()}
    batched_port = free_port()
    batched = start_server(base, batched_port, free_port(), ["--enable-batching"])
    try:
        check_answer(batched_port, body, expected)
        rows = []
        for clients in config.batching_clients:
            plain = run_clients(http_call(port, body), clients, config.warmup_seconds,
                                config.seconds, pids=[pid, os.getpid()])
            merged = run_clients(http_call(batched_port, body), clients,
                                 config.warmup_seconds, config.seconds,
                                 pids=[batched.pid, os.getpid()])
            rows.append((clients, plain, merged))
    finally:
        batched.terminate()
        batched.wait(30)
    print("batching: REST at batch 1, kerasmtl serve vs kerasmtl serve "
          "--enable-batching (TF Serving's defaults: timeout 0, max_batch_size 1000, "
          "one batch thread per CPU)")
    print(f"{'clients':>7} | {'plain req/s':>11} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'CPU ms':>6} | {'batched req/s':>13} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'CPU ms':>6} | {'gain':>5}")
    for clients, plain, merged in rows:
        p50, p99 = np.percentile(plain.latencies_ms, [50, 99])
        b50, b99 = np.percentile(merged.latencies_ms, [50, 99])
        print(f"{clients:>7} | {plain.rps:>11.0f} {p50:>7.2f} {p99:>7.2f} "
              f"{plain.cpu_text():>6} | {merged.rps:>13.0f} {b50:>7.2f} {b99:>7.2f} "
              f"{merged.cpu_text():>6} | {merged.rps / plain.rps:>5.2f}")
    print("gain = batched req/s / plain req/s"
          + (" (--quick: not a measurement)" if config.quick else ""))
    print_merging_effect(signature, config)


def print_merging_effect(signature, config: Config, rows: int = 32) -> None:
    """Largest difference between `rows` rows run in one call and each alone."""
    rng = np.random.default_rng(config.seed + 2)
    x = rng.normal(size=(rows, config.features)).astype("float32")
    merged = {k: v.numpy() for k, v in signature(features=tf.constant(x)).items()}
    alone = [{k: v.numpy() for k, v in signature(features=tf.constant(x[i:i + 1])).items()}
             for i in range(rows)]
    worst_abs = worst_rel = 0.0
    exact = []
    for name, value in merged.items():
        each = np.concatenate([a[name] for a in alone])
        if value.dtype.kind == "f":
            diff = np.abs(value.astype("float64") - each)
            worst_abs = max(worst_abs, float(diff.max()))
            worst_rel = max(worst_rel, float((diff / np.maximum(np.abs(each), 1e-30)).max()))
        else:
            exact.append(f"{name} {'equal' if np.array_equal(value, each) else 'DIFFER'}")
    print(f"numerical effect of merging ({rows} rows in one call vs each row alone, "
          f"in-process): float outputs differ by at most {worst_abs:.2g} absolute, "
          f"{worst_rel:.2g} relative; {', '.join(exact) or 'no integer outputs'}")


def decoding_memory_bodies(features: int) -> dict[str, bytes]:
    """A valid batch, and bodies built to make decoding costly (issue 22)."""
    rows = 32
    row = orjson.dumps(np.linspace(-1, 1, features).tolist())
    text = b'"' + b"a" * 100_000 + b'"'
    return {
        "valid: 32 rows of floats": b'{"instances": [' + b",".join([row] * rows) + b"]}",
        "100 KB string among floats": b'{"instances": [' + b",".join([row] * rows)
        + b",[" + b"1," * (features - 1) + text + b"]]}",
        "20k empty lists": b'{"inputs": [' + b",".join([b"[]"] * 20_000) + b"]}",
        "4 MB string": b'{"instances": [[' + b'"' + b"a" * 4_000_000 + b'"]]}',
    }


def print_decoding_memory(config: Config) -> None:
    """Peak memory (tracemalloc) of parsing and decoding one body, per body byte."""
    inputs = {"features": codec.TensorInfo("features", "DT_FLOAT", (-1, config.features))}
    print(f"decoding memory (peak bytes per body byte; bound "
          f"{codec.MEMORY_PER_BODY_BYTE}):")
    for name, body in decoding_memory_bodies(config.features).items():
        tracemalloc.start()
        try:
            codec.decode_inputs(codec.parse_predict_request(body), inputs)
            outcome = "200"
        except codec.ServingError:
            outcome = "400"
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(f"  {name:<28} {len(body) / 1024:>8.1f} KB  {peak / len(body):>6.1f}x  "
              f"{outcome}")


if __name__ == "__main__":
    sys.exit(main())
