"""In-graph instance-id maps (`kerasmtl.layers.instance_masks`): by hand, and
against the numpy reference `kerasmtl.metrics.instance`."""

import numpy as np
import pytest
import tensorflow as tf

from kerasmtl.layers.instance_masks import instance_id_map, serving_instance_ids
from kerasmtl.metrics.instance import instance_masks_from_boxes


def _reference_ids(boxes, scores, count, foreground, **rule):
    masks = instance_masks_from_boxes(boxes[:count], foreground, scores[:count], **rule)
    return (masks * np.arange(1, count + 1)[:, None, None]).sum(0)


def test_pixel_centres_clipping_and_foreground_by_hand():
    # [0.4, 0.6, 2.5, 3.6]: centres x + 0.5 in [0.4, 2.5) -> cols 0, 1; rows
    # 1..3. [3.2, -2, 9, 1]: cols 3, 4 (clipped), row 0 (clipped).
    boxes = np.array([[[0.4, 0.6, 2.5, 3.6], [3.2, -2, 9, 1]]], "float32")
    foreground = np.ones((1, 4, 5), "int32")
    foreground[0, 2, 1] = 0  # background
    foreground[0, 0, 4] = -1  # unknown counts as background
    expected = np.array([[0, 0, 0, 2, 0],
                         [1, 1, 0, 0, 0],
                         [1, 0, 0, 0, 0],
                         [1, 1, 0, 0, 0]])
    ids = instance_id_map(boxes, None, None, foreground).numpy()
    np.testing.assert_array_equal(ids[0], expected)
    assert ids.dtype == np.int32


def test_overlaps_go_to_the_higher_score_and_ties_to_the_earlier_row():
    boxes = np.array([[[0, 0, 3, 2], [1, 0, 4, 2]]], "float32")
    fg = np.ones((1, 2, 4), bool)
    best_second = instance_id_map(boxes, [[0.3, 0.8]], [2], fg).numpy()[0]
    np.testing.assert_array_equal(best_second, [[1, 2, 2, 2], [1, 2, 2, 2]])
    tie = instance_id_map(boxes, [[0.5, 0.5]], [2], fg).numpy()[0]
    np.testing.assert_array_equal(tie, [[1, 1, 1, 2], [1, 1, 1, 2]])


def test_padding_rows_are_ignored_per_image():
    boxes = np.array([[[0, 0, 2, 2], [0, 0, 4, 4]],
                      [[2, 2, 4, 4], [0, 0, 4, 4]]], "float32")
    ids = instance_id_map(boxes, [[0.9, 0.1], [0.1, 0.9]], [1, 2],
                          np.ones((2, 4, 4))).numpy()
    assert ids[0].sum() == 4 and (ids[0][:2, :2] == 1).all()  # row 2 is padding
    assert (ids[1] == 2).all()  # the better box covers all


def test_matches_the_numpy_reference_on_random_cases():
    rng = np.random.default_rng(0)
    for trial in range(12):
        height, width, n = rng.integers(3, 20, 2).tolist() + [int(rng.integers(0, 10))]
        corners = rng.uniform(-4, 24, (2, n, 2))
        boxes = np.concatenate([corners.min(0), corners.max(0)], -1)
        if trial % 2:  # half-pixel edges, the ceil(x - 0.5) boundary cases
            boxes = np.round(boxes * 2) / 2
        scores = np.round(rng.uniform(0, 1, n), 1)  # with ties
        fg = rng.uniform(size=(height, width)) > 0.3
        count = int(rng.integers(0, n + 1))
        for rule in ({}, {"overlap": "centre"}, {"overlap": "centre", "grow": 0.25},
                     {"grow": 0.5}):
            got = instance_id_map(boxes[None].astype("float32"), scores[None], [count],
                                  fg[None], **rule).numpy()[0]
            np.testing.assert_array_equal(
                got, _reference_ids(boxes, scores, count, fg, **rule), err_msg=str(rule))


