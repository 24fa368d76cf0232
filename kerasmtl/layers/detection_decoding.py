"""Decoding of a CenterNet head's output into boxes, in the serving graph.

`decode_detections(raw, stride, ...)`: sigmoid heat map -> peaks (a cell that
is the maximum of its 3x3 neighbourhood, CenterNet's max-pool "NMS") -> the
`top_k` best (cell, class) peaks -> boxes from the size and offset at each
peak -> class-wise `tf.image.combined_non_max_suppression` -> outputs padded
to `max_detections`.

TensorFlow ops only (it goes into exported SavedModels that TF Serving, a C++
server, runs: see DESIGN.md); any batch size and grid size.
`detection_output_names(prefix)` names its outputs in serving signatures;
`normalized_yxyx` converts xyxy pixel boxes to the TF Object Detection API's
`detection_boxes` format.
"""

from __future__ import annotations

import tensorflow as tf

from kerasmtl.autograph import skip_autograph


def detection_output_names(prefix: str) -> dict:
    """Serving output names of a `Detection` task named `prefix`.

    The TF Object Detection API's names: `<prefix>_boxes`, `<prefix>_scores`,
    `<prefix>_classes`, and `num_detections` for a task named `"detection"`,
    else `<prefix>_num_detections`; plus kerasmtl's own `<prefix>_boxes_xyxy`.
    `<prefix>_boxes` has the OD API's format, `[ymin, xmin, ymax, xmax]`
    normalised to the image (`normalized_yxyx`), so an OD API client reads it
    right; `<prefix>_boxes_xyxy` is the same boxes as `[x1, y1, x2, y2]`
    pixels, the format of kerasmtl's labels, metrics and instance masks.
    One rule for the task's `postprocess`, the COCO evaluator and the
    instance-mask outputs.

    Returns:
        `{"boxes", "boxes_xyxy", "scores", "classes", "num_detections"}` ->
        output name.

    Examples:

    >>> detection_output_names("cells")["num_detections"]
    'cells_num_detections'
    >>> detection_output_names("detection")["num_detections"]
    'num_detections'
    """
    return {
        "boxes": f"{prefix}_boxes",
        "boxes_xyxy": f"{prefix}_boxes_xyxy",
        "scores": f"{prefix}_scores",
        "classes": f"{prefix}_classes",
        "num_detections": "num_detections" if prefix == "detection"
        else f"{prefix}_num_detections",
    }


@skip_autograph
def normalized_yxyx(boxes_xyxy, height, width):
    """xyxy pixel boxes `[..., 4]` -> `[ymin, xmin, ymax, xmax]` divided by
    the image's `height` and `width` (scalars: one size for the batch, as
    the model and the export see it): the TF Object Detection API's
    `detection_boxes` format. All-zero padding rows stay zero.

    Examples:

    >>> normalized_yxyx([[10.0, 20.0, 30.0, 60.0]], 80, 40).numpy().tolist()
    [[0.25, 0.25, 0.75, 0.75]]
    """
    boxes = tf.cast(tf.convert_to_tensor(boxes_xyxy), tf.float32)
    height = tf.cast(height, tf.float32)
    width = tf.cast(width, tf.float32)
    x1, y1, x2, y2 = tf.unstack(boxes, axis=-1)
    return tf.stack([y1 / height, x1 / width, y2 / height, x2 / width], axis=-1)


