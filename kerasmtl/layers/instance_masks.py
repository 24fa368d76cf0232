"""Instance masks of a detection + segmentation model, in the serving graph.

A model with a box head and a foreground head has no mask head; its
instances are its boxes cut out of its foreground. `instance_id_map` does
this with TensorFlow ops only, for any batch, image size and number of
detections, so it can sit in an exported SavedModel that TF Serving (a C++
server) runs (see DESIGN.md). It follows the rule of the numpy reference
`kerasmtl.metrics.instance.instance_masks_from_boxes` pixel for pixel:

- a pixel belongs to a box when its centre `(col + 0.5, row + 0.5)` lies in
  `[x_min, x_max) x [y_min, y_max)` (xyxy pixels, parts outside the image
  cut off);
- a pixel inside several boxes goes to the highest-scoring one (ties to the
  earlier row), so instances are disjoint; with `overlap="centre"`, to the
  box whose centre is nearest in units of its half-size (then the higher
  score); `grow` enlarges every box's footprint by a share of its size;
- only foreground pixels (`> 0`) belong to any box.

The result is one int32 id map per image (0 = background, `k` = detection
row `k - 1`) rather than `N` boolean masks: 400 detections on a 1388x1040
image would take 577 MB as masks and take 5.8 MB as a map.

Boxes are painted one by one, lowest priority first, in a `tf.while_loop`
that writes only each box's rectangle: time and memory grow with the boxes'
total area and the image size, never with their product.
"""

from __future__ import annotations

import tensorflow as tf

from kerasmtl.autograph import skip_autograph
from kerasmtl.layers.detection_decoding import detection_output_names
from kerasmtl.metrics.instance import check_instance_rule


def _pixel_range(low, high, size):
    """`[start, stop)` pixel indices whose centres lie in `[low, high)`."""
    size = tf.cast(size, tf.float32)
    start = tf.clip_by_value(tf.math.ceil(low - 0.5), 0.0, size)
    stop = tf.clip_by_value(tf.math.ceil(high - 0.5), 0.0, size)
    return tf.cast(start, tf.int32), tf.cast(stop, tf.int32)


