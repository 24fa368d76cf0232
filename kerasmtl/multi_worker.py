"""`MultiWorkerTrainingMixin`: makes Keras 3's `fit`/`evaluate` run under
`tf.distribute.MultiWorkerMirroredStrategy` (a mixin of `MultiTaskModel`).

Works around keras-team/keras#20585 (open since TF 2.16 moved to Keras 3;
checked against keras 3.15 / tensorflow 2.21). Keras' TensorFlow trainer
(`keras/src/backend/tensorflow/trainer.py`) fails in two places as soon as
the replicas span more than one worker process:

1. `TensorFlowTrainer._maybe_symbolic_build` takes the first distributed
   batch and calls `strategy.reduce("MEAN", batch, axis=None)` on the whole
   `(x, y)` nest, only to learn its shapes and dtypes. `Strategy.reduce` does
   not take a nest ("TODO(josh11b): support `value` being a nest" in
   `distribute_lib.py`); MirroredStrategy gets away with it, but
   `CollectiveAllReduceStrategy._reduce_to` with several workers hands the
   tuple to `CollectiveAllReduce.reduce`, whose `convert_to_tensor` fails with
   "Attempt to convert a value (PerReplica:{...}) with an unsupported type".
   Fix: build from the first local replica's batch (the same per-replica
   shapes the MEAN would give, and no collective at all).
2. `reduce_per_replica(..., reduction="mean")`, which reduces what the train
   and test steps return, calls `strategy.reduce("MEAN", v, axis=0)` for a
   multi-worker strategy, which fails on the scalar metric results ("Invalid
   reduction dimension 0 for input with 0 dimensions"). Fix: the step's
   outputs are packed into one float32 row `[1, K]`, so that this MEAN over
   axis 0 is the element-wise mean over the replicas (what MirroredStrategy
   computes), and one collective instead of one per logged value (each a
   round trip between the workers), then unpacked after the step.
   Epoch logs do not depend on it: Keras reads them from the metrics at the
   end of the epoch (`_get_metrics_result_or_logs`), summed over all workers.

The train step itself (Keras' own, or `_balanced_train_step`) needs no
change: its all-reduces use the replica context, which spans the workers.
Remove this mixin when Keras fixes keras-team/keras#20585 (the test
`tests/test_multi_worker.py` then passes without it).

`ParameterServerStrategy` is refused with a clear error: Keras 3's `fit`
has no `ClusterCoordinator` path (Keras 2's `fit` scheduled each step as a
closure on the coordinator), and the gradient balancers need a synchronous
all-reduce of every task's gradient, which asynchronous parameter-server
training does not have.
"""

from __future__ import annotations

import tensorflow as tf

from kerasmtl.autograph import skip_autograph


class MultiWorkerTrainingMixin:
    """Lets `keras.Model.fit`/`evaluate` run under a multi-worker
    `tf.distribute.MultiWorkerMirroredStrategy` (keras-team/keras#20585).

    Put it before `keras.Model` in the bases. A no-op for every other
    strategy, except `ParameterServerStrategy`, which it refuses.
    """

    def fit(self, *args, **kwargs):
        _check_supported_strategy(self)
        return super().fit(*args, **kwargs)

    def evaluate(self, *args, **kwargs):
        _check_supported_strategy(self)
        return super().evaluate(*args, **kwargs)

    def predict(self, *args, **kwargs):
        _check_supported_strategy(self)
        return super().predict(*args, **kwargs)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if iterator is None or not spans_workers(self.distribute_strategy):
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        strategy = self.distribute_strategy
        # Keras' own loop (trainer.py): the iterator yields one distributed
        # iterator per epoch; the caller resets it afterwards.
        for _, _, distributed_iterator in iterator:
            batch = next(distributed_iterator)
            data_batch = tf.nest.map_structure(
                lambda v: (
                    strategy.experimental_local_results(v)[0]
                    if isinstance(v, tf.distribute.DistributedValues)
                    else v
                ),
                batch,
            )
            break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    def _make_function(self, step_function):
        if not spans_workers(self.distribute_strategy):
            return super()._make_function(step_function)
        layout = {}
        function = super()._make_function(_packed_outputs(step_function, layout))

        def unpacked(iterator):
            return _unpack(function(iterator), layout)

        return unpacked


