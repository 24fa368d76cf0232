"""The label checks every `Task` inherits (`LabelChecks`): shapes, numpy
values (eager) and tensor values (in the graph, for tf.data batches), each
error naming the task, its kind, what was received and what to pass.

A kind says what its labels are with `label_shape`, `label_dtype`,
`label_help()` and, for the graph check, `valid_label_values(labels)`;
structured labels (detection's dict) override `check_label_spec` and
`assert_label_values`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf


class LabelChecks:
    """Mixin of `Task`: checks a batch of labels against the task."""

    def check_label_shape(self, shape: Sequence[int | None]) -> None:
        """Raises a ValueError if a batch of labels of `shape` does not fit."""
        shape = tuple(shape)
        per_example = shape[1:]
        expected = self.label_shape
        accepted = [expected]
        if expected == ():
            accepted.append((1,))
        if len(expected) == 1 and expected[0] == 1:
            accepted.append(())
        ok = any(
            len(per_example) == len(a)
            and all(d is None or e is None or d == e for d, e in zip(per_example, a))
            for a in accepted
        )
        if not ok or len(shape) == 0:
            raise ValueError(
                f"Labels for task '{self.name}' ({self.kind}) have shape "
                f"{fmt_shape(shape)}, expected {fmt_shape((None, *expected))}"
                + (f" or {fmt_shape((None, 1))}" if expected == () else "")
                + f". {self.label_help()}"
            )

    def check_label_spec(self, y) -> None:
        """Raises a ValueError if a batch of labels `y` (a tensor, array or
        `tf.TensorSpec`; a dict of them for kinds with structured labels,
        such as detection) does not fit this task. Checks shapes only."""
        if isinstance(y, dict) or not hasattr(y, "shape"):
            raise ValueError(
                f"Labels for task '{self.name}' ({self.kind}) must be one tensor "
                f"of shape {fmt_shape((None, *self.label_shape))}. Received: "
                f"{type(y).__name__}. {self.label_help()}"
            )
        self.check_label_shape(tuple(y.shape))

    def example_labels(self, batch_size: int = 1):
        """A batch of valid placeholder labels (used to build metrics eagerly)."""
        return np.zeros(
            (batch_size, *[d or 1 for d in self.label_shape]), self.label_dtype
        )

    def label_help(self) -> str:
        return "Mark a missing label with -1."

    def check_label_values(self, labels: np.ndarray) -> None:
        """Eager check of a numpy batch of labels; raises ValueError if invalid."""
        self.check_label_shape((None, *np.shape(labels)[1:]))
        dtype = np.asarray(labels).dtype
        if dtype.kind in "USO":
            raise ValueError(
                f"Labels for task '{self.name}' ({self.kind}) are "
                f"{'strings' if dtype.kind != 'O' else 'Python objects'} "
                f"(dtype {dtype}); expected numbers. Map names to integer ids "
                "first (e.g. with a `labels=` list or keras.layers.StringLookup). "
                + self.label_help()
            )

    def valid_label_values(self, labels):
        """`(valid, expected)` for the graph check of a batch of labels (a
        tensor): a boolean tensor, True where a value is allowed (missing
        included), and what is expected, in words. None: no value check."""
        return None

    def assert_label_values(self, labels):
        """Returns `labels`, checked in the graph (tf.data batches never see
        the numpy checks): a bad value stops training with an error naming
        the task, what is expected and the first offending value, before the
        loss can fail with a message naming no task or train on it silently.
        """
        if isinstance(labels, dict):
            return labels  # structured labels: the kind overrides this method
        if not tf.is_tensor(labels):
            labels = tf.convert_to_tensor(labels)
        if labels.dtype == tf.string:
            raise ValueError(
                f"Labels for task '{self.name}' ({self.kind}) are strings; "
                "expected numbers. Map names to integer ids in the input "
                "pipeline (e.g. keras.layers.StringLookup). " + self.label_help()
            )
        checks = []
        if self.label_dtype.startswith("int") and labels.dtype.is_floating:
            # NaN means "missing" only for float labels: a NaN id is a data bug.
            nan = tf.math.is_nan(labels)
            checks.append(graph_assert(
                self, labels, tf.logical_not(nan),
                "integer ids; NaN marks a missing *float* label, integer ids use -1",
            ))
        validity = self.valid_label_values(labels)
        if validity is not None:
            valid, expected = validity
            checks.append(graph_assert(self, labels, valid, expected))
        if not checks:
            return labels
        with tf.control_dependencies(checks):
            return tf.identity(labels)

    def check_integer_labels(self, labels: np.ndarray, unit: str = "position") -> None:
        """Raises a ValueError if float `labels` hold NaN or fractions: class,
        tag and pixel ids are integers, and -1 (not NaN) marks them missing."""
        if labels.dtype.kind != "f":
            return
        nan = np.isnan(labels)
        if nan.any():
            raise ValueError(
                f"Labels for task '{self.name}' ({self.kind}) contain NaN at "
                f"{int(nan.sum())} {unit}(s). NaN marks a missing *float* label; "
                f"integer ids use -1. {self.label_help()}"
            )
        if not np.all(labels == np.round(labels)):
            raise ValueError(
                f"Labels for task '{self.name}' ({self.kind}) are not integer ids "
                f"(found fractions). {self.label_help()}"
            )


# Marks the label checks' messages, so that `MultiTaskModel.fit` can turn
# the graph's InvalidArgumentError into a plain ValueError.
LABEL_CHECK_MARK = "kerasmtl label check:"


def ids_or_missing(labels, num_ids: int):
    """True where `labels` is an integer id in [0, num_ids) or -1 (missing)."""
    valid = (labels >= 0) & (labels < num_ids)
    if labels.dtype.is_floating:
        valid &= tf.equal(labels, tf.round(labels))
    return valid | tf.equal(labels, -1)


def graph_assert(task, labels, valid, expected: str):
    """A cheap in-graph assert that all of `valid` holds; its message names
    the task, what is expected, how many values are bad and the first one."""
    bad = tf.reshape(tf.logical_not(valid), [-1])
    flat = tf.reshape(labels, [-1])
    first = tf.gather(flat, tf.argmax(tf.cast(bad, tf.int32)))
    return tf.debugging.Assert(
        tf.logical_not(tf.reduce_any(bad)),
        [
            f"{LABEL_CHECK_MARK} Labels for task '{task.name}' ({task.kind}) must "
            f"be {expected}. {task.label_help()} Bad values in this batch:",
            tf.reduce_sum(tf.cast(bad, tf.int32)),
            "first:",
            first,
        ],
        summarize=1,
    )


def fmt_shape(shape) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + (
        ",)" if len(shape) == 1 else ")"
    )
