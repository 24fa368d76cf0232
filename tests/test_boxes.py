import numpy as np
import pytest
import tensorflow as tf

from kerasmtl import boxes as box_lib

# One box, x 10..30, y 20..60 in a 100 x 50 (height x width) image, in every
# format, worked out by hand.
XYXY = [10.0, 20.0, 30.0, 60.0]
FORMATS = {
    "xyxy": XYXY,
    "yxyx": [20.0, 10.0, 60.0, 30.0],
    "xywh": [10.0, 20.0, 20.0, 40.0],
    "center_xywh": [20.0, 40.0, 20.0, 40.0],
    "center_yxhw": [40.0, 20.0, 40.0, 20.0],
    "rel_xyxy": [0.2, 0.2, 0.6, 0.6],
    "rel_center_xywh": [0.4, 0.4, 0.4, 0.4],
}


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_convert_format_both_ways(name):
    got = box_lib.convert_format([XYXY], "xyxy", name, height=100, width=50)
    np.testing.assert_allclose(got, [FORMATS[name]], atol=1e-6)
    back = box_lib.convert_format(got, name, "xyxy", height=100, width=50)
    np.testing.assert_allclose(back, [XYXY], atol=1e-5)


def test_convert_format_on_tensors_in_a_graph():
    fn = tf.function(lambda b: box_lib.convert_format(b, "xyxy", "center_xywh"))
    got = fn(tf.constant([[XYXY]]))
    assert tf.is_tensor(got)
    np.testing.assert_allclose(got.numpy(), [[FORMATS["center_xywh"]]])


def test_convert_format_errors():
    with pytest.raises(ValueError, match="Unknown box format 'xyz'.*rel_"):
        box_lib.convert_format([XYXY], "xyz", "xyxy")
    with pytest.raises(ValueError, match="'rel_xyxy' is relative.*height.*width"):
        box_lib.convert_format([XYXY], "rel_xyxy", "xyxy")
    with pytest.raises(ValueError, match="'rel_yxyx' is relative"):
        box_lib.convert_format([XYXY], "xyxy", "rel_yxyx", height=10)
    with pytest.raises(ValueError, match=r"last axis of size 4, got shape \(1, 3\)"):
        box_lib.convert_format([[1.0, 2.0, 3.0]], "xyxy", "xywh")


def test_clip_boxes_keeps_nan():
    got = box_lib.clip_boxes([[-5.0, 10.0, 40.0, 70.0], [np.nan] * 4], height=64, width=32)
    np.testing.assert_array_equal(got[0], [0.0, 10.0, 32.0, 64.0])
    assert np.isnan(got[1]).all()


def test_box_iou_numpy_and_tensor():
    a = [[0, 0, 10, 10], [0, 0, 0, 0]]
    b = [[5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30]]
    # 50 / 150; identical; disjoint. An empty box has IoU 0, never NaN.
    expected = [[1 / 3, 1.0, 0.0], [0.0, 0.0, 0.0]]
    np.testing.assert_allclose(box_lib.box_iou(a, b), expected, atol=1e-6)
    got = box_lib.box_iou(tf.constant(a, tf.float32), tf.constant(b, tf.float32))
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-6)


def test_validate_boxes_clips_and_warns_about_dropped_boxes():
    boxes = [[-4, 2, 10, 12], [5, 5, 5, 9], [9, 1, 12, 3]]
    with pytest.warns(UserWarning, match="img_7.png: dropped 2 of 3 box"):
        got, classes = box_lib.validate_boxes(
            boxes, [1, 0, 2], height=8, width=8, num_classes=3, source="img_7.png"
        )
    # the third box lies right of the 8 px image: clipped to x 8..8, dropped
    np.testing.assert_array_equal(got, [[0, 2, 8, 8]])
    np.testing.assert_array_equal(classes, [1])
    assert classes.dtype == np.int32


def test_validate_boxes_errors():
    with pytest.raises(ValueError, match=r"a.png contain 1 non-finite"):
        box_lib.validate_boxes([[0, 0, np.nan, 1]], [0], 8, 8, source="a.png")
    with pytest.raises(ValueError, match=r"must lie in \[0, 2\); found \[5\]"):
        box_lib.validate_boxes([[0, 0, 1, 1]], [5], 8, 8, num_classes=2)
    with pytest.raises(ValueError, match=r"must be >= 0; found \[-1\]. Encode"):
        box_lib.validate_boxes([[0, 0, 1, 1]], [-1], 8, 8)
    with pytest.raises(ValueError, match=r"shape \(1, 3\).*expected \[N, 4\]"):
        box_lib.validate_boxes([[0, 0, 1]], [0], 8, 8)


def test_pad_boxes_and_too_many_boxes():
    label = box_lib.pad_boxes([[1, 2, 3, 4]], [2], max_boxes=3)
    np.testing.assert_array_equal(label["classes"], [2, -1, -1])
    np.testing.assert_array_equal(label["boxes"][1:], 0.0)
    with pytest.raises(ValueError, match="img_3 has 3 boxes, more than max_boxes=2. "
                                         "Raise max_boxes"):
        box_lib.pad_boxes(np.zeros((3, 4)), [0, 0, 0], max_boxes=2, source="img_3")


def test_missing_detection_label():
    label = box_lib.missing_detection_label(4)
    assert label["boxes"].shape == (4, 4) and np.isnan(label["boxes"]).all()
    assert label["classes"].dtype == np.int32 and (label["classes"] == -1).all()
