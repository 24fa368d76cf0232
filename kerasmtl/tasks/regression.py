"""`Regression`: one or more real values per example (linear head)."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import tensorflow as tf  # in-graph label checks
from keras import ops

from kerasmtl.tasks.base import Task


@keras.saving.register_keras_serializable(package="kerasmtl")
class Regression(Task):
    """Regression of `units` real values with a linear head and squared error.

    Labels are floats of shape `(batch,)` (when `units=1`) or `(batch, units)`;
    `NaN` marks a missing value, per element. Serving adds
    `<name>_prediction`, the predicted values.

    Args:
        name: str. The task's name.
        units: int. Number of values predicted per example. Defaults to `1`.
        **kwargs: `hidden_layers`, `loss`, `loss_weight` (see `Task`).

    Examples:

    >>> Regression("size").output_shape
    (1,)
    """

    kind = "regression"
    elementwise = True
    label_dtype = "float32"
    primary_metric = "mae"
    higher_is_better = False

    def __init__(self, name: str, units: int = 1, **kwargs):
        super().__init__(name, **kwargs)
        if not isinstance(units, (int, np.integer)) or units < 1:
            raise ValueError(
                f"Invalid value for argument `units` of task '{name}'. "
                f"Expected an int >= 1. Received: units={units!r}"
            )
        self.units = int(units)

    @property
    def output_shape(self):
        return (self.units,)

    @property
    def label_shape(self):
        return (self.units,)

    def make_output_layer(self):
        return keras.layers.Dense(self.units, name=self.name, dtype="float32")

    def label_help(self):
        return "Pass float values and NaN for a missing value."

    def check_label_values(self, labels):
        super().check_label_values(labels)
        labels = np.asarray(labels)
        if labels.dtype.kind not in "fiub":
            raise ValueError(
                f"Labels for task '{self.name}' (regression) have dtype "
                f"{labels.dtype}; expected numbers. {self.label_help()}"
            )
        if labels.dtype.kind in "iu" and (labels == -1).any():
            # -1 marks a missing *integer* label elsewhere; here it is a value.
            warnings.warn(
                f"Labels for task '{self.name}' (regression) are integers and "
                f"contain -1 ({int((labels == -1).sum())} value(s)): they are "
                "trained as the value -1. A missing regression label is NaN: "
                "cast the labels to float and set missing ones to NaN.",
                stacklevel=2,
            )
        if labels.dtype.kind == "f" and np.isinf(labels).any():
            raise ValueError(
                f"Labels for task '{self.name}' (regression) contain inf. "
                + self.label_help()
            )

    def valid_label_values(self, labels):
        if not labels.dtype.is_floating:
            return None
        return (
            tf.logical_not(tf.math.is_inf(labels)),
            "finite numbers, or NaN for a missing label",
        )

    def standardize_labels(self, y):
        y = ops.cast(ops.convert_to_tensor(y), "float32")
        y = ops.reshape(y, (-1, self.units))
        known = ops.logical_not(ops.isnan(y))
        return ops.where(known, y, 0.0), ops.cast(known, "float32")

    def element_loss(self, y_true, y_pred):
        return ops.square(y_true - y_pred)

    def default_metrics(self):
        return [
            keras.metrics.MeanAbsoluteError(name="mae"),
            keras.metrics.RootMeanSquaredError(name="rmse"),
        ]

    def postprocess(self, y_pred):
        return {f"{self.name}_prediction": y_pred}


    @property
    def example_api(self):
        # TF Serving's Regress gives one value per example.
        return "regress" if self.units == 1 else None

    def example_outputs(self, y_pred):
        return {"outputs": ops.reshape(ops.cast(y_pred, "float32"), (-1,))}

    def get_config(self):
        return {**super().get_config(), "units": self.units}
