"""`Detection`: anchor-free object detection, CenterNet style ("Objects as
Points", Zhou, Wang and Krähenbühl, arXiv 2019).

The head (`kerasmtl.layers.detection.CenterNetHead`) reads a shared feature
map of stride `stride` and outputs `[B, H / stride, W / stride,
num_classes + 4]`: class heat-map logits, box size `(w, h)` and center offset
`(dx, dy)` in grid units. Training targets are encoded in the graph from the
padded dict labels; serving decodes peaks and runs class-wise NMS in the graph.
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
import numpy as np
import tensorflow as tf  # in-graph label checks
from keras import ops

from kerasmtl.autograph import skip_autograph
from kerasmtl.flip_averaging import flip_images
from kerasmtl.layers.detection import CenterNetHead, centernet_targets
from kerasmtl.layers.detection_decoding import (
    decode_detections,
    detection_output_names,
    normalized_yxyx,
)
from kerasmtl.losses.detection import CenterNetLoss
from kerasmtl.metrics.detection import DetectionEvaluator
from kerasmtl.tasks.base import Task, _apply_sample_weight
from kerasmtl.tasks.detection_labels import DetectionLabelChecks

_METRICS = ("center_score", "size_l1", "offset_l1")


@keras.saving.register_keras_serializable(package="kerasmtl")
class Detection(DetectionLabelChecks, Task):
    """Object detection with a CenterNet head: boxes and classes per image.

    Labels are a dict padded to `M <= max_boxes` rows, `{"boxes": float32
    [B, M, 4], "classes": int32 [B, M]}`, boxes in `"xyxy"` absolute pixels
    of the model's input image (`kerasmtl.boxes`). Padding rows have class
    `-1`; an image with no objects is all padding; an image without a
    detection label has NaN boxes (`kerasmtl.boxes.missing_detection_label`)
    and is masked out of the loss. In the graph, boxes are clipped to the
    image, and boxes of zero size, classes out of range and padding are
    ignored (`fit` on arrays runs `check_label_values`, which raises on bad
    classes and NaN rows and warns about empty boxes). The image is taken to
    be the output grid times `stride`: inputs must be divisible by `stride`.

    Loss: `kerasmtl.losses.detection.CenterNetLoss` (focal loss on the heat
    map, L1 on size and offset at object centers, normalised over the batch
    as CenterNet); `masked_loss` returns it with the number of labelled
    images as the count, `(0, 0)` for a batch without one. When several
    objects share a center cell, the largest box gets the cell's size and
    offset targets (see `centernet_targets`).

    Serving (`postprocess`): peaks of the sigmoid heat map, top-`top_k`,
    class-wise NMS (`kerasmtl.layers.detection_decoding`), outputs padded to
    `max_detections`. For a task named `"detection"`: `detection_boxes`
    float32 `[B, max_detections, 4]`, `detection_scores` `[B,
    max_detections]`, `detection_classes` int32 (0-based; `-1`, with box and
    score 0, on padding rows) and `num_detections` int32 `[B]`; other names
    use the task's name as the prefix (`<name>_boxes`, ...,
    `<name>_num_detections`). The names are the TF Object Detection API's
    and `detection_boxes` has its format too: `[ymin, xmin, ymax, xmax]`
    normalised to the image (the model's input in `postprocess`; the
    request's image, before padding, in an exported SavedModel). The same
    boxes in kerasmtl's own format, `[x1, y1, x2, y2]` pixels, are
    `detection_boxes_xyxy` (what the metrics and instance masks read).
    Unlike the OD API, `detection_classes` are int32 and 0-based (the
    OD API's are float and 1-based).

    Metrics (cheap proxies; mAP comes from `kerasmtl.metrics.detection`):
    `center_score`, the mean heat-map probability of each object's class at
    its center (higher is better), and `size_l1`, `offset_l1`, the mean
    absolute errors at centers, in grid units.

    Args:
        name: str. The task's name.
        num_classes: int >= 1. Number of object classes.
        stride: int >= 1. Pixels per cell of the feature map the head reads.
            Defaults to `4`.
        max_boxes: int >= 1. Most boxes per image in the labels. Defaults to
            `100`.
        max_detections: int >= 1. Detections returned per image. Defaults to
            `100`.
        score_threshold: float in [0, 1). Serving drops scores not above it.
            Defaults to `0.05`.
        iou_threshold: float in [0, 1]. NMS overlap. Defaults to `0.5`.
        top_k: int >= 1. Heat-map peaks kept before NMS. Defaults to `100`.
        head_channels: int >= 0. Filters of the head's 3x3 convolutions.
            Defaults to `64`.
        size_weight: float >= 0. Weight of the size loss. Defaults to `0.1`.
        offset_weight: float >= 0. Weight of the offset loss. Defaults to `1.0`.
        min_overlap: float in (0, 1). IoU of the Gaussian radius rule.
            Defaults to `0.7`.
        hidden_layers, loss_weight: see `Task`. `loss` must be `"auto"`.

    Examples:

    >>> task = Detection("detection", num_classes=3, max_boxes=10)
    >>> task.output_shape
    (None, None, 7)
    >>> sorted(task.label_shape)
    ['boxes', 'classes']
    >>> raw = np.zeros((1, 8, 8, 7), "float32")
    >>> sorted(task.postprocess(raw))  # doctest: +NORMALIZE_WHITESPACE
    ['detection_boxes', 'detection_boxes_xyxy', 'detection_classes',
     'detection_scores', 'num_detections']
    """

    kind = "detection"
    label_dtype = "float32"
    primary_metric = "loss"
    higher_is_better = False

    def __init__(
        self,
        name: str,
        num_classes: int,
        *,
        stride: int = 4,
        max_boxes: int = 100,
        max_detections: int = 100,
        score_threshold: float = 0.05,
        iou_threshold: float = 0.5,
        top_k: int = 100,
        head_channels: int = 64,
        size_weight: float = 0.1,
        offset_weight: float = 1.0,
        min_overlap: float = 0.7,
        hidden_layers=(),
        loss="auto",
        loss_weight: float = 1.0,
    ):
        super().__init__(name, hidden_layers=hidden_layers, loss=loss,
                         loss_weight=loss_weight)
        for argument, value, low in (
            ("num_classes", num_classes, 1), ("stride", stride, 1),
            ("max_boxes", max_boxes, 1), ("max_detections", max_detections, 1),
            ("top_k", top_k, 1), ("head_channels", head_channels, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (
                value < low
            ):
                raise ValueError(
                    f"Invalid value for argument `{argument}` of task '{name}'. "
                    f"Expected an int >= {low}. Received: {argument}={value!r}"
                )
        for argument, value, ok, expected in (
            ("score_threshold", score_threshold, lambda v: 0 <= v < 1, "in [0, 1)"),
            ("iou_threshold", iou_threshold, lambda v: 0 <= v <= 1, "in [0, 1]"),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(
                value
            ):
                raise ValueError(
                    f"Invalid value for argument `{argument}` of task '{name}'. "
                    f"Expected a float {expected}. Received: {argument}={value!r}"
                )
        if not (isinstance(loss, str) and loss == "auto"):
            raise ValueError(_loss_error(name, loss))
        self.num_classes = int(num_classes)
        self.stride = int(stride)
        self.max_boxes = int(max_boxes)
        self.max_detections = int(max_detections)
        self.score_threshold = float(score_threshold)
        self.iou_threshold = float(iou_threshold)
        self.top_k = int(top_k)
        self.head_channels = int(head_channels)
        # CenterNetLoss validates the weights and min_overlap, naming them.
        try:
            self.centernet_loss = CenterNetLoss(
                stride=self.stride, size_weight=size_weight,
                offset_weight=offset_weight, min_overlap=min_overlap,
            )
        except ValueError as error:
            raise ValueError(f"Task '{name}': {error}") from error
        self.size_weight = self.centernet_loss.size_weight
        self.offset_weight = self.centernet_loss.offset_weight
        self.min_overlap = self.centernet_loss.min_overlap

    # -- head -----------------------------------------------------------------

    @property
    def output_shape(self):
        return (None, None, self.num_classes + 4)

    @property
    def label_shape(self):
        return {"boxes": (self.max_boxes, 4), "classes": (self.max_boxes,)}

    def make_output_layer(self):
        return CenterNetHead(self.num_classes, head_channels=self.head_channels,
                             name=self.name, dtype="float32")

    # -- labels and loss ------------------------------------------------------

    def standardize_labels(self, y):
        """Returns `(labels, labelled)`: the dict, and 1 per example that has a
        label (no NaN box)."""
        boxes = ops.cast(y["boxes"], "float32")
        labelled = ops.logical_not(ops.any(ops.isnan(boxes), axis=(1, 2)))
        return {"boxes": boxes, "classes": ops.cast(y["classes"], "int32")}, ops.cast(
            labelled, "float32"
        )

    def resolve_loss(self, loss="auto"):
        if not (loss is None or (isinstance(loss, str) and loss == "auto")):
            raise ValueError(_loss_error(self.name, loss))
        return self.centernet_loss

    def element_loss(self, y_true, y_pred):
        raise ValueError(
            f"Task '{self.name}' (detection) has no per-element loss: its loss is "
            "normalised over the batch (`masked_loss`)."
        )

    @skip_autograph
    def masked_loss(self, y, y_pred, sample_weight=None, loss_fn=None):
        """The batch's CenterNet loss over labelled examples, and their
        (sample-weighted) count; `(0, 0)` when no example has a label."""
        loss_fn = loss_fn if loss_fn is not None else self.centernet_loss
        if not isinstance(loss_fn, CenterNetLoss):
            raise ValueError(_loss_error(self.name, loss_fn))
        loss, count, _ = loss_fn.batch_loss(y, y_pred, _per_example(sample_weight))
        return loss, count

    # -- metrics --------------------------------------------------------------

    def default_metrics(self):
        return [self.metric_from_identifier(name) for name in _METRICS]

    def metric_from_identifier(self, identifier):
        if isinstance(identifier, str) and identifier in _METRICS:
            metric = keras.metrics.Mean(name=identifier)
            metric._detection_quantity = identifier  # read by update_metrics
            return metric
        raise ValueError(
            f"Unknown metric {identifier!r} for task '{self.name}' (detection). "
            f"Available in training: {list(_METRICS)}. Detection mAP is computed "
            "on predictions by kerasmtl.metrics.detection."
        )

    @skip_autograph
    def update_metrics(self, metrics, y, y_pred, sample_weight=None):
        y_pred = ops.cast(y_pred, "float32")
        shape = ops.shape(y_pred)
        targets = centernet_targets(
            y["boxes"], y["classes"], shape[1], shape[2], self.num_classes,
            self.stride, self.min_overlap, heatmap=False,
        )
        weights = _apply_sample_weight(targets["labelled"], _per_example(sample_weight))
        weights = targets["center_mask"] * ops.expand_dims(weights, -1)
        flat = ops.reshape(y_pred, (shape[0], -1, self.num_classes + 4))
        at_centers = ops.take_along_axis(
            flat, ops.expand_dims(targets["indices"], -1), axis=1
        )
        classes = ops.clip(ops.cast(y["classes"], "int32"), 0, self.num_classes - 1)
        logits = ops.take_along_axis(
            at_centers[..., : self.num_classes], ops.expand_dims(classes, -1), axis=2
        )
        values = {
            "center_score": ops.sigmoid(ops.squeeze(logits, -1)),
            "size_l1": ops.mean(ops.abs(
                at_centers[..., self.num_classes: self.num_classes + 2] - targets["size"]
            ), axis=-1),
            "offset_l1": ops.mean(ops.abs(
                at_centers[..., self.num_classes + 2:] - targets["offset"]
            ), axis=-1),
        }
        for metric in metrics:
            quantity = getattr(metric, "_detection_quantity", None)
            if quantity is None:
                raise ValueError(
                    f"Metric '{metric.name}' of task '{self.name}' (detection) was "
                    "not made by the task; use one of " + str(list(_METRICS)) + "."
                )
            metric.update_state(values[quantity], sample_weight=weights)

    # -- serving --------------------------------------------------------------

    def dataset_evaluator(self):
        """COCO mAP@[.50:.95] (`map`), `map_50` and `map_75` over the data set."""
        return DetectionEvaluator(prefix=self.name, keys=("map", "map_50", "map_75"))

    def output_names(self) -> dict:
        """Serving output names: `{"boxes", "scores", "classes",
        "num_detections"}` -> signature output name."""
        return detection_output_names(self.name)

    @skip_autograph
    def postprocess(self, y_pred):
        decoded = decode_detections(
            y_pred, self.stride, max_detections=self.max_detections,
            score_threshold=self.score_threshold, iou_threshold=self.iou_threshold,
            top_k=self.top_k,
        )
        names = self.output_names()
        outputs = {names[key]: value for key, value in decoded.items() if key != "boxes"}
        grid = tf.shape(y_pred)[1:3] * self.stride
        outputs[names["boxes_xyxy"]] = decoded["boxes"]
        outputs[names["boxes"]] = normalized_yxyx(decoded["boxes"], grid[0], grid[1])
        return outputs

    def flip_back(self, y_pred, horizontal, vertical):
        # Heat map and sizes flip with the grid. A centre at grid x has offset
        # dx = x - floor(x); mirrored, its cell is the mirror cell and its
        # offset 1 - dx (dy likewise upside down).
        y_pred = flip_images(y_pred, horizontal, vertical)
        if not (horizontal or vertical):
            return y_pred
        classes_and_sizes, dx, dy = tf.split(y_pred, [self.num_classes + 2, 1, 1], axis=-1)
        dx = 1.0 - dx if horizontal else dx
        dy = 1.0 - dy if vertical else dy
        return tf.concat([classes_and_sizes, dx, dy], axis=-1)

    def serving_outputs(self, y_pred, geometry=None):
        # Decoded on the whole (padded) heat map, as the model saw it; then
        # the raw heat map is cropped, the pixel boxes clipped to the image
        # and the OD API boxes normalised by the image's own size.
        outputs = super().serving_outputs(y_pred, geometry)
        if geometry is not None:
            names = self.output_names()
            outputs[self.raw_output_name] = geometry.crop(outputs[self.raw_output_name])
            xyxy = geometry.clip_boxes(outputs[names["boxes_xyxy"]])
            outputs[names["boxes_xyxy"]] = xyxy
            outputs[names["boxes"]] = normalized_yxyx(xyxy, geometry.image_size[0],
                                                      geometry.image_size[1])
        return outputs

    # -- config ---------------------------------------------------------------

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "stride": self.stride,
            "max_boxes": self.max_boxes,
            "max_detections": self.max_detections,
            "score_threshold": self.score_threshold,
            "iou_threshold": self.iou_threshold,
            "top_k": self.top_k,
            "head_channels": self.head_channels,
            "size_weight": self.size_weight,
            "offset_weight": self.offset_weight,
            "min_overlap": self.min_overlap,
        }


def _per_example(sample_weight):
    # Keras copies one sample-weight array onto every leaf of a nested label:
    # a detection label's dict then gets {"boxes": w, "classes": w}.
    if isinstance(sample_weight, Mapping):
        return sample_weight.get("classes", next(iter(sample_weight.values()), None))
    return sample_weight


def _loss_error(name, loss) -> str:
    return (
        f"Task '{name}' (detection) trains with its own CenterNet loss; it cannot "
        f"take another loss. Received: loss={loss!r}. Leave loss='auto' and tune "
        "size_weight and offset_weight."
    )
