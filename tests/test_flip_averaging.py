"""Test-time flip averaging (`kerasmtl.flip_averaging`): each task maps its output
on a flipped image back to the image, and an exported model built with
`test_time_flips` serves the mean over the flips."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasmtl as mtl
import zoo
from kerasmtl.flip_averaging import FLIPS, flip_averaged_outputs, flip_images

TINY = {"widths": (4, 4, 4, 4), "fpn_channels": 4, "head_channels": 4}


def _one_peak(grid, cell, size, offset, num_classes=2, cls=1):
    raw = np.full((1, *grid, num_classes + 4), -20.0, "float32")
    raw[0, cell[0], cell[1], cls] = 5.0
    raw[0, ..., num_classes:num_classes + 2] = size
    raw[0, ..., num_classes + 2:] = offset
    return raw


@pytest.mark.parametrize("horizontal,vertical", [(True, False), (False, True), (True, True)])
def test_detection_flip_back_mirrors_the_decoded_box(horizontal, vertical):
    task = mtl.tasks.Detection("det", num_classes=2, max_detections=4)
    grid, stride = (6, 8), task.stride
    height, width = grid[0] * stride, grid[1] * stride
    # A box seen on the flipped image: centre cell (2, 5), offset (0.3, 0.8).
    flipped = _one_peak(grid, (2, 5), size=(2.0, 1.5), offset=(0.3, 0.8))
    seen = task.postprocess(tf.constant(flipped))["det_boxes_xyxy"].numpy()[0, 0]
    back = task.postprocess(task.flip_back(tf.constant(flipped), horizontal, vertical))
    assert int(back["det_num_detections"][0]) == 1
    assert int(back["det_classes"][0, 0]) == 1
    x1, y1, x2, y2 = seen
    if horizontal:
        x1, x2 = width - x2, width - x1
    if vertical:
        y1, y2 = height - y2, height - y1
    np.testing.assert_allclose(back["det_boxes_xyxy"].numpy()[0, 0], [x1, y1, x2, y2],
                               atol=1e-4)


def test_segmentation_flip_back_and_image_level_outputs():
    logits = tf.random.stateless_normal((2, 4, 6, 3), seed=(1, 2))
    task = mtl.tasks.Segmentation("seg", 3)
    for horizontal, vertical in FLIPS[4]:
        flipped = flip_images(logits, horizontal, vertical)
        expected = np.asarray(logits)[:, ::-1 if vertical else 1, ::-1 if horizontal else 1]
        np.testing.assert_array_equal(flipped, expected)  # numpy's flip, not a no-op
        np.testing.assert_array_equal(task.flip_back(flipped, horizontal, vertical), logits)
    # An image-level output does not depend on the orientation.
    scores = tf.constant([[0.2, 0.8]])
    assert mtl.tasks.Classification("c", 2).flip_back(scores, True, True) is scores


def test_invalid_flip_count_is_refused():
    with pytest.raises(ValueError, match=r"`test_time_flips`. Expected 1.*2.*4.*Received: "
                                         r"test_time_flips=3"):
        zoo.create_model("det_seg_resnet_fpn", test_time_flips=3, **TINY)


@pytest.mark.large  # ~25 s: two exports
def test_exported_model_serves_the_mean_over_flips(tmp_path):
    keras.utils.set_random_seed(0)
    model = zoo.create_model("det_seg_resnet_fpn", test_time_flips=4, **TINY)
    assert model.test_time_flips == 4
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.test_time_flips == 4
    single = zoo.create_model("det_seg_resnet_fpn", **TINY)
    single.set_weights(model.get_weights())

    image = np.random.default_rng(0).integers(0, 256, (1, 64, 96, 3), np.uint8)
    averaged = flip_averaged_outputs(model, {"image": tf.constant(image)}, [0])
    # The same mean computed independently: numpy flips, one pass each, the
    # logits flipped back and the CenterNet offsets mirrored (dx -> 1 - dx).
    seg, det = [], []
    for vertical in (False, True):
        for horizontal in (False, True):
            rows, cols = (slice(None, None, -1 if v else 1) for v in (vertical, horizontal))
            out = model({"image": image[:, rows, cols]})
            seg.append(np.asarray(out["segmentation"])[:, rows, cols])
            raw = np.asarray(out["detection"])[:, rows, cols].copy()
            if horizontal:
                raw[..., -2] = 1.0 - raw[..., -2]
            if vertical:
                raw[..., -1] = 1.0 - raw[..., -1]
            det.append(raw)
    np.testing.assert_allclose(averaged["segmentation"], np.mean(seg, 0), atol=1e-4)
    np.testing.assert_allclose(averaged["detection"], np.mean(det, 0), atol=1e-4)
    # predict averages the same way; calling the model takes one pass.
    predicted = model.predict({"image": image}, verbose=0)
    np.testing.assert_allclose(predicted["segmentation"], averaged["segmentation"], atol=1e-4)
    np.testing.assert_allclose(predicted["detection"], averaged["detection"], atol=1e-4)
    np.testing.assert_allclose(single.predict({"image": image}, verbose=0)["segmentation"],
                               model({"image": image})["segmentation"], atol=1e-4)
    expected = model.serving_outputs(averaged)
    served = tf.saved_model.load(mtl.export.export_saved_model(model, tmp_path / "tta"))
    out = served.signatures["serving_default"](image=tf.constant(image))
    np.testing.assert_allclose(out["segmentation_logits"], expected["segmentation_logits"],
                               atol=1e-4)
    np.testing.assert_allclose(out["detection"], expected["detection"], atol=1e-4)
    # Without flips the export serves one pass, which differs.
    plain = tf.saved_model.load(mtl.export.export_saved_model(single, tmp_path / "one"))
    one = plain.signatures["serving_default"](image=tf.constant(image))
    np.testing.assert_allclose(one["segmentation_logits"],
                               model({"image": image})["segmentation"], atol=1e-4)
    assert not np.allclose(one["segmentation_logits"], out["segmentation_logits"], atol=1e-4)
