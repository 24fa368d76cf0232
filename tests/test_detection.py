import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasmtl as mtl
from kerasmtl import boxes as box_lib
from kerasmtl.layers.detection import CenterNetHead, centernet_targets
from kerasmtl.layers.detection_decoding import decode_detections
from kerasmtl.losses.detection import CenterNetLoss
from kerasmtl.tasks.detection import Detection

# -- a numpy reference: CenterNet's ctdet target drawing and _neg_loss, written
# -- out loop by loop from the official code's algorithm


def _ref_radius(h, w, m=0.7):
    r1 = ((h + w) + math.sqrt((h + w) ** 2 - 4 * w * h * (1 - m) / (1 + m))) / 2
    r2 = (2 * (h + w) + math.sqrt(4 * (h + w) ** 2 - 16 * (1 - m) * w * h)) / 2
    b3 = -2 * m * (h + w)
    r3 = (b3 + math.sqrt(b3 ** 2 - 16 * m * (m - 1) * w * h)) / 2
    return min(r1, r2, r3)


def _ref_targets(boxes, classes, grid, num_classes, stride):
    heat = np.zeros((grid, grid, num_classes))
    centers = []
    for box, c in zip(boxes, classes):
        x1, y1, x2, y2 = np.clip(np.asarray(box) / stride, 0, grid)
        w, h = x2 - x1, y2 - y1
        if c < 0 or w <= 0 or h <= 0:
            continue
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        ix, iy = int(cx), int(cy)
        r = max(0, int(_ref_radius(math.ceil(h), math.ceil(w))))
        sigma = (2 * r + 1) / 6
        for y in range(max(0, iy - r), min(grid, iy + r + 1)):
            for x in range(max(0, ix - r), min(grid, ix + r + 1)):
                g = math.exp(-((x - ix) ** 2 + (y - iy) ** 2) / (2 * sigma**2))
                heat[y, x, c] = max(heat[y, x, c], g)
        centers.append((iy * grid + ix, w, h, cx - ix, cy - iy))
    return heat, centers


def _ref_loss(heat, centers, raw, num_classes):
    p = 1 / (1 + np.exp(-raw[..., :num_classes].astype("float64")))
    pos = heat == 1
    loss = np.where(pos, -((1 - p) ** 2) * np.log(p),
                    -((1 - heat) ** 4) * p**2 * np.log(1 - p)).sum()
    heat_part = loss / max(pos.sum(), 1)
    reg = raw[..., num_classes:].reshape(-1, 4)
    size = sum(abs(reg[k, 0] - w) + abs(reg[k, 1] - h) for k, w, h, _, _ in centers)
    off = sum(abs(reg[k, 2] - dx) + abs(reg[k, 3] - dy) for k, _, _, dx, dy in centers)
    n = 2 * len(centers)
    return heat_part + 0.1 * (size / n if n else 0) + (off / n if n else 0)


def _label(boxes, classes, max_boxes=6):
    return box_lib.pad_boxes(boxes, classes, max_boxes)


def _batch(*labels):
    return {k: np.stack([lab[k] for lab in labels]) for k in ("boxes", "classes")}


# -- encoding -----------------------------------------------------------------


def test_encoding_one_box_by_hand():
    # 16 x 16 px box centred at (14, 14) px, stride 4, 8 x 8 grid: center
    # (3.5, 3.5) -> cell (3, 3), offset (0.5, 0.5), size (4, 4); radius
    # int(1.0933) = 1, sigma 0.5: neighbours exp(-2), diagonals exp(-4).
    t = centernet_targets(np.array([[[6.0, 6, 22, 22]]]), np.array([[1]]), 8, 8,
                          num_classes=2, stride=4)
    heat = t["heatmap"].numpy()[0]
    expected = np.zeros((8, 8))
    expected[2:5, 2:5] = [[math.exp(-4), math.exp(-2), math.exp(-4)],
                          [math.exp(-2), 1.0, math.exp(-2)],
                          [math.exp(-4), math.exp(-2), math.exp(-4)]]
    np.testing.assert_allclose(heat[..., 1], expected, atol=1e-6)
    np.testing.assert_array_equal(heat[..., 0], 0.0)
    assert int(t["indices"][0, 0]) == 3 * 8 + 3
    np.testing.assert_allclose(t["size"][0, 0], [4.0, 4.0])
    np.testing.assert_allclose(t["offset"][0, 0], [0.5, 0.5])
    assert float(t["center_mask"][0, 0]) == 1.0 and float(t["labelled"][0]) == 1.0


