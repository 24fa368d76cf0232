"""What `MultiTaskModel` checks and converts on its way in: the label
structure and values of every input path (numpy, tensors, `tf.data`), the
outputs it is built on, numpy string inputs, and in-graph label-check
failures turned back into the ValueError numpy input gets.

A mixin of `MultiTaskModel` (`LabelChecksMixin`) and the helpers its `fit`,
`evaluate` and `predict` call; kept apart from `model.py` so that the
model's wiring reads on its own.
"""

from __future__ import annotations

import contextlib
import re
import types

import numpy as np
import tensorflow as tf

from kerasmtl.tasks.label_checks import LABEL_CHECK_MARK


class LabelChecksMixin:
    """`MultiTaskModel`'s label checks (it provides `_tasks`, `task_names`,
    `name` and `_check_known_tasks`)."""

    def check_label_structure(self, y):
        """Checks that `y` is a dict with one label tensor per task, each of a
        shape that fits its task; returns it as a dict."""
        if isinstance(y, (list, tuple)) and len(y) == len(self._tasks):
            y = dict(zip(self.task_names, y))
        if not isinstance(y, dict):
            raise ValueError(
                f"MultiTaskModel '{self.name}' expects labels as a dict keyed by task "
                f"name {self.task_names}. Received: {type(y).__name__}."
            )
        self._check_known_tasks(
            y, "Labels", " Remove those keys or add the tasks to the model."
        )
        missing = [n for n in self.task_names if n not in y]
        if missing:
            raise ValueError(
                f"No labels for task(s) {missing}. Every task needs a label tensor; "
                "mark examples without a label with -1 (integer and binary labels) or "
                "NaN (float labels)."
            )
        for task in self._tasks:
            task.check_label_spec(y[task.name])
        return y

    def check_label_values(self, y) -> None:
        """Eager checks of numpy labels (values as well as shapes)."""
        y = self.check_label_structure(
            tf.nest.map_structure(np.asarray, y) if isinstance(y, dict) else y
        )
        for task in self._tasks:
            task.check_label_values(tf.nest.map_structure(np.asarray, y[task.name]))

    def _check_data(self, x, y):
        if y is not None:
            if isinstance(y, dict) and all(
                is_array_like(v) for v in tf.nest.flatten(y)
            ):
                self.check_label_values(y)
            else:
                self.check_label_structure(y)
        elif isinstance(x, tf.data.Dataset):
            spec = x.element_spec
            if isinstance(spec, tuple) and len(spec) >= 2:
                self.check_label_structure(spec[1])


def shuffled_by_caller(x) -> bool:
    """True for inputs that Keras cannot shuffle (it shuffles arrays only)."""
    return isinstance(
        x, (tf.data.Dataset, tf.distribute.DistributedDataset, types.GeneratorType)
    )


def strings_as_tensors(x):
    """`x` with its numpy string arrays (str, bytes, or objects that are all
    str/bytes) as `tf.string` tensors; anything else unchanged.

    Keras' array adapter rejects numpy string arrays ("Invalid dtype: str96"
    from `standardize_dtype`, keras 3.15) but slices `tf.string` tensors, so
    a tagger takes `{"tokens": np.array([["The", "dog"]])}` like any input.
    """
    def convert(value):
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "USO":
            return value
        if value.dtype.kind == "O" and not all(
                isinstance(v, (str, bytes)) for v in value.flat):
            return value  # Keras' own error names what it cannot take
        return tf.constant(value)

    if isinstance(x, dict):
        return {key: convert(value) for key, value in x.items()}
    if isinstance(x, (list, tuple)) and all(isinstance(v, np.ndarray) for v in x):
        return type(x)(convert(v) for v in x)
    return convert(x)


def is_array_like(value) -> bool:
    return isinstance(value, (np.ndarray, list, tuple)) or (
        tf.is_tensor(value) and tf.executing_eagerly()
    )


@contextlib.contextmanager
def label_errors_as_value_errors():
    """A failed in-graph label check (`Task.assert_label_values`) surfaces as
    TensorFlow's InvalidArgumentError under a long graph trace; re-raise it
    as the ValueError that the same labels get from numpy input."""
    try:
        yield
    except tf.errors.InvalidArgumentError as error:
        text = error.message
        if LABEL_CHECK_MARK not in text:
            raise
        text = text[text.index(LABEL_CHECK_MARK) + len(LABEL_CHECK_MARK):]
        # Assert prints its data as "[message] [count] [first:] [value]".
        match = re.match(r"(.*)\] \[(\d+)\] \[first:\] \[([^\]]*)\]", text, re.S)
        if match:
            message, count, first = match.groups()
            text = f"{message.strip()} {count}, the first: {first}."
        text = text.replace("\\'", "'")
        raise ValueError(text) from None


def check_outputs(outputs, tasks) -> None:
    names = [t.name for t in tasks]
    if not isinstance(outputs, dict):
        raise ValueError(
            "MultiTaskModel outputs must be a dict keyed by task name "
            f"{names}. Received: {type(outputs).__name__}."
        )
    if set(outputs) != set(names):
        raise ValueError(
            f"MultiTaskModel outputs {sorted(outputs)} do not match the task names "
            f"{sorted(names)}. Give exactly one output per task."
        )
    for task in tasks:
        shape = tuple(outputs[task.name].shape)[1:]
        expected = task.output_shape
        if len(shape) != len(expected) or any(
            e is not None and d is not None and d != e for d, e in zip(shape, expected)
        ):
            raise ValueError(
                f"Output for task '{task.name}' has shape {shape} per example, the "
                f"task expects {expected}. Build the head with task.build_head()."
            )
