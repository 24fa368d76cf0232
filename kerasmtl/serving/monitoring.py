"""Request metrics (Prometheus text format) and JSON access logs for serving.

`Metrics` counts the requests of the REST and gRPC APIs and their latency, in
the metric names and units of TF Serving (whose Prometheus exporter turns
`/tensorflow/serving/request_count` into `:tensorflow:serving:request_count`):

    :tensorflow:serving:request_count{model_name, version, API,
        signature_name, entrypoint, status}                      counter
    :tensorflow:serving:request_latency{model_name, version, API,
        entrypoint}                       histogram, in microseconds

TF Serving labels counts by `model_name` and `status` and latencies by
`model_name`, `API` and `entrypoint`; the version and signature are added
here. `status` is the canonical code TF Serving names (`OK`,
`INVALID_ARGUMENT`, `NOT_FOUND`, ...; a REST status maps to one as in
`STATUS_NAMES`), `API` is `Predict`, `GetModelMetadata` or `GetModelStatus`,
and `entrypoint` is `REST` or `GRPC`. Labels hold only what the server knows
(a served model, a loaded version, an existing signature), never what a
client wrote, so a client cannot grow the number of series: a request for an
unknown model counts under `model_name=""`.

`access_line` is the JSON line the `kerasmtl.serving.access` logger writes
per request when access logs are on (`serve(access_log=True)`).
"""

from __future__ import annotations

import bisect
import datetime
import json
import threading
import time
from dataclasses import dataclass, field

REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
# TF Serving's buckets: 10 us x 1.8^i, 33 of them (~20 minutes).
LATENCY_BUCKETS_US = tuple(10 * 1.8**i for i in range(33))
ACCESS_LOGGER = "kerasmtl.serving.access"

# HTTP status -> the canonical code TF Serving's REST handler maps it from.
STATUS_NAMES = {
    200: "OK",
    400: "INVALID_ARGUMENT",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    413: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
}


@dataclass
class RequestRecord:
    """What is known of one request, filled in as it is resolved.

    Args:
        entrypoint: str. `"REST"` or `"GRPC"`.
        api: str. `"Predict"`, `"GetModelMetadata"`, `"GetModelStatus"`, or
            `""` before the path is understood.
        model: str. The served model asked for, `""` until known.
        version: str. The version that answered, `""` until known.
        signature: str. The signature run, `""` until known.
    """

    entrypoint: str
    api: str = ""
    model: str = ""
    version: str = ""
    signature: str = ""
    start: float = field(default_factory=time.perf_counter)


class Metrics:
    """Request counts and latency histograms of one server (thread-safe).

    Examples:

    >>> metrics = Metrics()
    >>> record = RequestRecord("REST", "Predict", "tab", "1", "serving_default")
    >>> metrics.record(record, "OK", seconds=0.002)
    0.002
    >>> text = metrics.exposition()
    >>> 'status="OK"} 1' in text and 'le="+Inf"} 1' in text
    True
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._counts: dict[tuple, int] = {}
        # labels -> [count per bucket (not cumulative), count past the last, sum]
        self._latency: dict[tuple, list] = {}

    def record(self, record: RequestRecord, status: str,
               seconds: float | None = None) -> float:
        """Counts one finished request; returns its latency in seconds
        (measured from `record.start` unless given)."""
        if seconds is None:
            seconds = time.perf_counter() - record.start
        micros = seconds * 1e6
        count_key = (record.model, record.version, record.api, record.signature,
                     record.entrypoint, status)
        latency_key = (record.model, record.version, record.api, record.entrypoint)
        with self._lock:
            self._counts[count_key] = self._counts.get(count_key, 0) + 1
            add_to_histogram(self._latency, latency_key, LATENCY_BUCKETS_US, micros)
        return seconds

    def exposition(self) -> str:
        """The metrics in Prometheus' text format (version 0.0.4)."""
        with self._lock:
            counts = sorted(self._counts.items())
            latency = sorted((k, (list(v[0]), v[1], v[2]))
                             for k, v in self._latency.items())
        lines = [
            f"# HELP {REQUEST_COUNT} The total number of requests.",
            f"# TYPE {REQUEST_COUNT} counter",
        ]
        count_names = ("model_name", "version", "API", "signature_name",
                       "entrypoint", "status")
        for key, value in counts:
            lines.append(f"{REQUEST_COUNT}{label_set(count_names, key)} {value}")
        lines += [
            f"# HELP {REQUEST_LATENCY} Distribution of wall time (in microseconds) "
            "for Tensorflow Serving request.",
            f"# TYPE {REQUEST_LATENCY} histogram",
        ]
        latency_names = ("model_name", "version", "API", "entrypoint")
        for key, cell in latency:
            lines += histogram_lines(REQUEST_LATENCY, latency_names, key,
                                     LATENCY_BUCKETS_US, cell)
        return "\n".join(lines) + "\n"


def access_line(method: str, path: str, record: RequestRecord, status_code: int,
                seconds: float, bytes_in: int, bytes_out: int) -> str:
    """One request's access log line: a JSON object.

    Examples:

    >>> record = RequestRecord("REST", "Predict", "tab", "1", "serving_default")
    >>> line = json.loads(access_line("POST", "/v1/models/tab:predict", record,
    ...                               200, 0.0125, 52, 310))
    >>> line["status"], line["latency_ms"], line["model"], line["bytes"]
    (200, 12.5, 'tab', 310)
    """
    return json.dumps({
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="milliseconds"),
        "method": method,
        "path": path[:512],  # a client's path: bounded
        "model": record.model,
        "version": record.version,
        "api": record.api,
        "signature": record.signature,
        "status": status_code,
        "latency_ms": round(seconds * 1e3, 3),
        "bytes_in": bytes_in,
        "bytes": bytes_out,
        "entrypoint": record.entrypoint,
    })


def _bucket_index(micros: float, bounds=LATENCY_BUCKETS_US) -> int:
    """The first bucket whose upper bound (inclusive, as Prometheus' `le`)
    holds `micros`; `len(bounds)` past the last."""
    return bisect.bisect_left(bounds, micros)


def add_to_histogram(cells: dict, key: tuple, bounds, value: float) -> None:
    """Counts `value` in the histogram `cells[key]`: `[count per bucket (not
    cumulative), count past the last bound, sum]` (the caller holds its lock)."""
    cell = cells.get(key)
    if cell is None:
        cell = cells[key] = [[0] * len(bounds), 0, 0.0]
    index = _bucket_index(value, bounds)
    if index < len(bounds):
        cell[0][index] += 1
    else:
        cell[1] += 1
    cell[2] += value


def histogram_lines(name: str, label_names: tuple, key: tuple, bounds, cell) -> list[str]:
    """One Prometheus histogram series (`_bucket`, `_sum`, `_count` lines)
    from an `add_to_histogram` cell."""
    buckets, overflow, total = cell
    lines, cumulative = [], 0
    for bound, count in zip(bounds, buckets):
        cumulative += count
        labels = label_set(label_names + ("le",), key + (f"{bound:.10g}",))
        lines.append(f"{name}_bucket{labels} {cumulative}")
    cumulative += overflow
    lines.append(f"{name}_bucket{label_set(label_names + ('le',), key + ('+Inf',))} "
                 f"{cumulative}")
    lines.append(f"{name}_sum{label_set(label_names, key)} {total:.10g}")
    lines.append(f"{name}_count{label_set(label_names, key)} {cumulative}")
    return lines


def label_set(names, values) -> str:
    """Prometheus labels `{name="value",...}`, values escaped."""
    pairs = ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values))
    return "{" + pairs + "}"


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