def decode_detections(
    raw,
    stride: int,
    max_detections: int = 100,
    score_threshold: float = 0.05,
    iou_threshold: float = 0.5,
    top_k: int = 100,
) -> dict:
    """Boxes, scores and classes from a CenterNet head's raw output.

    A peak at cell `(x, y)` of class `c` with score `s = sigmoid(logit)`,
    size `(w, h)` and offset `(dx, dy)` (grid units) gives the box

    ```
    center = ((x + dx) * stride, (y + dy) * stride)
    box    = center -+ (max(w, 0), max(h, 0)) * stride / 2   (xyxy pixels)
    ```

    clipped to the image `[0, grid_width * stride] x [0, grid_height *
    stride]`. Peaks with `s <= score_threshold` are dropped; boxes of the
    same class overlapping by IoU > `iou_threshold` keep the best.

    Args:
        raw: float `[B, h, w, num_classes + 4]`: heat-map logits, size,
            offset.
        stride: int. Pixels per grid cell.
        max_detections: int. Detections returned per image. Defaults to `100`.
        score_threshold: float in [0, 1). Defaults to `0.05`.
        iou_threshold: float in [0, 1]. Defaults to `0.5`.
        top_k: int. Peaks kept before NMS (CenterNet's K). Defaults to `100`.

    Returns:
        A dict: `"boxes"` float32 `[B, max_detections, 4]` xyxy pixels,
        `"scores"` float32 `[B, max_detections]`, `"classes"` int32 `[B,
        max_detections]` (-1 on padding rows, whose boxes and scores are 0),
        `"num_detections"` int32 `[B]`; best first.

    Examples:

    >>> import numpy as np
    >>> raw = np.full((1, 4, 4, 5), -10.0, "float32")   # 1 class, 4x4 grid
    >>> raw[0, 1, 2] = [3.0, 2.0, 1.0, 0.5, 0.5]        # peak at x=2, y=1
    >>> out = decode_detections(raw, stride=8, max_detections=2)
    >>> out["boxes"].numpy().tolist()
    [[[12.0, 8.0, 28.0, 16.0], [0.0, 0.0, 0.0, 0.0]]]
    >>> out["classes"].numpy().tolist(), out["num_detections"].numpy().tolist()
    ([[0, -1]], [1])
    """
    raw = tf.cast(tf.convert_to_tensor(raw), tf.float32)
    num_classes = raw.shape[-1] - 4
    shape = tf.shape(raw)
    batch, grid_h, grid_w = shape[0], shape[1], shape[2]

    heat = tf.sigmoid(raw[..., :num_classes])
    neighbourhood_max = tf.nn.max_pool2d(heat, ksize=3, strides=1, padding="SAME")
    heat = tf.where(heat >= neighbourhood_max, heat, tf.zeros_like(heat))
    flat = tf.reshape(heat, [batch, -1])
    k = tf.minimum(top_k, tf.shape(flat)[1])
    scores, index = tf.math.top_k(flat, k=k)
    classes = index % num_classes
    cell = index // num_classes
    x = tf.cast(cell % grid_w, tf.float32)
    y = tf.cast(cell // grid_w, tf.float32)

    regression = tf.reshape(raw[..., num_classes:], [batch, -1, 4])
    regression = tf.gather(regression, cell, batch_dims=1)
    half_w = tf.maximum(regression[..., 0], 0.0) * (stride / 2)
    half_h = tf.maximum(regression[..., 1], 0.0) * (stride / 2)
    cx = (x + regression[..., 2]) * stride
    cy = (y + regression[..., 3]) * stride
    width = tf.cast(grid_w * stride, tf.float32)
    height = tf.cast(grid_h * stride, tf.float32)
    boxes = tf.stack([
        tf.clip_by_value(cx - half_w, 0.0, width),
        tf.clip_by_value(cy - half_h, 0.0, height),
        tf.clip_by_value(cx + half_w, 0.0, width),
        tf.clip_by_value(cy + half_h, 0.0, height),
    ], axis=-1)

    # Class-wise NMS: each candidate scores only its own class. The op's IoU
    # does not depend on the coordinate order, so xyxy boxes go in as they
    # are (clip_boxes=False: they are pixels, not [0, 1]).
    class_scores = tf.one_hot(classes, num_classes) * scores[..., None]
    nms = tf.image.combined_non_max_suppression(
        boxes[:, :, None, :],
        class_scores,
        max_output_size_per_class=max_detections,
        max_total_size=max_detections,
        iou_threshold=iou_threshold,
        score_threshold=score_threshold,
        pad_per_class=False,
        clip_boxes=False,
    )
    count = nms.valid_detections
    real = tf.range(max_detections)[None, :] < count[:, None]
    return {
        "boxes": tf.where(real[..., None], nms.nmsed_boxes, 0.0),
        "scores": tf.where(real, nms.nmsed_scores, 0.0),
        "classes": tf.where(real, tf.cast(nms.nmsed_classes, tf.int32), -1),
        "num_detections": tf.cast(count, tf.int32),
    }