@skip_autograph
def instance_id_map(boxes, scores, num_detections, foreground, *, overlap: str = "score",
                    grow: float = 0.0):
    """int32 `[B, H, W]` instance-id map from detections and a foreground map.

    Pixel `(i, j)` of image `b` is `k + 1` when detection row `k` (one of the
    first `num_detections[b]` rows) owns it: its box (enlarged by `grow`)
    contains the pixel's centre, no other such box is preferred (`overlap=
    "score"`: a better score; `"centre"`: a centre nearer in units of the
    box's half-size, then a better score; ties go to the earlier row) and the
    pixel is foreground; else 0. This is
    `kerasmtl.metrics.instance.instance_masks_from_boxes` in the graph.

    Args:
        boxes: float `[B, N, 4]` xyxy boxes in pixels (e.g.
            `detection_boxes_xyxy`).
        scores: float `[B, N]` or None (then ties everywhere: the earlier
            row wins).
        num_detections: int `[B]`: rows after these are padding and ignored
            (e.g. `num_detections`), or None for all rows.
        foreground: `[B, H, W]` bool, or a class map / scores where values
            `> 0` are foreground (e.g. a segmentation class map with 0 =
            background).
        overlap: `"score"` or `"centre"`: which box a pixel inside several
            boxes goes to. Defaults to `"score"`.
        grow: float >= 0. Each box's footprint grows by `grow` times its
            width (height) on each side. Defaults to `0.0`.

    Returns:
        int32 tensor `[B, H, W]`.

    Examples:

    Two boxes on a 4x6 image, all foreground: the second box scores higher
    and takes the pixels both boxes hold; a third row is padding.

    >>> import numpy as np
    >>> boxes = np.array([[[0, 0, 4, 4], [2, 0, 6, 2], [0, 0, 6, 4]]], "float32")
    >>> ids = instance_id_map(boxes, [[0.5, 0.9, 0.0]], [2], np.ones((1, 4, 6)))
    >>> ids.numpy()[0]
    array([[1, 1, 2, 2, 2, 2],
           [1, 1, 2, 2, 2, 2],
           [1, 1, 1, 1, 0, 0],
           [1, 1, 1, 1, 0, 0]], dtype=int32)
    """
    check_instance_rule(overlap, grow, "instance_id_map")
    boxes = tf.cast(tf.convert_to_tensor(boxes), tf.float32)
    foreground = tf.convert_to_tensor(foreground)
    if boxes.shape.rank is not None and (boxes.shape.rank != 3 or boxes.shape[-1] != 4):
        raise ValueError(
            f"instance_id_map: `boxes` has shape {boxes.shape}; expected [batch, N, "
            "4] xyxy boxes in pixels."
        )
    if foreground.shape.rank is not None and foreground.shape.rank != 3:
        raise ValueError(
            f"instance_id_map: `foreground` has shape {foreground.shape}; expected "
            "[batch, H, W] (drop a channel axis, or take the argmax of logits)."
        )
    shape = tf.shape(boxes)
    batch, rows = shape[0], shape[1]
    scores = (tf.zeros([batch, rows]) if scores is None
              else tf.cast(tf.convert_to_tensor(scores), tf.float32))
    if num_detections is None:
        num_detections = tf.fill([batch], rows)
    num_detections = tf.cast(tf.convert_to_tensor(num_detections), tf.int32)
    if foreground.dtype != tf.bool:
        foreground = foreground > tf.zeros([], foreground.dtype)
    size = tf.shape(foreground)
    height, width = size[1], size[2]
    checks = [
        tf.debugging.assert_equal(
            size[0], batch, message="instance_id_map: `boxes` and `foreground` "
            "have different batch sizes"),
        tf.debugging.assert_equal(
            tf.shape(scores), shape[:2], message="instance_id_map: `scores` must "
            "be [batch, N], matching `boxes` [batch, N, 4]"),
        tf.debugging.assert_equal(
            tf.shape(num_detections), shape[:1], message="instance_id_map: "
            "`num_detections` must be [batch]"),
        tf.debugging.assert_all_finite(
            boxes, "instance_id_map: `boxes` has NaN or infinite values"),
    ]
    with tf.control_dependencies(checks):
        boxes = tf.identity(boxes)

    # Paint order: within each image, the best box (highest score, then the
    # earliest row) is written last so that it wins. Images never share a
    # pixel, so their boxes can be interleaved in any order.
    order = tf.reverse(tf.argsort(-scores, axis=1, stable=True), axis=[1])
    valid = order < num_detections[:, None]
    image_index = tf.broadcast_to(tf.range(batch)[:, None], tf.shape(order))
    image_index = tf.boolean_mask(image_index, valid)
    row_index = tf.boolean_mask(order, valid)
    picked = tf.gather_nd(boxes, tf.stack([image_index, row_index], axis=1))
    size = picked[:, 2:] - picked[:, :2]
    footprint = picked + tf.constant(grow, tf.float32) * tf.concat([-size, size], axis=1)
    x0, x1 = _pixel_range(footprint[:, 0], footprint[:, 2], width)
    y0, y1 = _pixel_range(footprint[:, 1], footprint[:, 3], height)
    centre = (picked[:, :2] + picked[:, 2:]) * 0.5
    half = tf.maximum(size * 0.5, 1e-6)

    # Each box's rectangle, as runs of flat pixel indices, takes the box's
    # paint rank; a pixel keeps the highest rank (unsorted_segment_max). The
    # boxes go in chunks of about one batch of images' worth of pixels, so
    # memory stays O(B * H * W) even for many image-sized boxes.
    box_w, box_h = tf.maximum(x1 - x0, 0), tf.maximum(y1 - y0, 0)
    area = box_w * box_h
    pixels = batch * height * width
    budget = tf.maximum(pixels, 1 << 16)
    chunk = tf.cumsum(area, exclusive=True) // budget
    num_chunks = tf.reduce_max(tf.concat([chunk + 1, [0]], 0))
    rank = tf.range(1, tf.size(area) + 1)

    def paint(c, best, nearest):
        take = tf.equal(chunk, c)
        w, a = tf.boolean_mask(box_w, take), tf.boolean_mask(area, take)
        first = tf.cumsum(a, exclusive=True)
        t = tf.range(tf.reduce_sum(a))
        j = tf.searchsorted(tf.cumsum(a), t, side="right")
        local = t - tf.gather(first, j)
        w = tf.gather(w, j)
        y = tf.gather(tf.boolean_mask(y0, take), j) + local // tf.maximum(w, 1)
        x = tf.gather(tf.boolean_mask(x0, take), j) + local % tf.maximum(w, 1)
        b = tf.gather(tf.boolean_mask(image_index, take), j)
        flat = (b * height + y) * width + x
        value = tf.gather(tf.boolean_mask(rank, take), j)
        if overlap == "score":
            return c + 1, tf.maximum(best, tf.math.unsorted_segment_max(value, flat, pixels)), nearest
        # "centre": the smallest normalised distance per pixel, then the
        # highest rank (best score) among the boxes at that distance.
        box = tf.gather(tf.where(take)[:, 0], j)
        dx = (tf.cast(x, tf.float32) + 0.5 - tf.gather(centre[:, 0], box)) / tf.gather(
            half[:, 0], box)
        dy = (tf.cast(y, tf.float32) + 0.5 - tf.gather(centre[:, 1], box)) / tf.gather(
            half[:, 1], box)
        d = dx * dx + dy * dy
        near = tf.math.unsorted_segment_min(d, flat, pixels)  # untouched: float max
        at_min = d <= tf.gather(near, flat)
        top = tf.math.unsorted_segment_max(tf.where(at_min, value, 0), flat, pixels)
        better = (near < nearest) | ((near == nearest) & (top > best))
        return c + 1, tf.where(better, top, best), tf.where(better, near, nearest)

    _, best, _ = tf.while_loop(
        lambda c, *_: c < num_chunks, paint,
        (tf.constant(0), tf.zeros([pixels], tf.int32), tf.fill([pixels], float("inf"))),
    )
    # Rank r (1-based) is paint position r - 1; 0 (and the segment op's fill
    # value for untouched pixels, the int32 minimum, clipped to 0) is no box.
    rows_plus_one = tf.concat([[0], row_index + 1], 0)
    ids = tf.gather(rows_plus_one, tf.maximum(best, 0))
    ids = tf.reshape(ids, [batch, height, width])
    return tf.where(foreground, ids, tf.zeros_like(ids))


