"""`Classification`: one class out of `num_classes` per example (softmax head)."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from kerasmtl.tasks.base import Task, class_names
from kerasmtl.tasks.label_checks import ids_or_missing


@keras.saving.register_keras_serializable(package="kerasmtl")
class Classification(Task):
    """Single-label classification with a softmax head.

    Labels are integer class ids, shape `(batch,)` or `(batch, 1)`; `-1` marks
    a missing label. The output is the class probabilities `(batch,
    num_classes)`; serving adds `<name>_prediction`, the argmax class id.

    Args:
        name: str. The task's name.
        num_classes: int. Number of classes, at least 2.
        label_smoothing: float in [0, 1). Defaults to `0.0`.
        **kwargs: `hidden_layers`, `loss`, `loss_weight` (see `Task`).

    Examples:

    >>> task = Classification("species", num_classes=3)
    >>> task.output_shape
    (3,)
    """

    kind = "classification"
    label_dtype = "int32"
    primary_metric = "accuracy"
    higher_is_better = True

    def __init__(self, name: str, num_classes: int, label_smoothing: float = 0.0, **kwargs):
        super().__init__(name, **kwargs)
        if not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
            raise ValueError(
                f"Invalid value for argument `num_classes` of task '{name}'. "
                f"Expected an int >= 2. Received: num_classes={num_classes!r}"
            )
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(
                f"Invalid value for argument `label_smoothing` of task '{name}'. "
                f"Expected a float in [0, 1). Received: label_smoothing={label_smoothing}"
            )
        self.num_classes = int(num_classes)
        self.label_smoothing = float(label_smoothing)

    @property
    def output_shape(self):
        return (self.num_classes,)

    @property
    def label_shape(self):
        return ()

    def make_output_layer(self):
        return keras.layers.Dense(
            self.num_classes, activation="softmax", name=self.name, dtype="float32"
        )

    def label_help(self):
        return (
            f"Pass integer class ids in [0, {self.num_classes}) and -1 for a "
            "missing label."
        )

    def check_label_values(self, labels):
        super().check_label_values(labels)
        labels = np.asarray(labels)
        self.check_integer_labels(labels)
        if labels.dtype.kind in "fiu" and labels.size:
            bad = (labels < -1) | (labels >= self.num_classes)
            if bad.any():
                raise ValueError(
                    f"Labels for task '{self.name}' (classification) must lie in "
                    f"[-1, {self.num_classes}); found {labels[bad].ravel()[:5].tolist()}. "
                    + self.label_help()
                )

    def valid_label_values(self, labels):
        return (
            ids_or_missing(labels, self.num_classes),
            f"class ids in [0, {self.num_classes}) or -1 (missing)",
        )

    def standardize_labels(self, y):
        y = ops.convert_to_tensor(y)
        if len(y.shape) == 2:
            y = ops.squeeze(y, -1)
        y = ops.cast(y, "int32")
        mask = ops.cast(y >= 0, "float32")
        return ops.maximum(y, 0), mask

    def element_loss(self, y_true, y_pred):
        if self.label_smoothing:
            y_one_hot = ops.one_hot(y_true, self.num_classes)
            return keras.losses.categorical_crossentropy(
                y_one_hot, y_pred, label_smoothing=self.label_smoothing
            )
        return keras.losses.sparse_categorical_crossentropy(y_true, y_pred)

    def default_metrics(self):
        return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]

    def metric_from_identifier(self, identifier):
        if identifier in ("accuracy", "acc"):
            return keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        return super().metric_from_identifier(identifier)

    def postprocess(self, y_pred):
        return {f"{self.name}_prediction": ops.argmax(y_pred, axis=-1)}


    example_api = "classify"

    def example_outputs(self, y_pred):
        scores = ops.cast(y_pred, "float32")
        return {"classes": class_names(range(self.num_classes), scores), "scores": scores}

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "label_smoothing": self.label_smoothing,
        }
