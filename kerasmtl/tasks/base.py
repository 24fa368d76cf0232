"""`Task`: the one extension point of kerasmtl.

A task knows, for one output of a multi-task model: its name, how to build its
head on a shared feature tensor, its loss (masked where the label is missing),
its default metrics and its serving post-processing. A task is a *spec*: building
a head creates fresh layers every time, so the same task objects can build a
multi-task model and its single-task baselines without sharing weights.

Missing labels are marked in the label tensor itself, per element: `-1` for
integer and binary labels, `NaN` for float labels. The masked loss of a task is
the mean over its known label elements in the batch, and exactly zero when the
batch holds none (never NaN).

Adding a kind of task means subclassing `Task` in one module under
`kerasmtl/tasks/` and implementing `make_output_layer`, `label_shape`,
`element_loss`, `default_metrics` and `postprocess`. The label checks every
task inherits (shapes, numpy and in-graph values) are in
`kerasmtl.tasks.label_checks`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from kerasmtl.tasks.label_checks import LabelChecks

_NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class Task(LabelChecks):
    """Base class of all tasks.

    Args:
        name: str. The task's name: the key of its output and of its labels. A
            letter followed by letters, digits or underscores (it names a Keras
            layer and a serving output).
        hidden_layers: sequence of int or `keras.layers.Layer`. Task-specific
            layers between the shared features and the head. An int `n` means
            `Dense(n, activation="relu")`. Layers are copied from their config
            each time a head is built; a `Lambda` works too (loading a
            `.keras` file that holds one needs `safe_mode=False`, as for any
            Lambda). Defaults to `()`.
        loss: `"auto"`, or a Keras loss (name, function or `keras.losses.Loss`).
            `"auto"` uses the task's own masked loss. Defaults to `"auto"`.
        loss_weight: float. Static multiplier of this task's loss, applied
            before the model's weighting. Defaults to `1.0`.
    """

    kind = "task"
    # Labels of elementwise tasks (regression, multi-label) are masked per
    # element and user-supplied Keras losses are applied per element.
    elementwise = False
    label_dtype = "int32"
    primary_metric = "loss"
    higher_is_better = False

    def __init__(
        self,
        name: str,
        hidden_layers: Sequence[int | keras.layers.Layer] = (),
        loss: Any = "auto",
        loss_weight: float = 1.0,
    ):
        if not isinstance(name, str) or not _NAME_PATTERN.match(name):
            raise ValueError(
                f"Invalid task name {name!r}. Expected a letter followed by "
                "letters, digits or underscores, e.g. 'species' or 'ner_tags'."
            )
        if not isinstance(loss_weight, (int, float)) or loss_weight < 0:
            raise ValueError(
                f"Invalid value for argument `loss_weight` of task '{name}'. "
                f"Expected a float >= 0. Received: loss_weight={loss_weight!r}"
            )
        self.name = name
        hidden_layers = list(hidden_layers)
        self.hidden_layers = [_layer_spec(name, spec) for spec in hidden_layers]
        # Specs serialised here from layer objects may hold Python code (a
        # Lambda's function): the caller's own, or one that already passed
        # Keras' safe mode in `from_config`; their copies skip safe mode. A
        # spec given as a dict goes through it.
        self._trusted_hidden = [not isinstance(s, dict) for s in hidden_layers]
        self.loss = loss
        self.loss_weight = float(loss_weight)

    # -- head -----------------------------------------------------------------

    def make_output_layer(self) -> keras.layers.Layer:
        raise NotImplementedError

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Shape of one example's output (without the batch axis)."""
        raise NotImplementedError

    @property
    def label_shape(self) -> tuple[int, ...]:
        """Shape of one example's label (without the batch axis)."""
        raise NotImplementedError

    def build_head(self, features):
        """Builds this task's layers on `features`; returns its output tensor."""
        return self.make_output_layer()(self.build_hidden_layers(features))

    def build_hidden_layers(self, features):
        """Applies fresh copies of `hidden_layers` to `features` (each head
        gets its own weights); returns the result."""
        x = features
        for i, (spec, trusted) in enumerate(zip(self.hidden_layers, self._trusted_hidden)):
            config = dict(spec["config"], name=f"{self.name}_hidden_{i}")
            layer = keras.saving.deserialize_keras_object(
                {**spec, "config": config}, safe_mode=not trusted
            )
            x = layer(x)
        return x

    def bind(self, model) -> Task:
        """Returns the task as used by `model` (called once when a
        `MultiTaskModel` is built).

        Tasks are specs shared between models; a kind whose loss, metrics or
        post-processing need weights of its own head (a CRF's transitions,
        calibrated thresholds) returns a copy that holds `model`'s layer,
        found as `model.get_layer(self.name)`. The default returns `self`.
        """
        return self

    # -- labels and loss ------------------------------------------------------

    def standardize_labels(self, y):
        """Returns `(labels, mask)`: labels reshaped to the output's rank with
        missing entries replaced by a harmless value, and a float mask that is
        1 where the label is known."""
        raise NotImplementedError

    def element_loss(self, y_true, y_pred):
        """Unreduced loss: one value per mask element."""
        raise NotImplementedError

    def resolve_loss(self, loss: Any = "auto"):
        """Returns a function `(labels, predictions) -> per-element losses`."""
        if loss is None or (isinstance(loss, str) and loss == "auto"):
            loss = self.loss
        if isinstance(loss, str) and loss == "auto":
            return self.element_loss
        own = self.named_loss(loss) if isinstance(loss, str) else None
        if own is not None:
            return own
        fn = keras.losses.get(loss)
        if fn is None:
            raise ValueError(f"Unknown loss {loss!r} for task '{self.name}'.")
        if isinstance(fn, keras.losses.Loss):
            fn = fn.call  # unreduced: masking does the reduction
        if self.elementwise:
            # A Keras loss reduces the last axis; a trailing axis of size one
            # makes it return one value per label element, which is masked.
            return lambda y_true, y_pred: fn(
                ops.expand_dims(y_true, -1), ops.expand_dims(y_pred, -1)
            )
        return fn

    def named_loss(self, name: str):
        """Hook for kinds with several built-in losses (e.g. 'focal')."""
        return None

    def compute_loss(self, y, y_pred, sample_weight=None, loss_fn=None):
        """`masked_loss` times this task's `loss_weight`, and the count."""
        mean, count = self.masked_loss(y, y_pred, sample_weight, loss_fn)
        return mean * self.loss_weight, count

    def masked_loss(self, y, y_pred, sample_weight=None, loss_fn=None):
        """Masked mean loss over the known labels (unweighted by `loss_weight`),
        and their (sample-weighted) count.

        Formula:
        ```
        loss = sum(mask * w * l) / sum(mask * w)   (0 if the sum is 0)
        ```
        """
        y_true, mask = self.standardize_labels(y)
        loss_fn = loss_fn or self.resolve_loss()
        values = ops.cast(loss_fn(y_true, y_pred), "float32")
        values = ops.reshape(values, ops.shape(mask))
        weights = _apply_sample_weight(mask, sample_weight)
        # where(): a NaN produced on a masked element must not leak into the sum.
        total = ops.sum(ops.where(weights > 0, values * weights, 0.0))
        count = ops.sum(weights)
        return ops.divide_no_nan(total, count), count

    # -- metrics --------------------------------------------------------------

    def default_metrics(self) -> list[keras.metrics.Metric]:
        return []

    def metric_from_identifier(self, identifier: Any) -> keras.metrics.Metric:
        metric = keras.metrics.get(identifier)
        if not isinstance(metric, keras.metrics.Metric):
            metric = keras.metrics.MeanMetricWrapper(
                metric, name=getattr(metric, "__name__", str(identifier))
            )
        return metric

    def dataset_evaluator(self):
        """A data-set-level evaluator (e.g. COCO mAP, mIoU over all pixels)
        that batch metrics cannot compute, or None.

        It has `update(labels, predictions)`, fed batch by batch with the label
        dict and `MultiTaskModel.postprocess`'s outputs, and `result() ->
        {metric: float}`. `kerasmtl.evaluation.dataset_metrics` runs them."""
        return None

    def update_metrics(self, metrics, y, y_pred, sample_weight=None) -> None:
        y_true, mask = self.standardize_labels(y)
        weights = _apply_sample_weight(mask, sample_weight)
        y_true, y_pred, weights = self.metric_rows(y_true, y_pred, weights)
        for metric in metrics:
            metric.update_state(y_true, y_pred, sample_weight=weights)

    def metric_rows(self, y_true, y_pred, weights):
        """`(y_true, y_pred, weights)` as the rows Keras metrics should see.

        Per-element masks (`elementwise`): one row per label element. One
        prediction per position (`[batch, T]` or `[batch, H, W]` labels and
        weights, scores with one more axis): one row per position. Keras's
        mean metrics reduce a `[batch, ...]` weight to its mean over the
        positions before summing, which would weight each position by
        1 / (its batch's positions) over batches of different sizes.
        """
        if self.elementwise:
            return (ops.reshape(y_true, (-1, 1)), ops.reshape(y_pred, (-1, 1)),
                    ops.reshape(weights, (-1,)))
        if len(weights.shape) > 1 and len(y_pred.shape) == len(weights.shape) + 1:
            return (ops.reshape(y_true, (-1,)),
                    ops.reshape(y_pred, (-1, ops.shape(y_pred)[-1])),
                    ops.reshape(weights, (-1,)))
        return y_true, y_pred, weights

    # -- serving --------------------------------------------------------------

    @property
    def raw_output_name(self) -> str:
        """Name of the raw output in exported signatures. Defaults to the task's
        name; a kind whose post-processed output deserves the plain name (e.g.
        a segmentation class map) renames its raw logits."""
        return self.name

    def postprocess(self, y_pred) -> dict:
        """Serving post-processing: `{output_name: tensor}` from the raw output.

        Uses only TensorFlow-graph-compatible ops (it goes into exported
        SavedModels)."""
        return {}

    def flip_back(self, y_pred, horizontal: bool, vertical: bool):
        """This task's output on a flipped image, mapped back to the image as
        it is (test-time flip averaging, `kerasmtl.flip_averaging`). The default
        returns `y_pred`: an image-level output does not depend on the image's
        orientation. Kinds with image-shaped outputs override it."""
        return y_pred

    def serving_outputs(self, y_pred, geometry=None) -> dict:
        """What the exported signature returns for this task: the raw output
        under `raw_output_name` plus `postprocess(y_pred)`.

        Args:
            y_pred: the task's raw output on the model's (converted) inputs.
            geometry: a `kerasmtl.preprocessors.ImageGeometry` when the model
                takes images (padded to a size multiple before it ran), else
                None. A task whose outputs are image-shaped or in pixels maps
                them back to the request's image with it (`crop`,
                `clip_boxes`); other tasks ignore it.
        """
        return {self.raw_output_name: y_pred, **self.postprocess(y_pred)}

    @property
    def predicts_one_probability(self) -> bool:
        """Whether the head outputs one probability per example, `[batch, 1]`
        in [0, 1] (a one-label sigmoid), so that builders may multiply it
        with another (`kerasmtl.sharing.esmm`). Defaults to `False`."""
        return False

    @property
    def example_api(self) -> str | None:
        """`"classify"` or `"regress"`: the TF Serving tf.Example API this
        task answers in `export_saved_model(..., example_signatures=True)`
        (with `example_outputs`); None (the default): neither."""
        return None

    def example_outputs(self, y_pred) -> dict:
        """The `example_api`'s outputs from the raw output (serving graphs
        only): Classify `{"classes": string [batch, k], "scores": float
        [batch, k]}`, Regress `{"outputs": float [batch]}`."""
        raise NotImplementedError(f"Task '{self.name}' has no tf.Example API.")

    # -- config ---------------------------------------------------------------

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "hidden_layers": list(self.hidden_layers),
            "loss": keras.saving.serialize_keras_object(self.loss)
            if not isinstance(self.loss, str)
            else self.loss,
            "loss_weight": self.loss_weight,
        }

    @classmethod
    def from_config(cls, config: dict) -> Task:
        config = dict(config)
        loss = config.get("loss", "auto")
        if isinstance(loss, dict):
            config["loss"] = keras.saving.deserialize_keras_object(loss)
        config["hidden_layers"] = [
            keras.saving.deserialize_keras_object(spec)
            for spec in config.get("hidden_layers", [])
        ]
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(
            f"{k}={v!r}" for k, v in self.get_config().items() if k != "hidden_layers"
        )
        return f"{type(self).__name__}({args})"