def serving_instance_ids(outputs, detection: str = "detection",
                         segmentation: str = "segmentation", min_score: float = 0.0,
                         overlap: str = "score", grow: float = 0.0):
    """`instance_id_map` from a detection + segmentation model's serving
    outputs (`model.postprocess(...)` or the exported signature's dict).

    Args:
        outputs: dict with the detection task's `<prefix>_boxes_xyxy`,
            `<prefix>_scores` and `num_detections` (`<prefix>_num_detections`
            for a task not named `"detection"`) and the segmentation task's
            class map under its name (class 0 = background).
        detection: str. Name of the detection task. Defaults to
            `"detection"`.
        segmentation: str. Name of the segmentation task. Defaults to
            `"segmentation"`.
        min_score: float. Detections scoring less make no instance (the
            serving outputs are sorted best first, so this shortens
            `num_detections`). Defaults to `0.0`.
        overlap: `"score"` or `"centre"` (`instance_id_map`). Defaults to
            `"score"`.
        grow: float >= 0 (`instance_id_map`). Defaults to `0.0`.

    Returns:
        int32 `[B, H, W]`.
    """
    names = detection_output_names(detection)
    count = names["num_detections"]
    needed = [names["boxes_xyxy"], names["scores"], count, segmentation]
    missing = [k for k in needed if k not in outputs]
    if missing:
        raise ValueError(
            f"serving_instance_ids: outputs {missing} are missing (have "
            f"{sorted(outputs)}); instance masks need the detection task "
            f"'{detection}' and the segmentation task '{segmentation}'."
        )
    scores = tf.cast(outputs[needed[1]], tf.float32)
    count = tf.cast(outputs[count], tf.int32)
    if min_score > 0:
        kept = tf.reduce_sum(tf.cast(scores >= min_score, tf.int32), axis=1)
        count = tf.minimum(count, kept)
    return instance_id_map(outputs[needed[0]], scores, count, outputs[segmentation],
                           overlap=overlap, grow=grow)