def test_centre_rule_splits_an_overlap_by_distance_and_grow_widens_boxes_by_hand():
    # Two 5-px-wide boxes overlapping in cols 3, 4 (centres x = 2.5 and 5.5):
    # "score" gives the overlap to the better box; "centre" gives col 3
    # (pixel centre 3.5: distance (1 / 2.5)^2 against (2 / 2.5)^2) to the
    # first box and col 4 to the second, whatever the scores.
    boxes = np.array([[[0, 0, 5, 2], [3, 0, 8, 2]]], "float32")
    fg = np.ones((1, 2, 8), bool)
    by_score = instance_id_map(boxes, [[0.9, 0.5]], [2], fg).numpy()[0]
    np.testing.assert_array_equal(by_score[0], [1, 1, 1, 1, 1, 2, 2, 2])
    for scores in ([[0.9, 0.5]], [[0.5, 0.9]]):
        by_centre = instance_id_map(boxes, scores, [2], fg, overlap="centre").numpy()[0]
        np.testing.assert_array_equal(by_centre[0], [1, 1, 1, 1, 2, 2, 2, 2])
    # Equal distances (the same box twice) go to the better score, then to
    # the earlier row.
    twice = np.array([[[0, 0, 4, 1], [0, 0, 4, 1]]], "float32")
    fg1 = np.ones((1, 1, 4), bool)
    for scores, owner in (([[0.4, 0.6]], 2), ([[0.6, 0.4]], 1), ([[0.5, 0.5]], 1)):
        ids = instance_id_map(twice, scores, [2], fg1, overlap="centre").numpy()
        assert (ids == owner).all(), (scores, ids)
    # grow=0.5 on a 2x2 box at (2, 2)-(4, 4): the footprint is (1, 1)-(5, 5).
    grown = instance_id_map(np.array([[[2, 2, 4, 4]]], "float32"), None, None,
                            np.ones((1, 6, 6), bool), grow=0.5).numpy()[0]
    assert grown.sum() == 16 and (grown[1:5, 1:5] == 1).all()


def test_unknown_overlap_rule_and_bad_grow_are_clear_errors():
    boxes, fg = np.zeros((1, 1, 4), "float32"), np.ones((1, 2, 2), bool)
    with pytest.raises(ValueError, match=r"`overlap` must be one of \('score', 'centre'\)"):
        instance_id_map(boxes, None, None, fg, overlap="center")
    with pytest.raises(ValueError, match="`grow` must be a finite number >= 0"):
        instance_id_map(boxes, None, None, fg, grow=-0.1)
    with pytest.raises(ValueError, match="instance_masks_from_boxes: `grow`"):
        instance_masks_from_boxes(np.zeros((1, 4)), fg[0], grow=float("nan"))


def test_runs_in_a_graph_with_unknown_sizes_and_many_large_boxes():
    spec = [tf.TensorSpec([None, None, 4]), tf.TensorSpec([None, None]),
            tf.TensorSpec([None], tf.int32), tf.TensorSpec([None, None, None], tf.bool)]
    fn = tf.function(instance_id_map, input_signature=spec)
    # 6 boxes each covering a 200x400 image: one chunk of pixels per box.
    boxes = np.tile(np.array([[[0, 0, 400, 200]]], "float32"), (1, 6, 1))
    scores = np.array([[0.1, 0.2, 0.9, 0.3, 0.9, 0.0]], "float32")
    ids = fn(boxes, scores, np.array([6], "int32"), np.ones((1, 200, 400), bool))
    assert (ids.numpy() == 3).all()  # the first of the two 0.9 boxes
    empty = fn(np.zeros((2, 0, 4), "float32"), np.zeros((2, 0), "float32"),
               np.zeros(2, "int32"), np.ones((2, 3, 5), bool))
    assert empty.shape == (2, 3, 5) and not empty.numpy().any()


def test_bad_inputs_raise_with_the_shapes():
    with pytest.raises(ValueError, match=r"`boxes` has shape \(1, 2\)"):
        instance_id_map(np.zeros((1, 2)), None, None, np.ones((1, 2, 2)))
    with pytest.raises(ValueError, match="`foreground` has shape .*drop a channel"):
        instance_id_map(np.zeros((1, 2, 4)), None, None, np.ones((1, 2, 2, 1)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or infinite"):
        instance_id_map(np.full((1, 1, 4), np.nan), None, None, np.ones((1, 2, 2)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="different batch sizes"):
        instance_id_map(np.zeros((2, 1, 4)), None, None, np.ones((1, 2, 2)))


def test_serving_instance_ids_reads_the_serving_names():
    outputs = {"cells_boxes_xyxy": np.array([[[0, 0, 2, 1]]], "float32"),
               "cells_scores": np.array([[0.9]], "float32"),
               "cells_num_detections": np.array([1], "int32"),
               "mask": np.array([[[1, 1, 1], [1, 1, 1]]], "int32")}
    ids = serving_instance_ids(outputs, detection="cells", segmentation="mask")
    np.testing.assert_array_equal(ids.numpy()[0], [[1, 1, 0], [0, 0, 0]])
    # min_score above the only detection's score: no instance.
    ids = serving_instance_ids(outputs, detection="cells", segmentation="mask",
                               min_score=0.95)
    assert not ids.numpy().any()
    with pytest.raises(ValueError, match=r"outputs \['num_detections'"):
        serving_instance_ids({"detection_boxes_xyxy": 0, "detection_scores": 0,
                              "segmentation": 0})
