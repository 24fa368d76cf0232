"""Metrics of `--enable-batching`, in the names TensorFlow's batching ops
export (`tensorflow/core/kernels/batching_util/batch_resource_base.cc`,
`/tensorflow/serving/batching/...`, which TF Serving's Prometheus exporter
turns into `:tensorflow:serving:batching:...`):

    input_batch_size_v2{model_name, op_name}            histogram, rows per request
    processed_batch_size_v2{model_name, op_name, batch_size}
                                                        counter, merged calls per size
    batch_delay_us_v2{model_name, op_name, processed_batch_size}
                                                        histogram, queueing time (us)
    max_batch_size, batch_timeout_micros, max_enqueued_batches{model_name, op_name}
                                                        gauges, the parameters

`op_name` is the signature's name (TensorFlow names the batching op there).
Buckets are TensorFlow's: 1, 2, 4, ... 8192 rows, and 1, 2, 4, ... 2^26 us.
Labels hold only served models and signatures and the server's own batch
sizes, so the number of series stays bounded.
"""

from __future__ import annotations

import threading

from kerasmtl.serving.monitoring import add_to_histogram, histogram_lines, label_set

PREFIX = ":tensorflow:serving:batching:"
ROWS_BUCKETS = tuple(2.0**i for i in range(14))
DELAY_BUCKETS_US = tuple(2.0**i for i in range(27))
_OP = ("model_name", "op_name")


class BatchingMetrics:
    """What the batcher did, per model and signature (thread-safe).

    Args:
        parameters: the `BatchingParameters` (exported as gauges).

    Examples:

    >>> from kerasmtl.serving.batching import BatchingParameters
    >>> metrics = BatchingMetrics(BatchingParameters(max_batch_size=64))
    >>> metrics.request("tab", "serving_default", rows=3)
    >>> metrics.batch("tab", "serving_default", rows=5, delays_us=[120.0, 40.0])
    >>> text = metrics.exposition()
    >>> 'processed_batch_size_v2{model_name="tab",op_name="serving_default",batch_size="5"} 1' in text
    True
    >>> 'max_batch_size{model_name="tab",op_name="serving_default"} 64' in text
    True
    """

    def __init__(self, parameters):
        self.parameters = parameters
        self._lock = threading.Lock()
        self._input_rows: dict[tuple, list] = {}
        self._processed: dict[tuple, int] = {}
        self._delay: dict[tuple, list] = {}

    def request(self, model: str, signature: str, rows: int) -> None:
        """Counts one request entering the batcher with `rows` rows."""
        with self._lock:
            add_to_histogram(self._input_rows, (model, signature), ROWS_BUCKETS, rows)

    def batch(self, model: str, signature: str, rows: int, delays_us) -> None:
        """Counts one call of `rows` rows and its requests' queueing times."""
        key = (model, signature, str(rows))
        with self._lock:
            self._processed[key] = self._processed.get(key, 0) + 1
            for delay in delays_us:
                add_to_histogram(self._delay, key, DELAY_BUCKETS_US, delay)

    def exposition(self) -> str:
        """The metrics in Prometheus' text format (empty before a request)."""
        with self._lock:
            rows = sorted((k, _copy(v)) for k, v in self._input_rows.items())
            processed = sorted(self._processed.items())
            delay = sorted((k, _copy(v)) for k, v in self._delay.items())
        if not rows:
            return ""
        name = PREFIX + "input_batch_size_v2"
        lines = [f"# HELP {name} Tracks the batch size distribution on the inputs "
                 "by model_name (if available).", f"# TYPE {name} histogram"]
        for key, cell in rows:
            lines += histogram_lines(name, _OP, key, ROWS_BUCKETS, cell)
        name = PREFIX + "processed_batch_size_v2"
        lines += [f"# HELP {name} Tracks the batch size on processing by model_name "
                  "and op name (if available).", f"# TYPE {name} counter"]
        for key, count in processed:
            lines.append(f"{name}{label_set(_OP + ('batch_size',), key)} {count}")
        name = PREFIX + "batch_delay_us_v2"
        lines += [f"# HELP {name} Tracks the batching delay (in microseconds) for "
                  "inputs by model_name (if available).", f"# TYPE {name} histogram"]
        for key, cell in delay:
            lines += histogram_lines(name, _OP + ("processed_batch_size",), key,
                                     DELAY_BUCKETS_US, cell)
        for parameter in ("max_batch_size", "batch_timeout_micros",
                          "max_enqueued_batches"):
            name = PREFIX + parameter
            value = getattr(self.parameters, parameter)
            lines += [f"# HELP {name} The batching parameter {parameter}.",
                      f"# TYPE {name} gauge"]
            lines += [f"{name}{label_set(_OP, key)} {value}" for key, _ in rows]
        return "\n".join(lines) + "\n"


def _copy(cell: list) -> tuple:
    return (list(cell[0]), cell[1], cell[2])