def spans_workers(strategy: tf.distribute.Strategy) -> bool:
    """True if `strategy`'s replicas live in more than one worker process."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and (
        strategy.num_replicas_in_sync > len(strategy.extended.worker_devices)
    )


def _packed_outputs(step_function, layout: dict):
    """`step_function` returning its outputs (the step's logs) as one float32
    row `[1, K]`: Keras reduces every output of every step across the
    replicas, and under several workers each output is a collective round
    trip (about 15 per step for three tasks, most of a small model's step);
    packed, it is one. The leading axis makes Keras' MEAN over axis 0 the
    element-wise mean over the replicas. `layout` records how to unpack."""

    @skip_autograph
    def step(data):
        outputs = step_function(data)
        tensors = [tf.convert_to_tensor(v) for v in tf.nest.flatten(outputs)]
        layout.update(structure=outputs, shapes=[t.shape for t in tensors],
                      dtypes=[t.dtype for t in tensors])
        if not tensors:
            return tf.zeros([1, 0])
        flat = [tf.reshape(tf.cast(t, tf.float32), [-1]) for t in tensors]
        return tf.expand_dims(tf.concat(flat, 0), 0)

    return step


def _unpack(packed, layout: dict):
    """The step's outputs, in their structure, from `_packed_outputs`'s row
    (reduced over the replicas)."""
    sizes = [int(shape.num_elements()) for shape in layout["shapes"]]
    parts = tf.split(tf.reshape(packed, [-1]), sizes) if sizes else []
    values = [tf.cast(tf.reshape(part, shape), dtype) for part, shape, dtype
              in zip(parts, layout["shapes"], layout["dtypes"])]
    return tf.nest.pack_sequence_as(layout["structure"], values)


def _check_supported_strategy(model) -> None:
    strategy = model.distribute_strategy
    if isinstance(
        strategy,
        (
            tf.distribute.experimental.ParameterServerStrategy,
            tf.compat.v1.distribute.experimental.ParameterServerStrategy,
        ),
    ):
        raise ValueError(
            f"Model '{model.name}' cannot be trained under {type(strategy).__name__}: "
            "Keras 3's fit/evaluate have no ParameterServerStrategy support (no "
            "ClusterCoordinator), and kerasmtl's gradient balancers need a "
            "synchronous all-reduce of every task's gradient. Use "
            "tf.distribute.MultiWorkerMirroredStrategy (see the README section "
            "'Training on several machines')."
        )


def cluster_from_tf_config(environ=None) -> tuple[int, int] | None:
    """`(number of workers, this worker's index)` when the `TF_CONFIG`
    environment variable names a cluster of several workers, else None.

    Refuses a `TF_CONFIG` that is not JSON, has no `task` or names a task
    type other than `worker`/`chief` (only `MultiWorkerMirroredStrategy`
    is supported), with what to write instead.

    >>> cluster_from_tf_config({})
    >>> config = ('{"cluster": {"worker": ["a:1", "b:1"]}, '
    ...           '"task": {"type": "worker", "index": 1}}')
    >>> cluster_from_tf_config({"TF_CONFIG": config})
    (2, 1)
    """
    import json
    import os

    environ = os.environ if environ is None else environ
    text = environ.get("TF_CONFIG", "").strip()
    if not text:
        return None
    example = ('TF_CONFIG=\'{"cluster": {"worker": ["host0:12345", "host1:12345"]}, '
               '"task": {"type": "worker", "index": 0}}\'')
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config.get("task", {})
        workers = list(cluster.get("chief", [])) + list(cluster.get("worker", []))
        kind, index = task["type"], int(task["index"])
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise ValueError(
            f"TF_CONFIG is not a cluster description ({error!r}): give JSON with "
            f"\"cluster\" and \"task\", e.g. {example}") from None
    other = sorted(set(cluster) - {"chief", "worker"})
    if other or kind not in ("chief", "worker"):
        raise ValueError(
            f"TF_CONFIG names task types {other or [kind]}: kerasmtl trains on "
            "several machines with MultiWorkerMirroredStrategy only, whose "
            f"cluster has workers (and optionally one chief), e.g. {example}")
    if len(workers) < 2:
        return None
    position = index + (len(cluster.get("chief", [])) if kind == "worker" else 0)
    if not 0 <= position < len(workers):
        raise ValueError(f"TF_CONFIG's task index {index} is not a {kind} of its "
                         f"cluster ({len(workers)} processes in all).")
    return len(workers), position


def local_worker_configs(count: int) -> list[str]:
    """`TF_CONFIG` values for `count` worker processes on this machine
    (loopback ports free when called), worker `i`'s at index `i`: to try
    multi-worker training on one machine (`tests/test_multi_worker.py`,
    `benchmarks/multi_worker.py`). Start every worker soon after: a port
    may be taken by another program meanwhile.

    >>> import json
    >>> configs = [json.loads(c) for c in local_worker_configs(2)]
    >>> [c["task"] for c in configs]
    [{'type': 'worker', 'index': 0}, {'type': 'worker', 'index': 1}]
    >>> len(set(configs[0]["cluster"]["worker"]))
    2
    """
    import json
    import socket

    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        cluster = {"worker": [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]}
    finally:
        for s in sockets:
            s.close()
    return [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
            for i in range(count)]