def test_encoding_matches_reference_in_a_graph():
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 40, (5, 2))
    wh = rng.uniform(3, 30, (5, 2))
    raw_boxes = np.concatenate([xy, xy + wh], 1)  # some cross the 48 px border
    classes = [0, 2, 1, 2, 0]
    label = _batch(_label(raw_boxes, classes, max_boxes=7))

    @tf.function(input_signature=[tf.TensorSpec((None, None, 4)),
                                  tf.TensorSpec((None, None), tf.int32),
                                  tf.TensorSpec((), tf.int32)])
    def encode(b, c, grid):
        return centernet_targets(b, c, grid, grid, num_classes=3, stride=4)

    t = encode(label["boxes"], label["classes"], 12)
    heat, centers = _ref_targets(raw_boxes, classes, 12, 3, 4)
    assert len({k for k, *_ in centers}) == 5  # distinct cells: no collision
    np.testing.assert_allclose(t["heatmap"][0], heat, atol=1e-6)
    np.testing.assert_array_equal(t["indices"][0, :5], [k for k, *_ in centers])
    np.testing.assert_allclose(t["size"][0, :5], [c[1:3] for c in centers], atol=1e-5)
    np.testing.assert_allclose(t["offset"][0, :5], [c[3:] for c in centers], atol=1e-5)
    np.testing.assert_array_equal(t["center_mask"][0], [1] * 5 + [0, 0])


def test_same_center_cell_keeps_the_largest_then_the_last():
    boxes = [[4, 4, 12, 12], [0, 0, 16, 16], [2, 2, 14, 14], [1, 1, 15, 15],
             [2, 1, 14, 15]]  # all centred at (8, 8)
    t = centernet_targets(np.array([boxes], "float32"), np.array([[0, 1, 0, 1, 0]]),
                          8, 8, num_classes=2, stride=4)
    np.testing.assert_array_equal(t["center_mask"][0], [0, 1, 0, 0, 0])
    np.testing.assert_allclose(t["size"][0, 1], [4.0, 4.0])
    tie = [[2, 1, 14, 15], [1, 2, 15, 14]]  # 12 x 14 and 14 x 12
    t = centernet_targets(np.array([tie], "float32"), np.array([[1, 0]]),
                          8, 8, num_classes=2, stride=4)
    np.testing.assert_array_equal(t["center_mask"][0], [0, 1])
    heat = t["heatmap"].numpy()[0, 2, 2]  # both classes keep their peak
    np.testing.assert_array_equal(heat, [1.0, 1.0])


def test_ignored_rows_and_missing_labels():
    # padding, a box outside the image, a degenerate box, a class too large
    label = _label([[40, 40, 50, 50], [3, 3, 3, 9], [1, 1, 5, 5]], [0, 1, 7])
    missing = box_lib.missing_detection_label(6)
    clipped = _label([[-8, -8, 8, 8]], [1])  # clipped to 0..8: center (1, 1)
    t = centernet_targets(*_batch(label, missing, clipped).values(), 8, 8,
                          num_classes=2, stride=4)
    np.testing.assert_array_equal(t["labelled"], [1, 0, 1])
    np.testing.assert_array_equal(t["heatmap"][:2], 0.0)
    np.testing.assert_array_equal(t["center_mask"][:2], 0.0)
    assert float(t["heatmap"][2, 1, 1, 1]) == 1.0
    np.testing.assert_allclose(t["size"][2, 0], [2.0, 2.0])


# -- decoding -----------------------------------------------------------------


def _raw_from_targets(t, num_classes, grid):
    """A perfect head output: logit of the target heat map, and the size and
    offset targets at each center cell."""
    heat = np.clip(t["heatmap"].numpy(), 1e-6, 1 - 1e-6)
    raw = np.zeros((*heat.shape[:3], num_classes + 4), "float32")
    raw[..., :num_classes] = np.log(heat / (1 - heat))
    flat = raw.reshape(heat.shape[0], grid * grid, -1)
    for b in range(heat.shape[0]):
        for m in np.flatnonzero(t["center_mask"][b]):
            flat[b, t["indices"][b, m], num_classes:] = np.concatenate(
                [t["size"][b, m], t["offset"][b, m]])
    return flat.reshape(raw.shape)