def _layer_spec(task_name: str, spec) -> dict:
    if isinstance(spec, dict) and "class_name" in spec:
        return spec
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        if spec <= 0:
            raise ValueError(
                f"Invalid hidden layer size {spec} for task '{task_name}'. "
                "Expected a positive int or a keras.layers.Layer."
            )
        spec = keras.layers.Dense(int(spec), activation="relu")
    if not isinstance(spec, keras.layers.Layer):
        raise ValueError(
            f"Invalid entry in `hidden_layers` of task '{task_name}': {spec!r}. "
            "Expected a positive int (a Dense+ReLU layer of that size) or a "
            "keras.layers.Layer."
        )
    return keras.saving.serialize_keras_object(spec)


def _apply_sample_weight(mask, sample_weight):
    if sample_weight is None:
        return mask
    sample_weight = ops.cast(sample_weight, mask.dtype)
    while len(sample_weight.shape) < len(mask.shape):
        sample_weight = ops.expand_dims(sample_weight, -1)
    if len(sample_weight.shape) > len(mask.shape):
        sample_weight = ops.reshape(sample_weight, ops.shape(mask))
    return mask * sample_weight


def class_names(names, scores):
    """The class names as a string tensor shaped like `scores` `[batch, k]`
    (TF Serving's Classify `classes` output); serving graphs only."""
    import numpy as np

    table = tf.constant(np.array([str(n) for n in names], dtype=object))
    return tf.broadcast_to(table, tf.shape(scores))
