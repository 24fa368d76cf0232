"""`Segmentation`: one class per pixel (semantic segmentation head)."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf  # graph-only paths: shape assertion, export resize
from keras import ops

from kerasmtl.flip_averaging import flip_images
from kerasmtl.metrics.segmentation import MaskedMeanIoU, SegmentationEvaluator
from kerasmtl.tasks.base import Task
from kerasmtl.tasks.label_checks import fmt_shape, ids_or_missing


@keras.saving.register_keras_serializable(package="kerasmtl")
class Segmentation(Task):
    """Semantic segmentation: one of `num_classes` classes per pixel.

    The head reads a shared feature map `[B, H / s, W / s, C]` (stride `s`,
    4 in the zoo's trunk): a 3x3 convolution with ReLU, a 1x1 convolution to
    `num_classes` logits, then bilinear upsampling by `upsample`
    (`BilinearUpSampling2D`, Keras' `UpSampling2D` that also exports on
    images of any size; named after the task), so that with
    `upsample == s` the output is per-pixel *logits* `[B, H, W, num_classes]`
    at input resolution.

    Labels are int class maps `[B, H, W]` (or `[B, H, W, 1]`) of the image's
    size. Pixels labelled `-1` (missing) or `ignore_class` (e.g. VOC's 255)
    are masked: the loss is the softmax cross-entropy averaged over the known
    pixels of the batch, and exactly 0 when the batch has none. An image whose
    mask is missing is `-1` everywhere.

    A label map whose size differs from the logits' raises an error naming
    both shapes: the image height and width must be divisible by the trunk's
    stride (pad or resize the image), and the mask must have the image's size.

    Metrics: `"mean_iou"` (`kerasmtl.metrics.MaskedMeanIoU`, the primary
    metric) and `"pixel_accuracy"`, both over known pixels. Serving exports
    the logits as `<name>_logits` and the argmax class map as `<name>`, int32
    `[B, H, W]`.

    Args:
        name: str. The task's name.
        num_classes: int. Number of classes (background included), at least 2.
        ignore_class: int or None. A label value to mask besides -1, e.g. 255.
            Defaults to `None`.
        upsample: int >= 1. Upsampling factor of the head: the stride of the
            feature map it reads. Defaults to `4`.
        head_channels: int >= 1. Filters of the head's 3x3 convolution.
            Defaults to `64`.
        hidden_layers: sequence of int or `keras.layers.Layer`, applied to the
            feature map before the head (an int `n` is a per-pixel
            `Dense(n, relu)`). Defaults to `()`.
        loss: `"auto"` (masked sparse cross-entropy on logits) or a Keras
            loss taking `(labels [B, H, W], logits [B, H, W, C])` and returning
            per-pixel values (it gets logits: pass `from_logits=True`).
            Defaults to `"auto"`.
        loss_weight: float. Defaults to `1.0`.

    Examples:

    >>> task = Segmentation("segmentation", num_classes=3, ignore_class=255)
    >>> task.output_shape, task.raw_output_name
    ((None, None, 3), 'segmentation_logits')
    >>> logits = np.zeros((1, 2, 2, 3), "float32")
    >>> logits[0, 0, 0, 2] = 1.0
    >>> task.postprocess(logits)["segmentation"].numpy().tolist()
    [[[2, 0], [0, 0]]]
    >>> loss, count = task.masked_loss(np.array([[[2, 255], [-1, 1]]]), logits)
    >>> int(count)  # two known pixels
    2
    """

    kind = "segmentation"
    label_dtype = "int32"
    primary_metric = "mean_iou"
    higher_is_better = True

    def __init__(
        self,
        name: str,
        num_classes: int,
        ignore_class: int | None = None,
        *,
        upsample: int = 4,
        head_channels: int = 64,
        hidden_layers=(),
        loss: Any = "auto",
        loss_weight: float = 1.0,
    ):
        super().__init__(
            name, hidden_layers=hidden_layers, loss=loss, loss_weight=loss_weight
        )
        self.num_classes = _check_int(name, "num_classes", num_classes, 2)
        if ignore_class is not None:
            if (
                isinstance(ignore_class, bool)
                or not isinstance(ignore_class, (int, np.integer))
                or ignore_class < 0
            ):
                raise ValueError(
                    f"Invalid value for argument `ignore_class` of task '{name}'. "
                    "Expected an int >= 0 (e.g. 255) or None; -1 is always masked. "
                    f"Received: ignore_class={ignore_class!r}"
                )
            ignore_class = int(ignore_class)
        self.ignore_class = ignore_class
        self.upsample = _check_int(name, "upsample", upsample, 1)
        self.head_channels = _check_int(name, "head_channels", head_channels, 1)

    # -- head -----------------------------------------------------------------

    @property
    def output_shape(self):
        return (None, None, self.num_classes)

    @property
    def label_shape(self):
        return (None, None)

    @property
    def raw_output_name(self):
        return f"{self.name}_logits"

    def make_output_layer(self):
        # float32 so mixed-precision models still output float32 logits.
        return BilinearUpSampling2D(self.upsample, name=self.name, dtype="float32")

    def build_head(self, features):
        if len(features.shape) != 4:
            raise ValueError(
                f"Task '{self.name}' (segmentation) builds its head on a feature "
                f"map [B, H, W, C]; received features of shape "
                f"{fmt_shape(features.shape)}."
            )
        x = self.build_hidden_layers(features)
        x = keras.layers.Conv2D(
            self.head_channels,
            3,
            padding="same",
            activation="relu",
            name=f"{self.name}_conv",
        )(x)
        x = keras.layers.Conv2D(self.num_classes, 1, name=f"{self.name}_classifier")(x)
        return self.make_output_layer()(x)

    # -- labels and loss ------------------------------------------------------

    def label_help(self):
        ignore = "" if self.ignore_class is None else f" or {self.ignore_class}"
        return (
            f"Pass an int class map [B, H, W] of the image's size with ids in "
            f"[0, {self.num_classes}); mark unknown pixels with -1{ignore}."
        )

    def check_label_shape(self, shape):
        shape = tuple(shape)
        if len(shape) == 4 and shape[-1] in (1, None):
            shape = shape[:-1]
        if len(shape) != 3:
            raise ValueError(
                f"Labels for task '{self.name}' (segmentation) have shape "
                f"{fmt_shape(shape)}, expected (None, None, None) or "
                f"(None, None, None, 1). {self.label_help()}"
            )

    def check_label_values(self, labels):
        super().check_label_values(labels)
        labels = np.asarray(labels)
        self.check_integer_labels(labels, unit="pixel")
        known = labels >= 0
        if self.ignore_class is not None:
            known &= labels != self.ignore_class
        bad = (labels < -1) | (known & (labels >= self.num_classes))
        if bad.any():
            raise ValueError(
                f"Labels for task '{self.name}' (segmentation) must lie in [-1, "
                f"{self.num_classes})"
                + ("" if self.ignore_class is None else f" or be {self.ignore_class}")
                + f"; found {np.unique(labels[bad])[:5].tolist()}. "
                + self.label_help()
            )

    def valid_label_values(self, labels):
        valid = ids_or_missing(labels, self.num_classes)
        expected = f"class ids in [0, {self.num_classes}) or -1 (missing)"
        if self.ignore_class is not None:
            valid |= tf.equal(labels, self.ignore_class)
            expected += f" or the ignore class {self.ignore_class}"
        return valid, expected

    def standardize_labels(self, y):
        y = ops.convert_to_tensor(y)
        if len(y.shape) == 4:
            y = ops.squeeze(y, -1)
        y = ops.cast(y, "int32")
        known = y >= 0
        if self.ignore_class is not None:
            known = known & (y != self.ignore_class)
        return ops.where(known, y, 0), ops.cast(known, "float32")

    def check_spatial_size(self, y_true, y_pred):
        """Returns `y_pred`; raises if the label map `[B, H, W]` and the
        logits `[B, H', W', C]` differ in size (a ValueError when the static
        shapes tell, else a graph assertion with the same message)."""
        label_hw, logit_hw = tuple(y_true.shape[1:3]), tuple(y_pred.shape[1:3])
        # No quotes: TensorFlow escapes them in assertion messages.
        advice = (
            "The image height and width must be divisible by the stride of the "
            "model (pad or resize the image), and the mask must have the size of "
            "the image."
        )
        where = f"Task '{self.name}' (segmentation)"
        if all(d is not None for d in label_hw + logit_hw):
            if label_hw != logit_hw:
                raise ValueError(
                    f"{where}: the label map has spatial shape (H, W) = {label_hw} "
                    f"but the logits have {logit_hw} (labels "
                    f"{fmt_shape(y_true.shape)}, logits {fmt_shape(y_pred.shape)})."
                    f" {advice}"
                )
            return y_pred
        check = tf.debugging.assert_equal(
            tf.shape(y_true)[1:3],
            tf.shape(y_pred)[1:3],
            message=f"Task {self.name} (segmentation): the label map (H, W) = x "
            f"differs from the logits (H, W) = y. {advice}",
        )
        with tf.control_dependencies([check]):
            return tf.identity(y_pred)

    def masked_loss(self, y, y_pred, sample_weight=None, loss_fn=None):
        y = ops.convert_to_tensor(y)
        y_pred = self.check_spatial_size(y, ops.convert_to_tensor(y_pred))
        return super().masked_loss(y, y_pred, sample_weight, loss_fn)

    def element_loss(self, y_true, y_pred):
        return keras.losses.sparse_categorical_crossentropy(
            y_true, y_pred, from_logits=True
        )

    # -- metrics --------------------------------------------------------------

    def default_metrics(self):
        return [self._mean_iou(), self._pixel_accuracy()]

    def _mean_iou(self):
        return MaskedMeanIoU(self.num_classes, self.ignore_class, name="mean_iou")

    def _pixel_accuracy(self):
        return keras.metrics.SparseCategoricalAccuracy(name="pixel_accuracy")

    def metric_from_identifier(self, identifier):
        if identifier in ("mean_iou", "miou"):
            return self._mean_iou()
        if identifier in ("pixel_accuracy", "accuracy", "acc"):
            return self._pixel_accuracy()
        return super().metric_from_identifier(identifier)

    def update_metrics(self, metrics, y, y_pred, sample_weight=None):
        y = ops.convert_to_tensor(y)
        y_pred = self.check_spatial_size(y, ops.convert_to_tensor(y_pred))
        super().update_metrics(metrics, y, y_pred, sample_weight)

    # -- serving --------------------------------------------------------------

    def dataset_evaluator(self):
        """Mean IoU (classes absent from labels and predictions left out) and
        pixel accuracy over every known pixel of the data set."""
        return SegmentationEvaluator(self.name, self.num_classes, self.ignore_class)

    def postprocess(self, y_pred):
        return {self.name: ops.cast(ops.argmax(y_pred, axis=-1), "int32")}

    def flip_back(self, y_pred, horizontal, vertical):
        # Per-pixel logits: flipped as the image was.
        return flip_images(y_pred, horizontal, vertical)

    def serving_outputs(self, y_pred, geometry=None):
        outputs = super().serving_outputs(y_pred, geometry)
        if geometry is None:
            return outputs
        # Logits and class map are image-shaped: cropped to the request's image.
        return {key: geometry.crop(value) for key, value in outputs.items()}

    # -- config ---------------------------------------------------------------

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "ignore_class": self.ignore_class,
            "upsample": self.upsample,
            "head_channels": self.head_channels,
        }


@keras.saving.register_keras_serializable(package="kerasmtl")
class BilinearUpSampling2D(keras.layers.UpSampling2D):
    """`keras.layers.UpSampling2D(size, interpolation="bilinear")` that also
    runs in graphs traced without AutoGraph (Keras' SavedModel export) on
    inputs of unknown height or width.

    `keras.ops.image.resize` checks its target size with a Python `if`,
    which a symbolic size cannot answer outside AutoGraph; with the
    TensorFlow backend and an unknown spatial size this layer calls the same
    `tf.image.resize` (bilinear, no antialiasing) that Keras calls. The values
    are the same either way.

    Args:
        size: int or tuple of 2 ints. Upsampling factors (rows, columns).
        **kwargs: `keras.layers.UpSampling2D` arguments except
            `interpolation`.

    Examples:

    >>> layer = BilinearUpSampling2D(2)
    >>> layer(np.ones((1, 2, 2, 1), "float32")).shape
    TensorShape([1, 4, 4, 1])
    """

    def __init__(self, size=(2, 2), **kwargs):
        kwargs.pop("interpolation", None)  # from get_config: always bilinear
        super().__init__(size=size, interpolation="bilinear", **kwargs)

    def call(self, inputs):
        if (
            keras.backend.backend() == "tensorflow"
            and self.data_format == "channels_last"
            and (inputs.shape[1] is None or inputs.shape[2] is None)
        ):
            size = tf.shape(inputs)[1:3] * tf.constant(self.size, tf.int32)
            resized = tf.image.resize(inputs, size, method="bilinear")
            return tf.cast(resized, inputs.dtype)
        return super().call(inputs)


def _check_int(name: str, argument: str, value, minimum: int) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or (value < minimum)
    ):
        raise ValueError(
            f"Invalid value for argument `{argument}` of task '{name}'. Expected "
            f"an int >= {minimum}. Received: {argument}={value!r}"
        )
    return int(value)