def test_decode_recovers_encoded_boxes():
    boxes = [[2, 6, 18, 14], [20.5, 3, 27.5, 29], [4, 20, 12, 28]]
    label = _batch(_label(boxes, [1, 0, 1]), _label([], []))
    t = centernet_targets(*label.values(), 8, 8, num_classes=2, stride=4)
    out = decode_detections(_raw_from_targets(t, 2, 8), stride=4, max_detections=5)
    assert out["num_detections"].numpy().tolist() == [3, 0]
    order = np.argsort(out["boxes"][0, :3, 0])
    np.testing.assert_allclose(out["boxes"].numpy()[0, order],
                               np.array(boxes)[[0, 2, 1]], atol=1e-4)
    np.testing.assert_array_equal(out["classes"].numpy()[0, order], [1, 1, 0])
    np.testing.assert_allclose(out["scores"][0, :3], 1.0, atol=1e-5)
    # padding rows: class -1, box and score 0
    np.testing.assert_array_equal(out["classes"][0, 3:], -1)
    np.testing.assert_array_equal(out["classes"][1], -1)
    np.testing.assert_array_equal(out["boxes"][1], 0.0)
    np.testing.assert_array_equal(out["scores"][1], 0.0)


def test_nms_removes_a_duplicate_of_the_same_class_only():
    raw = np.full((2, 8, 8, 6), -10.0, "float32")  # 2 classes
    # Two peaks two cells apart (not 3x3 neighbours), both 6 x 6 cells big:
    # IoU (4 * 6) / (2 * 36 - 24) = 0.5 would stay; 5 x 6 cells overlap 0.6.
    for b, second_class in ((0, 0), (1, 1)):
        raw[b, 4, 3, 0] = 2.0
        raw[b, 4, 3, 2:] = [6, 6, 0.5, 0.5]
        raw[b, 4, 4, second_class] = 1.0
        raw[b, 4, 4, 2:] = [6, 6, 0.0, 0.5]
    raw[:, 4, 4, 2] = 5.0
    out = decode_detections(raw, stride=1, iou_threshold=0.5)
    assert out["num_detections"].numpy().tolist() == [1, 2]
    np.testing.assert_array_equal(out["classes"][1, :2], [0, 1])
    np.testing.assert_allclose(out["scores"][0, 0], 1 / (1 + math.exp(-2)), atol=1e-6)


# -- loss ---------------------------------------------------------------------


def test_loss_matches_reference():
    rng = np.random.default_rng(0)
    boxes = [[3, 5, 20, 30], [26, 2, 40, 12], [30, 30, 47, 45]]
    label = _batch(_label(boxes, [0, 2, 1]))
    raw = rng.normal(0, 2, (1, 12, 12, 7)).astype("float32")
    value, count, parts = CenterNetLoss(stride=4).batch_loss(label, raw)
    heat, centers = _ref_targets(boxes, [0, 2, 1], 12, 3, 4)
    np.testing.assert_allclose(float(value), _ref_loss(heat, centers, raw[0], 3),
                               rtol=1e-5)
    assert float(count) == 1.0 and sorted(parts) == ["heatmap", "offset", "size"]


def test_loss_never_nan_on_extreme_inputs():
    loss = CenterNetLoss(stride=4)
    label = _batch(_label([[2, 2, 20, 20]], [0]), _label([], []),
                   box_lib.missing_detection_label(6))
    for fill in (100.0, -100.0):
        raw = tf.Variable(np.full((3, 8, 8, 5), fill, "float32"))
        with tf.GradientTape() as tape:
            value, count, _ = loss.batch_loss(label, raw)
        grad = tape.gradient(value, raw)
        assert np.isfinite(float(value)) and float(count) == 2.0
        assert np.isfinite(grad.numpy()).all()
        np.testing.assert_array_equal(grad.numpy()[2], 0.0)  # the missing label
    # No object in the batch: only the negatives' term, not divided by 0.
    raw = np.zeros((1, 8, 8, 5), "float32")
    value, _, parts = loss.batch_loss(_batch(_label([], [])), raw)
    expected = 64 * 0.25 * math.log(2)  # every cell: p^2 * -log(1 - p), p = 0.5
    np.testing.assert_allclose(float(value), expected, rtol=1e-6)
    assert float(parts["size"]) == 0.0


