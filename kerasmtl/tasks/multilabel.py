"""`MultiLabel`: any subset of `num_labels` labels per example (sigmoid head)."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from kerasmtl.tasks.base import Task


@keras.saving.register_keras_serializable(package="kerasmtl")
class MultiLabel(Task):
    """Multi-label classification: one independent sigmoid per label.

    Labels are `(batch, num_labels)` with 1 (present), 0 (absent) and -1
    (unknown); a row may be partly known, and unknown elements are masked one by
    one. The output is per-label probabilities; serving adds
    `<name>_prediction`, the 0/1 vector thresholded at `threshold`.

    Args:
        name: str. The task's name.
        num_labels: int. Number of labels, at least 1.
        threshold: float in (0, 1). Decision threshold. Defaults to `0.5`.
        **kwargs: `hidden_layers`, `loss`, `loss_weight` (see `Task`).

    Examples:

    >>> MultiLabel("tags", num_labels=5).output_shape
    (5,)
    """

    kind = "multi_label"
    elementwise = True
    label_dtype = "int32"
    primary_metric = "f1"
    higher_is_better = True

    def __init__(self, name: str, num_labels: int, threshold: float = 0.5, **kwargs):
        super().__init__(name, **kwargs)
        if not isinstance(num_labels, (int, np.integer)) or num_labels < 1:
            raise ValueError(
                f"Invalid value for argument `num_labels` of task '{name}'. "
                f"Expected an int >= 1. Received: num_labels={num_labels!r}"
            )
        if not 0.0 < threshold < 1.0:
            raise ValueError(
                f"Invalid value for argument `threshold` of task '{name}'. "
                f"Expected a float in (0, 1). Received: threshold={threshold}"
            )
        self.num_labels = int(num_labels)
        self.threshold = float(threshold)

    @property
    def output_shape(self):
        return (self.num_labels,)

    @property
    def label_shape(self):
        return (self.num_labels,)

    def make_output_layer(self):
        return keras.layers.Dense(
            self.num_labels, activation="sigmoid", name=self.name, dtype="float32"
        )

    def label_help(self):
        return "Pass 1 (present), 0 (absent) or -1 (unknown) for every label."

    def check_label_values(self, labels):
        super().check_label_values(labels)
        labels = np.asarray(labels)
        if labels.dtype.kind == "f" and np.isnan(labels).any():
            raise ValueError(
                f"Labels for task '{self.name}' (multi-label) contain NaN. "
                + self.label_help()
            )
        bad = ~np.isin(labels, (-1, 0, 1))
        if bad.any():
            raise ValueError(
                f"Labels for task '{self.name}' (multi-label) must be -1, 0 or "
                f"1; found {np.unique(labels[bad])[:5].tolist()}. {self.label_help()}"
            )

    def standardize_labels(self, y):
        y = ops.cast(ops.convert_to_tensor(y), "float32")
        y = ops.reshape(y, (-1, self.num_labels))
        known = y >= 0
        return ops.where(known, y, 0.0), ops.cast(known, "float32")

    def element_loss(self, y_true, y_pred):
        y_pred = ops.clip(y_pred, 1e-7, 1.0 - 1e-7)
        return -(y_true * ops.log(y_pred) + (1.0 - y_true) * ops.log(1.0 - y_pred))

    def default_metrics(self):
        return [
            keras.metrics.BinaryAccuracy(name="binary_accuracy", threshold=self.threshold),
            keras.metrics.F1Score(average="micro", threshold=self.threshold, name="f1"),
            keras.metrics.AUC(name="auc"),
        ]

    def postprocess(self, y_pred):
        return {
            f"{self.name}_prediction": ops.cast(y_pred >= self.threshold, "int32")
        }

    def get_config(self):
        return {
            **super().get_config(),
            "num_labels": self.num_labels,
            "threshold": self.threshold,
        }
