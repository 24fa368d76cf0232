"""What a train step needs under `tf.distribute`: the number of replicas,
sums over them, a finiteness check every replica agrees on, and per-task
losses valued at the global batch.

Used by `MultiTaskModel`'s train steps and by weightings that step their
own state from gradients (`AutoLambda`); it imports nothing from kerasmtl, so
the weightings can use it without an import cycle.
"""

from __future__ import annotations

import tensorflow as tf
from keras import ops


def replicas_in_sync() -> int:
    return tf.distribute.get_strategy().num_replicas_in_sync


def all_reduce_sum(value):
    context = tf.distribute.get_replica_context()
    if context is None:  # cross-replica context: value is already global
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def all_finite(tensors) -> tf.Tensor:
    """A bool scalar, the same on every replica: no NaN or infinity in
    `tensors` (dense or IndexedSlices; None entries are skipped)."""
    bad = [
        tf.reduce_sum(tf.cast(~tf.math.is_finite(_values(t)), tf.float32))
        for t in tensors
        if t is not None
    ]
    total = tf.add_n([*bad, tf.constant(0.0)])
    if replicas_in_sync() > 1:
        total = all_reduce_sum(total)
    return tf.equal(total, 0.0)


def _values(tensor):
    return tensor.values if isinstance(tensor, tf.IndexedSlices) else tensor


def global_means(means: dict, counts: dict, replicas: int) -> tuple[dict, dict]:
    """Each replica's masked mean per task, valued at the global batch's
    masked mean but differentiated as the replica's share of it; and the
    global count of known labels. One all-reduce of `2 T` numbers.

    Shards hold different numbers of known labels: a replica's share is its
    masked mean times `count * replicas / global_count`, whose mean over the
    replicas is the global masked mean `L` (what the optimizer's summed
    gradients of `total / replicas` need). A weighting `f` that is not linear
    in the losses (the geometric mean, logs, FAMO, STCH) must also be
    evaluated at `L`, not at the replica's share (log(0) on a shard without
    a label of the task): each replica then computes `f'(L) * grad(share)`,
    and their mean is exactly `f'(L) * grad(L)`, the single-device gradient.
    """
    names = list(means)
    means = {n: ops.cast(means[n], "float32") for n in names}
    counts = {n: ops.cast(counts[n], "float32") for n in names}
    sums = ops.stack([ops.stop_gradient(means[n]) * counts[n] for n in names])
    # Stacked without a gradient path: a task's loss must stay disconnected
    # from the other tasks' heads (the balancers find the shared variables
    # by which task losses reach them).
    totals = all_reduce_sum(ops.concatenate([sums, ops.stack([counts[n] for n in names])]))
    global_means, global_counts = {}, {}
    for i, name in enumerate(names):
        global_count = totals[len(names) + i]
        share = ops.divide_no_nan(means[name] * counts[name] * replicas, global_count)
        value = ops.divide_no_nan(totals[i], global_count)
        global_means[name] = share + ops.stop_gradient(value - share)
        global_counts[name] = global_count
    return global_means, global_counts