def test_all_missing_batch_gives_exactly_zero():
    task = Detection("det", num_classes=1, max_boxes=6)
    missing = box_lib.missing_detection_label(6)
    raw = tf.Variable(np.full((2, 4, 4, 5), 100.0, "float32"))
    with tf.GradientTape() as tape:
        mean, count = task.masked_loss(_batch(missing, missing), raw)
    assert float(mean) == 0.0 and float(count) == 0.0
    assert not np.any(tape.gradient(mean, raw).numpy())


def test_sample_weight_zero_equals_dropping_the_example():
    task = Detection("det", num_classes=3, max_boxes=6)
    a, b = _label([[3, 5, 20, 30]], [0]), _label([[26, 2, 40, 12]], [2])
    raw = np.random.default_rng(1).normal(size=(2, 12, 12, 7)).astype("float32")
    weighted, count = task.masked_loss(_batch(a, b), raw, sample_weight=np.array([1.0, 0.0]))
    alone, _ = task.masked_loss(_batch(a), raw[:1])
    np.testing.assert_allclose(float(weighted), float(alone), rtol=1e-6)
    assert float(count) == 1.0
    # Keras copies one sample-weight array onto each leaf of a nested label.
    w = np.array([1.0, 0.0])
    nested, _ = task.masked_loss(_batch(a, b), raw, {"boxes": w, "classes": w})
    assert float(nested) == float(weighted)


def test_keras_loss_call_averages_to_the_batch_loss():
    loss = CenterNetLoss(stride=4, size_weight=0.5)
    label = _batch(_label([[3, 5, 20, 30]], [0]), _label([], []),
                   box_lib.missing_detection_label(6))
    raw = np.random.default_rng(2).normal(size=(3, 8, 8, 5)).astype("float32")
    value, _, _ = loss.batch_loss(label, raw)
    np.testing.assert_allclose(float(loss(label, raw)), float(value), rtol=1e-5)
    clone = CenterNetLoss.from_config(loss.get_config())
    assert clone.get_config() == loss.get_config()


# -- the task in a model ------------------------------------------------------


def _images_and_labels(n=8):
    rng = np.random.default_rng(0)
    images = np.zeros((n, 32, 32, 3), "float32")
    labels = []
    for i in range(n):
        x, y = rng.integers(0, 20, 2)
        images[i, y:y + 12, x:x + 12, i % 2] = 1.0  # a square, its class' colour
        labels.append(_label([[x, y, x + 12, y + 12]], [i % 2], max_boxes=4))
    labels[-1] = box_lib.missing_detection_label(4)
    return images, _batch(*labels)


def test_tiny_model_trains_and_exports(tmp_path):
    task = Detection("detection", num_classes=2, max_boxes=4, head_channels=8,
                     max_detections=5)
    image = keras.Input((32, 32, 3), name="image")
    features = keras.layers.Conv2D(16, 4, strides=4, activation="relu")(image)
    model = mtl.MultiTaskModel(image, {"detection": task.build_head(features)},
                               tasks=[task])
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    images, labels = _images_and_labels()
    data = tf.data.Dataset.from_tensor_slices(
        ({"image": images}, {"detection": labels})).batch(4)
    history = model.fit(data, epochs=8, verbose=0).history
    losses = history["loss/detection"]
    assert np.isfinite(losses).all() and losses[-1] < 0.7 * losses[0]
    assert {"detection/center_score", "detection/size_l1"} <= set(history)

    loaded = tf.saved_model.load(mtl.export.export_saved_model(model, tmp_path))
    out = loaded.signatures["serving_default"](image=tf.constant(images[:2]))
    shapes = {k: (v.dtype, tuple(v.shape)) for k, v in out.items()}
    assert shapes == {
        "detection": (tf.float32, (2, 8, 8, 6)),
        "detection_boxes": (tf.float32, (2, 5, 4)),
        "detection_boxes_xyxy": (tf.float32, (2, 5, 4)),
        "detection_scores": (tf.float32, (2, 5)),
        "detection_classes": (tf.int32, (2, 5)),
        "num_detections": (tf.int32, (2,)),
    }
    expected = task.postprocess(model(images[:2])["detection"])
    for key in ("detection_boxes", "detection_boxes_xyxy"):
        np.testing.assert_allclose(out[key], expected[key], atol=1e-4)


