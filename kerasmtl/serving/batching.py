"""`kerasmtl serve --enable-batching`: concurrent predict requests merged into
one call of the signature, as TF Serving's `--enable_batching`.

Each request is decoded and checked on its own (`codec`, `grpc_tensors`), so
a malformed one is answered 400 before it meets another. A `Batcher` keeps
one queue of batches per loaded signature. A request joins a waiting batch
whose inputs have its names, dtypes and per-example shapes (all but the first
dimension) if its rows fit under `max_batch_size`; else it opens a new batch,
or, with `max_enqueued_batches` batches already waiting, gets 503 (gRPC
UNAVAILABLE): retry later. `num_batch_threads` threads take the oldest batch
that is full or has waited `batch_timeout_micros`, concatenate its inputs
along axis 0, call the signature once and give each request its rows of every
output. The request's own thread (Starlette's or gRPC's) waits meanwhile, as
a client thread of TF Serving's `BatchingSession` does. With TF Serving's
default timeout of 0 a batch runs as soon as a thread is free: an idle server
adds no delay, and requests merge while every batch thread is busy.

Run alone (a batch of one, which is the unbatched call exactly): a request
with more rows than `max_batch_size`, one whose inputs are scalars or differ
in their first dimension (columnar format allows it), and any request to a
signature whose inputs and outputs do not all have an unknown first
dimension.

Errors: when a merged call fails with a 4xx (a value that the per-request
checks cannot see, e.g. an id out of range), each request of the batch runs
again alone, so only the culprit fails. Any other failure (the model, 5xx)
reaches every request of the batch as the same message, saying so. Merging
may change float outputs in their last bits: kernels take other paths for
other batch sizes (README.md, "Serving", gives the measured size).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import Counter
from collections.abc import Mapping

import numpy as np

from kerasmtl.serving.batching_metrics import BatchingMetrics
from kerasmtl.serving.batching_parameters import (  # noqa: F401 (public here too)
    BatchingParameters,
    batching_from_flags,
    read_batching_parameters,
)
from kerasmtl.serving.errors import ServingError

logger = logging.getLogger("kerasmtl.serving")

class _Task:
    """One request: its checked arrays, and where its answer goes."""

    def __init__(self, arrays: Mapping[str, np.ndarray], model: str):
        self.arrays, self.rows, self.done = arrays, 0, threading.Event()
        self.model, self.enqueued = model, time.monotonic()
        self.outputs: dict[str, np.ndarray] | None = None
        self.error: ServingError | None = None


class _Batch:
    """Requests for one signature whose inputs can be concatenated (`key`;
    None: a request that runs alone)."""

    def __init__(self, signature, key):
        self.signature, self.key, self.since = signature, key, time.monotonic()
        self.tasks: list[_Task] = []
        self.rows = 0


class Batcher:
    """Merges concurrent requests to the same signature into one call.

    Thread-safe; its threads start with the first request. `stop()` lets
    them finish what is queued and exit (a later request starts them again).

    Args:
        parameters: `BatchingParameters`. Defaults to TF Serving's.

    Examples:

    ```python
    batcher = Batcher(BatchingParameters(max_batch_size=32))
    outputs = batcher.run(signature, {"features": x}, "quickstart")  # blocks
    ```
    """

    def __init__(self, parameters: BatchingParameters | None = None):
        self.parameters = parameters or BatchingParameters()
        self.batch_sizes: Counter = Counter()  # requests per call run -> calls
        self.metrics = BatchingMetrics(self.parameters)  # for /monitoring
        self._queues: dict[object, list[_Batch]] = {}  # signature -> batches waiting
        self._batchable = weakref.WeakKeyDictionary()  # signature -> bool
        self._lock = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._started = 0

    def run(self, signature, arrays: Mapping[str, np.ndarray], model: str
            ) -> dict[str, np.ndarray]:
        """`signature(arrays)`, merged with concurrent requests; blocks until
        done. Raises the `ServingError` of the call, or 503 when the queue is
        full."""
        task = _Task(arrays, model)
        limits = self.parameters
        with self._lock:
            key = self._key(signature, task)
            self.metrics.request(model, signature.name, task.rows)
            queue = self._queues.setdefault(signature, [])
            batch = None
            if key is not None and task.rows < limits.max_batch_size:
                batch = next((b for b in reversed(queue) if b.key == key and (
                    b.rows + task.rows <= limits.max_batch_size)), None)
            if batch is None:
                if len(queue) >= limits.max_enqueued_batches:
                    raise ServingError(
                        f"The batch queue of model '{model}' (signature "
                        f"'{signature.name}') is full: {len(queue)} batches wait "
                        "(max_enqueued_batches in the batching parameters). Retry "
                        "later.", 503)
                batch = _Batch(signature, key)
                queue.append(batch)
            batch.tasks.append(task)
            batch.rows += task.rows
            self._start_threads()
            self._lock.notify()
        task.done.wait()
        if task.error is not None or task.outputs is None:
            raise task.error or ServingError("Internal error: the batch ended with "
                                             "no answer", 500)
        return task.outputs

    def start(self) -> None:
        """Batches form again after a `stop()`."""
        with self._lock:
            self._stopping = False

    def stop(self, timeout: float = 30.0) -> None:
        """Runs what is queued without waiting for more, then lets the batch
        threads exit (waiting at most `timeout` seconds for them). Requests
        that come later still run, each batch as soon as it can."""
        with self._lock:
            self._stopping = True
            threads = list(self._threads)
            self._lock.notify_all()
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    # -- forming batches (under the lock) -----------------------------------

    def _key(self, signature, task: _Task):
        """What requests must share to be merged, or None (run alone); sets
        `task.rows`."""
        arrays = task.arrays
        rows = {np.shape(a)[0] if np.ndim(a) else None for a in arrays.values()}
        task.rows = next(iter(rows)) if len(rows) == 1 else None
        batchable = self._batchable.get(signature)
        if batchable is None:
            infos = [*signature.inputs.values(), *signature.outputs.values()]
            batchable = all(i.shape is None or (i.shape and i.shape[0] == -1)
                            for i in infos)
            self._batchable[signature] = batchable
        if task.rows is None or not batchable:
            task.rows = max(1, task.rows or 0)
            return None
        return tuple(sorted((name, a.dtype.str, a.shape[1:])
                            for name, a in arrays.items()))

    def _start_threads(self) -> None:
        missing = self.parameters.num_batch_threads - len(self._threads)
        for _ in range(missing):
            self._started += 1
            thread = threading.Thread(
                target=self._work, daemon=True,
                name=f"{self.parameters.thread_pool_name}_{self._started}")
            self._threads.append(thread)
            thread.start()

    def _next(self) -> tuple[_Batch | None, float | None]:
        """The oldest batch that may run now, else how long until one may
        (None: until a request comes)."""
        now, timeout = time.monotonic(), self.parameters.batch_timeout_micros / 1e6
        ready, wait = None, None
        for batch in (b for queue in self._queues.values() for b in queue):
            due = batch.since if (batch.key is None or self._stopping or (
                batch.rows >= self.parameters.max_batch_size)) else batch.since + timeout
            if due <= now:
                if ready is None or batch.since < ready.since:
                    ready = batch
            elif wait is None or due - now < wait:
                wait = due - now
        return ready, wait

    def _work(self) -> None:
        while True:
            with self._lock:
                while True:
                    batch, wait = self._next()
                    if batch is not None:
                        queue = self._queues[batch.signature]
                        queue.remove(batch)
                        if not queue:
                            del self._queues[batch.signature]
                        self.batch_sizes[len(batch.tasks)] += 1
                        break
                    if self._stopping and not self._queues:
                        self._threads.remove(threading.current_thread())
                        return
                    self._lock.wait(wait)
            self._run(batch)

    # -- running batches (outside the lock) -----------------------------------

    def _run(self, batch: _Batch) -> None:
        tasks, signature = batch.tasks, batch.signature
        started = time.monotonic()
        self.metrics.batch(tasks[0].model, signature.name, batch.rows,
                           [1e6 * (started - t.enqueued) for t in tasks])
        try:
            if len(tasks) == 1:
                _run_alone(signature, tasks[0])
                return
            try:
                outputs = signature({name: np.concatenate([t.arrays[name] for t in tasks])
                                     for name in tasks[0].arrays})
            except ServingError as error:
                if error.status_code < 500:  # maybe one request's values: find it
                    for task in tasks:
                        _run_alone(signature, task)
                    return
                raise
            parts = _split(outputs, [t.rows for t in tasks])
            if parts is None:  # an output without the batch dimension
                with self._lock:
                    self._batchable[signature] = False
                for task in tasks:
                    _run_alone(signature, task)
                return
            for task, part in zip(tasks, parts):
                task.outputs = part
        except Exception as error:
            if not isinstance(error, ServingError):
                logger.exception("Batch of %d requests failed", len(tasks))
                error = ServingError(f"Internal error: {type(error).__name__}: {error}",
                                     500)
            shared = ServingError(
                f"{error.message} (the whole batch of {len(tasks)} requests merged by "
                "--enable-batching failed)", error.status_code)
            for task in tasks:
                if task.outputs is None and task.error is None:
                    task.error = shared
        finally:
            for task in tasks:
                task.done.set()


def _run_alone(signature, task: _Task) -> None:
    try:
        task.outputs = signature(task.arrays)
    except ServingError as error:
        task.error = error
    except Exception as error:
        logger.exception("Predict failed in a batch thread")
        task.error = ServingError(f"Internal error: {type(error).__name__}: {error}", 500)


def _split(outputs: Mapping[str, np.ndarray], rows: list[int]
           ) -> list[dict[str, np.ndarray]] | None:
    """Each request's rows of every output; None if an output has no first
    dimension of the batch's size."""
    total = sum(rows)
    if any(np.ndim(a) == 0 or np.shape(a)[0] != total for a in outputs.values()):
        return None
    offsets = np.cumsum(rows)[:-1]
    pieces = {name: np.split(a, offsets) for name, a in outputs.items()}
    return [{name: pieces[name][i] for name in outputs} for i in range(len(rows))]
