"""`MultiLabel`: any subset of `num_labels` labels per example (sigmoid head).

The head ends in `MultiLabelOutput` (named after the task), which outputs
probabilities and stores the decision thresholds as a non-trainable weight:
calibration writes them (`kerasmtl.calibration.calibrate_thresholds`), `.keras`
files and exported SavedModels carry them, and a task bound to a model
(`Task.bind`) reads them for its serving predictions and metrics.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf  # in-graph label checks
from keras import ops

from kerasmtl.layers.multilabel_heads import LabelAttentionHead, MultiLabelOutput
from kerasmtl.losses.multilabel import (
    AsymmetricLoss,
    MultiLabelLoss,
    SigmoidFocalLoss,
    sigmoid_crossentropy,
)
from kerasmtl.tasks.base import Task, _apply_sample_weight, class_names
from kerasmtl.tasks.multilabel_arguments import (
    check_decision,
    check_head,
    check_label_smoothing,
    check_labels,
    check_num_labels,
    check_per_label,
)


@keras.saving.register_keras_serializable(package="kerasmtl")
class MultiLabel(Task):
    """Multi-label classification: one probability per label.

    Labels are `(batch, num_labels)` with 1 (present), 0 (absent) and -1
    (unknown); a row may be partly known, and unknown elements are masked one by
    one. The output is per-label probabilities. Serving adds
    `<name>_prediction`, the int32 0/1 decisions `(batch, num_labels)`, and,
    when `labels` are named, `<name>_labels`: strings `(batch, num_labels)`
    holding the label's name where predicted and `""` elsewhere.

    Decisions use the thresholds stored in the head's output layer once the
    task is bound to a model (so calibrated thresholds apply, see
    `kerasmtl.calibration`), else the `threshold` argument. With
    `decision="top_k"` the `top_k` most probable labels are predicted,
    whatever their probability. The default metrics `binary_accuracy` and `f1`
    (micro) score these decisions; `auc` scores the probabilities.

    Losses take the head's probabilities (outputs stay probabilities: serving
    relies on it), clipped to `[1e-7, 1 - 1e-7]` as Keras' own cross-entropy;
    see `kerasmtl.losses.multilabel`.

    Args:
        name: str. The task's name.
        num_labels: int >= 1, or None when `labels` are given. Defaults to `None`.
        threshold: float in (0, 1), or a list of one per label. Initial
            decision threshold(s). Defaults to `0.5`.
        labels: sequence of unique non-empty str, or None. Label names, in
            output order; set `num_labels`. Defaults to `None`.
        loss: `"auto"` (= `"bce"`), `"bce"`, `"focal"` (`SigmoidFocalLoss()`),
            `"asl"` (`AsymmetricLoss()`), a `kerasmtl.losses.multilabel`
            loss object (its own settings), or any Keras loss (applied per
            element). Defaults to `"auto"`.
        label_smoothing: float in [0, 1). Targets become `y (1 - s) + s / 2`
            (built-in losses only). Defaults to `0.0`.
        pos_weight: float > 0, list of one per label, or None. Multiplies the
            positive term of the built-in losses, as PyTorch's
            `BCEWithLogitsLoss(pos_weight=...)`. Defaults to `None`.
        decision: `"threshold"` or `"top_k"`. Defaults to `"threshold"`.
        top_k: int in [1, num_labels] with `decision="top_k"`, else None.
            Defaults to `None`.
        head: `"independent"` (a Dense logit per label) or `"label_attention"`
            (`kerasmtl.layers.multilabel_heads.LabelAttentionHead`, labels
            attend over the features and over each other). Defaults to
            `"independent"`.
        head_config: dict or None. Arguments of `LabelAttentionHead`
            (`embed_dim`, `num_heads`, ...). Defaults to `None`.
        **kwargs: `hidden_layers`, `loss_weight` (see `Task`).

    Examples:

    >>> task = MultiLabel("tags", labels=["cat", "dog", "car"], threshold=0.4)
    >>> task.num_labels
    3
    >>> out = task.postprocess(np.array([[0.2, 0.4, 0.9]], "float32"))
    >>> out["tags_prediction"].numpy().tolist()
    [[0, 1, 1]]
    >>> out["tags_labels"].numpy().tolist()
    [[b'', b'dog', b'car']]
    """

    kind = "multi_label"
    elementwise = True
    label_dtype = "int32"
    primary_metric = "f1"
    higher_is_better = True

    def __init__(
        self,
        name: str,
        num_labels: int | None = None,
        threshold: float | Sequence[float] = 0.5,
        *,
        labels: Sequence[str] | None = None,
        loss: Any = "auto",
        label_smoothing: float = 0.0,
        pos_weight: float | Sequence[float] | None = None,
        decision: str = "threshold",
        top_k: int | None = None,
        head: str = "independent",
        head_config: dict | None = None,
        **kwargs,
    ):
        super().__init__(name, loss=loss, **kwargs)
        self.labels = check_labels(name, labels)
        self.num_labels = check_num_labels(name, num_labels, self.labels)
        self.threshold = check_per_label(name, "threshold", threshold, self.num_labels,
                                         low=0.0, high=1.0, expected="in (0, 1)")
        if pos_weight is not None:
            pos_weight = check_per_label(name, "pos_weight", pos_weight,
                                         self.num_labels, low=0.0, high=None,
                                         expected="> 0")
        self.pos_weight = pos_weight
        self.label_smoothing = check_label_smoothing(name, label_smoothing, loss, pos_weight)
        self.top_k = check_decision(name, decision, top_k, self.num_labels)
        self.decision = decision
        check_head(name, head, head_config)
        self.head = head
        self.head_config = None if head_config is None else dict(head_config)
        if head == "label_attention":
            try:  # fail now, naming the task, not when the model is built
                self._make_logits_layer()
            except (TypeError, ValueError) as error:
                raise ValueError(
                    f"Invalid `head_config` of task '{name}': {error}"
                ) from error
        self._output_layer = None  # set on the copy returned by bind()

    @classmethod
    def from_data(cls, data, **kwargs) -> MultiLabel:
        """A task that fits `data`: named `data.task_name`, with
        `data.num_labels` labels.

        Args:
            data: `kerasmtl.data.MultiLabelData` (e.g. from `load_mulan`,
                `read_label_csv` or `synthetic_multilabel`), or any object
                with `task_name` and `num_labels`.
            **kwargs: the other arguments of `MultiLabel` (`threshold`,
                `loss`, `head`, ...).

        Examples:

        >>> from kerasmtl.data import synthetic_multilabel
        >>> data = synthetic_multilabel(10, num_labels=4)
        >>> task = MultiLabel.from_data(data, threshold=0.4)
        >>> task.name, task.num_labels
        ('labels', 4)
        """
        missing = [a for a in ("task_name", "num_labels") if not hasattr(data, a)]
        if missing:
            raise ValueError(
                f"MultiLabel.from_data() expects a MultiLabelData (with `task_name` "
                f"and `num_labels`). Received: {type(data).__name__}, which lacks "
                f"{missing}. Build one with a reader of kerasmtl.data (e.g. "
                "load_mulan, read_label_csv), or call MultiLabel(name, num_labels=...)."
            )
        return cls(data.task_name, num_labels=data.num_labels, **kwargs)

    # -- head -----------------------------------------------------------------

    @property
    def output_shape(self):
        return (self.num_labels,)

    @property
    def label_shape(self):
        return (self.num_labels,)

    @property
    def predicts_one_probability(self):
        return self.num_labels == 1

    def make_output_layer(self):
        return MultiLabelOutput(thresholds=self.threshold, name=self.name, dtype="float32")

    def _make_logits_layer(self):
        if self.head == "label_attention":
            return LabelAttentionHead(
                self.num_labels, name=f"{self.name}_label_attention",
                **(self.head_config or {}),
            )
        return keras.layers.Dense(self.num_labels, name=f"{self.name}_logits",
                                  dtype="float32")

    def build_head(self, features):
        # As Task.build_head, with a logits layer before the output layer.
        x = self.build_hidden_layers(features)
        return self.make_output_layer()(self._make_logits_layer()(x))

    def bind(self, model):
        try:
            layer = model.get_layer(self.name)
        except ValueError:
            layer = None
        if not isinstance(layer, MultiLabelOutput):
            return self  # a hand-built head: decisions use `threshold`
        bound = copy.copy(self)
        bound._output_layer = layer
        return bound

    @property
    def output_layer(self) -> MultiLabelOutput | None:
        """The bound model's `MultiLabelOutput` layer, or None if unbound."""
        return self._output_layer

    def thresholds(self):
        """Decision thresholds `(num_labels,)`: the bound layer's weight, or
        the `threshold` argument for an unbound task."""
        if self._output_layer is not None:
            return ops.convert_to_tensor(self._output_layer.thresholds)
        return ops.convert_to_tensor(
            np.broadcast_to(np.asarray(self.threshold, "float32"), (self.num_labels,))
        )

    def decide(self, y_pred):
        """0/1 int32 decisions `(batch, num_labels)` from probabilities."""
        y_pred = ops.cast(ops.convert_to_tensor(y_pred), "float32")
        if self.decision == "top_k":
            _, indices = ops.top_k(y_pred, self.top_k)
            chosen = ops.sum(ops.one_hot(indices, self.num_labels), axis=-2)
            return ops.cast(chosen > 0, "int32")
        return ops.cast(y_pred >= self.thresholds(), "int32")

    # -- labels and loss ------------------------------------------------------

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

    def valid_label_values(self, labels):
        valid = tf.equal(labels, -1) | tf.equal(labels, 0) | tf.equal(labels, 1)
        return valid, "-1 (missing), 0 or 1"

    def standardize_labels(self, y):
        y = ops.cast(ops.convert_to_tensor(y), "float32")
        y = ops.reshape(y, (-1, self.num_labels))
        known = y >= 0
        return ops.where(known, y, 0.0), ops.cast(known, "float32")

    def element_loss(self, y_true, y_pred):
        return sigmoid_crossentropy(
            y_true, y_pred, label_smoothing=self.label_smoothing,
            pos_weight=self.pos_weight,
        )

    def resolve_loss(self, loss="auto"):
        if loss is None or (isinstance(loss, str) and loss == "auto"):
            loss = self.loss
        if isinstance(loss, MultiLabelLoss):
            # Its own per-element values: the task masks them one by one.
            return loss.elementwise
        return super().resolve_loss(loss)

    def named_loss(self, name):
        settings = {"label_smoothing": self.label_smoothing, "pos_weight": self.pos_weight}
        if name == "bce":
            return self.element_loss
        if name == "focal":
            return SigmoidFocalLoss(**settings).elementwise
        if name == "asl":
            return AsymmetricLoss(**settings).elementwise
        return None

    # -- metrics --------------------------------------------------------------

    def default_metrics(self):
        return [
            _on_decisions(keras.metrics.BinaryAccuracy(name="binary_accuracy")),
            _on_decisions(keras.metrics.F1Score(average="micro", threshold=0.5, name="f1")),
            keras.metrics.AUC(name="auc"),
        ]

    def metric_from_identifier(self, identifier):
        if identifier in ("binary_accuracy", "accuracy", "acc"):
            return _on_decisions(keras.metrics.BinaryAccuracy(name="binary_accuracy"))
        if identifier == "f1":
            return _on_decisions(
                keras.metrics.F1Score(average="micro", threshold=0.5, name="f1")
            )
        if isinstance(identifier, str):
            # Every name of kerasmtl.metrics.multilabel_report, e.g. "f1_macro",
            # "hamming_loss", "label_ranking_average_precision".
            from kerasmtl.metrics.multilabel_all import multilabel_keras_metrics

            known = {m.name: m for m in multilabel_keras_metrics(num_labels=self.num_labels)}
            if identifier in known:
                return known[identifier]
        return super().metric_from_identifier(identifier)

    def update_metrics(self, metrics, y, y_pred, sample_weight=None):
        # Thresholded metrics see this task's decisions (stored thresholds or
        # top-k), the others the probabilities. Keras' own metrics get one row
        # per known label element; kerasmtl.metrics' multi-label metrics mask
        # unknown (-1) labels themselves and get whole rows.
        y_true, mask = self.standardize_labels(y)
        decisions = ops.cast(self.decide(y_pred), "float32")
        weights = ops.reshape(_apply_sample_weight(mask, sample_weight), (-1,))
        flat_true = ops.reshape(y_true, (-1, 1))
        raw_true = ops.reshape(ops.cast(y, "float32"), (-1, self.num_labels))
        for metric in metrics:
            thresholded = getattr(metric, "_on_decisions", False) or hasattr(metric, "threshold")
            if getattr(metric, "masks_unknown_labels", False):
                values = decisions if thresholded else y_pred
                metric.update_state(raw_true, values, sample_weight=sample_weight)
            else:
                values = decisions if getattr(metric, "_on_decisions", False) else y_pred
                metric.update_state(flat_true, ops.reshape(values, (-1, 1)),
                                    sample_weight=weights)

    # -- serving --------------------------------------------------------------

    def postprocess(self, y_pred):
        predictions = self.decide(y_pred)
        outputs = {f"{self.name}_prediction": predictions}
        if self.labels is not None:
            # Strings exist only in TensorFlow; serving graphs are TensorFlow.
            import tensorflow as tf

            names = tf.broadcast_to(tf.constant(self.labels), tf.shape(predictions))
            outputs[f"{self.name}_labels"] = tf.where(
                predictions > 0, names, tf.zeros_like(names)
            )
        return outputs

    # -- config ---------------------------------------------------------------


    example_api = "classify"

    def example_outputs(self, y_pred):
        scores = ops.cast(y_pred, "float32")
        names = self.labels if self.labels is not None else range(self.num_labels)
        return {"classes": class_names(names, scores), "scores": scores}

    def get_config(self):
        return {
            **super().get_config(),
            "num_labels": self.num_labels,
            "threshold": self.threshold,
            "labels": self.labels,
            "label_smoothing": self.label_smoothing,
            "pos_weight": self.pos_weight,
            "decision": self.decision,
            "top_k": self.top_k,
            "head": self.head,
            "head_config": self.head_config,
        }


def _on_decisions(metric):
    metric._on_decisions = True  # read by MultiLabel.update_metrics
    return metric