def test_postprocess_names_and_any_grid_size():
    task = Detection("cells", num_classes=1, max_detections=3)
    serve = tf.function(task.postprocess,
                        input_signature=[tf.TensorSpec((None, None, None, 5))])
    out = serve(tf.zeros((2, 5, 7, 5)))
    assert sorted(out) == ["cells_boxes", "cells_boxes_xyxy", "cells_classes",
                           "cells_num_detections", "cells_scores"]
    assert tuple(out["cells_boxes"].shape) == (2, 3, 4)


def test_get_config_round_trip():
    task = Detection("det", num_classes=3, stride=8, max_boxes=20, max_detections=7,
                     score_threshold=0.2, iou_threshold=0.6, top_k=50,
                     head_channels=0, size_weight=0.2, offset_weight=0.5,
                     hidden_layers=[keras.layers.Conv2D(4, 1)], loss_weight=2.0)
    clone = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(task))
    assert isinstance(clone, Detection) and clone.get_config() == task.get_config()
    head = CenterNetHead(3, head_channels=4, prior_probability=0.2, name="h")
    assert CenterNetHead.from_config(head.get_config()).get_config() == head.get_config()


def test_training_metrics_by_hand():
    # Image 0: a 16 x 16 px box centred at (14, 14) px, stride 4: cell (3, 3),
    # size target (4, 4), offset (0.5, 0.5). The head predicts there class-1
    # logit log 4 (p = 0.8), size (3, 5) and offset (0.25, 0.75): L1 means
    # 1 and 0.25. Image 1 has no label; image 2 has sample weight 0.
    task = Detection("det", num_classes=2, max_boxes=3)
    labels = _batch(_label([[6, 6, 22, 22]], [1], 3),
                    box_lib.missing_detection_label(3),
                    _label([[0, 0, 8, 8]], [0], 3))
    raw = np.zeros((3, 8, 8, 6), "float32")
    raw[0, 3, 3] = [0.0, math.log(4.0), 3.0, 5.0, 0.25, 0.75]
    metrics = task.default_metrics()
    task.update_metrics(metrics, labels, raw, sample_weight=np.array([1.0, 1.0, 0.0]))
    got = {m.name: float(m.result()) for m in metrics}
    assert got == pytest.approx({"center_score": 0.8, "size_l1": 1.0,
                                 "offset_l1": 0.25}, abs=1e-6)


# -- bad input ----------------------------------------------------------------


def test_label_spec_errors():
    task = Detection("det", num_classes=2, max_boxes=4)
    with pytest.raises(ValueError, match=r"'det' \(detection\) must be a dict.*"
                                         r"shape \(2, 4\)"):
        task.check_label_spec(np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"keys \['boxes'\], expected"):
        task.check_label_spec({"boxes": np.zeros((2, 4, 4))})
    with pytest.raises(ValueError, match=r"boxes of shape \(2, 4, 4\) and classes of "
                                         r"shape \(2, 3\)"):
        task.check_label_spec({"boxes": np.zeros((2, 4, 4)), "classes": np.zeros((2, 3))})
    with pytest.raises(ValueError, match="6 box rows per image, more than max_boxes=4. "
                                         "Raise max_boxes"):
        task.check_label_spec({"boxes": tf.TensorSpec((None, 6, 4)),
                               "classes": tf.TensorSpec((None, 6), tf.int32)})
    task.check_label_spec({"boxes": tf.TensorSpec((None, None, 4)),
                           "classes": tf.TensorSpec((None, None), tf.int32)})


def test_label_value_errors():
    task = Detection("det", num_classes=2, max_boxes=2)
    good = _batch(_label([[0, 0, 4, 4]], [1], 2))
    with pytest.raises(ValueError, match=r"class ids \[2\] outside \[0, num_classes=2\)"):
        task.check_label_values({**good, "classes": np.array([[2, -1]])})
    partial = good["boxes"].copy()
    partial[0, 1] = np.nan
    with pytest.raises(ValueError, match="image 0 has NaN in some boxes only"):
        task.check_label_values({**good, "boxes": partial})
    with pytest.raises(ValueError, match="NaN boxes .* but class ids >= 0"):
        task.check_label_values({"boxes": np.full((1, 2, 4), np.nan),
                                 "classes": np.array([[0, -1]])})
    with pytest.warns(UserWarning, match="1 box.* of zero or negative size"):
        task.check_label_values({**good, "boxes": np.array([[[3, 0, 3, 4], [0] * 4]])})


def test_fit_checks_array_labels():
    task = Detection("det", num_classes=2, max_boxes=2, head_channels=0)
    image = keras.Input((8, 8, 3))
    model = mtl.MultiTaskModel(image, {"det": task.build_head(image)}, tasks=[task])
    model.compile()
    labels = {"det": {"boxes": np.zeros((1, 2, 4), "float32"),
                      "classes": np.array([[5, -1]], "int32")}}
    with pytest.raises(ValueError, match=r"Labels for task 'det' \(detection\) have "
                                         r"class ids \[5\]"):
        model.fit(np.zeros((1, 8, 8, 3)), labels, verbose=0)


def test_argument_errors():
    with pytest.raises(ValueError, match=r"`num_classes` of task 'det'.*int >= 1"):
        Detection("det", num_classes=0)
    with pytest.raises(ValueError, match=r"`score_threshold` of task 'det'.*\[0, 1\)"):
        Detection("det", 2, score_threshold=1.0)
    with pytest.raises(ValueError, match="Task 'det': Invalid value for argument "
                                         "`size_weight`"):
        Detection("det", 2, size_weight=-1.0)
    with pytest.raises(ValueError, match="own CenterNet loss.*loss='mse'"):
        Detection("det", 2, loss="mse")
    with pytest.raises(ValueError, match="Unknown metric 'map'.*kerasmtl.metrics.detection"):
        Detection("det", 2).metric_from_identifier("map")


def _od_api_pixel_boxes(detection_boxes, height, width):
    """What a TF Object Detection API client does with `detection_boxes`
    (e.g. its visualization utils): [ymin, xmin, ymax, xmax] times the image
    size, back to pixel corners (here in x1, y1, x2, y2 order)."""
    ymin, xmin, ymax, xmax = np.moveaxis(np.asarray(detection_boxes), -1, 0)
    return np.stack([xmin * width, ymin * height, xmax * width, ymax * height], -1)


def test_an_od_api_client_reads_the_served_boxes_right():
    from kerasmtl.preprocessors.images import ImageGeometry

    task = Detection("detection", num_classes=1, stride=8, max_detections=2)
    # One peak at cell x=2, y=1 of a 4 x 6 grid (a 32 x 48 padded image):
    # centre (2.5, 1.5) cells, size 2 x 1 cells -> pixels [12, 8, 28, 16].
    raw = np.full((1, 4, 6, 5), -10.0, "float32")
    raw[0, 1, 2] = [3.0, 2.0, 1.0, 0.5, 0.5]
    # The request's image was 30 x 45, padded to 32 x 48 for the model.
    geometry = ImageGeometry(tf.constant([30, 45]), tf.constant([32, 48]))
    out = task.serving_outputs(tf.constant(raw), geometry)
    np.testing.assert_allclose(out["detection_boxes_xyxy"][0, 0], [12, 8, 28, 16],
                               atol=1e-5)
    read = _od_api_pixel_boxes(out["detection_boxes"].numpy()[0, 0], 30, 45)
    np.testing.assert_allclose(read, [12, 8, 28, 16], atol=1e-4)
    # Padding rows are all zero in both formats.
    assert not out["detection_boxes"].numpy()[0, 1].any()
    # Without geometry (the Keras-side postprocess) the boxes are normalised
    # by the model's input, 32 x 48.
    local = task.postprocess(tf.constant(raw))
    np.testing.assert_allclose(
        _od_api_pixel_boxes(local["detection_boxes"].numpy()[0, 0], 32, 48),
        [12, 8, 28, 16], atol=1e-4)
