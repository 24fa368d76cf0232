"""Instance masks from boxes x foreground, and the DSB-2018 score
(`kerasmtl.metrics.instance`), by hand."""

import numpy as np
import pytest

from kerasmtl.metrics.instance import (
    dsb2018_score,
    instance_iou,
    instance_masks_from_boxes,
    mean_dsb2018_score,
)


def test_masks_take_box_pixels_by_centre_and_clip_to_the_image():
    fg = np.ones((4, 5), bool)
    # [0.4, 0.6, 2.5, 3.6]: centres x + 0.5 in [0.4, 2.5) -> cols 0, 1
    # (2.5 is excluded); y + 0.5 in [0.6, 3.6) -> rows 1, 2, 3.
    # [3.2, -2, 9, 1]: cols 3, 4 (clipped at 5), row 0 (clipped at 0).
    masks = instance_masks_from_boxes([[0.4, 0.6, 2.5, 3.6], [3.2, -2, 9, 1]], fg)
    expected = np.zeros((2, 4, 5), bool)
    expected[0, 1:4, 0:2] = True
    expected[1, 0, 3:5] = True
    np.testing.assert_array_equal(masks, expected)


def test_masks_are_cut_by_the_foreground_and_disjoint_by_score():
    fg = np.zeros((4, 4), int)  # a class map: > 0 is foreground, -1 unknown
    fg[1:3, :] = 1
    fg[0, 0] = -1
    boxes = [[0, 0, 3, 4], [2, 0, 4, 4], [0, 3, 1, 4]]  # the last: background only
    masks = instance_masks_from_boxes(boxes, fg, scores=[0.2, 0.7, 0.9])
    # Box 1 (0.7) beats box 0 (0.2) on column 2; box 2 gets nothing.
    expected = np.zeros((3, 4, 4), bool)
    expected[0, 1:3, 0:2] = True
    expected[1, 1:3, 2:4] = True
    np.testing.assert_array_equal(masks, expected)
    assert masks.sum(0).max() == 1
    # Without scores the earlier box wins.
    masks = instance_masks_from_boxes(boxes, fg > 0)
    assert masks[0, 1, 2] and not masks[1, 1, 2]
    assert instance_masks_from_boxes(np.zeros((0, 4)), fg).shape == (0, 4, 4)


@pytest.mark.parametrize(
    "boxes, foreground, scores, message",
    [
        (
            [[0, 0, 1, 1]],
            np.ones((1, 2, 2)),
            None,
            r"`foreground` has shape \(1, 2, 2\)",
        ),
        ([[0, 0, 1]], np.ones((2, 2)), None, r"`boxes` has shape \(1, 3\)"),
        ([[0, 0, np.nan, 1]], np.ones((2, 2)), None, r"NaN"),
        ([[0, 0, 1, 1]], np.ones((2, 2)), [0.5, 0.2], r"1 boxes but 2 scores"),
    ],
)
def test_masks_bad_input(boxes, foreground, scores, message):
    with pytest.raises(ValueError, match=message):
        instance_masks_from_boxes(boxes, foreground, scores)


def _label_image(shape, rectangles):
    image = np.zeros(shape, int)
    for i, (r0, r1, c0, c1) in enumerate(rectangles, start=1):
        image[r0:r1, c0:c1] = i
    return image


def test_dsb2018_three_nuclei_by_hand():
    # True: A (2x2 = 4 px), B (2x3 = 6 px), C (1x2 = 2 px).
    true = _label_image((6, 8), [(0, 2, 0, 2), (0, 2, 4, 7), (4, 5, 0, 2)])
    # Pred: A exactly (IoU 1); B minus one column (4/6 = 0.667); C with two
    # extra pixels (2/4 = 0.5: never *above* a threshold); D a false positive.
    pred = _label_image(
        (6, 8), [(0, 2, 0, 2), (0, 2, 4, 6), (4, 5, 0, 4), (5, 6, 6, 8)]
    )
    iou = instance_iou(true, pred)
    np.testing.assert_allclose(np.diag(iou)[:3], [1.0, 4 / 6, 0.5])
    # t = 0.50, 0.55, 0.60, 0.65: TP 2 (A, B), FP 2 (C', D), FN 1 (C) -> 2/5.
    # t = 0.70 .. 0.95 (6 thresholds): TP 1 (A), FP 3, FN 2 -> 1/6.
    expected = (4 * 2 / 5 + 6 * 1 / 6) / 10
    np.testing.assert_allclose(dsb2018_score(true, pred), expected)
    # The same instances as a stack of masks [N, H, W].
    stack = np.stack([true == i for i in (1, 2, 3)])
    np.testing.assert_allclose(dsb2018_score(stack, pred), expected)
    assert dsb2018_score(true, true) == 1.0


def test_dsb2018_empty_images():
    empty = np.zeros((3, 3), int)
    one = _label_image((3, 3), [(0, 2, 0, 2)])
    assert dsb2018_score(empty, empty) == 1.0  # nothing to find, nothing found
    assert dsb2018_score(one, empty) == 0.0
    assert dsb2018_score(empty, one) == 0.0
    # Instances without a pixel (e.g. a box over background) are not objects.
    assert dsb2018_score(one, np.stack([one == 1, np.zeros((3, 3), bool)])) == 1.0
    np.testing.assert_allclose(
        mean_dsb2018_score([empty, one, one], [empty, empty, one]), 2 / 3
    )


def test_dsb2018_matches_the_kaggle_formula_on_disjoint_instances():
    # The competition kernels' formula: with IoU > t, true object i is a TP
    # if it matches exactly one prediction, prediction j a FP if it matches
    # none, true i a FN if it matches none.
    rng = np.random.default_rng(0)
    for _ in range(5):
        shape = (24, 24)

        def rectangles(n):
            corners = rng.integers(0, 20, (n, 2))
            sizes = rng.integers(2, 8, (n, 2))
            return [(r, r + h, c, c + w) for (r, c), (h, w) in zip(corners, sizes)]

        true = _label_image(shape, rectangles(5))
        pred = _label_image(shape, rectangles(6))
        iou = instance_iou(true, pred)
        values = []
        for t in np.linspace(0.5, 0.95, 10):
            matches = iou > t
            tp = np.sum(matches.sum(1) == 1)
            fp = np.sum(matches.sum(0) == 0)
            fn = np.sum(matches.sum(1) == 0)
            values.append(tp / (tp + fp + fn))
        np.testing.assert_allclose(dsb2018_score(true, pred), np.mean(values))
        np.testing.assert_allclose(dsb2018_score(true, true), 1.0)


def test_boxes_and_foreground_end_to_end():
    # Two touching nuclei; the semantic foreground is perfect, the boxes are
    # the true ones: the masks rebuild the instances exactly.
    true = _label_image((8, 8), [(1, 4, 1, 4), (1, 4, 4, 7)])
    boxes = [[1, 1, 4, 4], [4, 1, 7, 4]]  # xyxy
    masks = instance_masks_from_boxes(boxes, true > 0, scores=[0.9, 0.8])
    assert dsb2018_score(true, masks) == 1.0


@pytest.mark.parametrize(
    "true, pred, message",
    [
        (
            np.zeros((3, 3)),
            np.zeros((4, 3)),
            r"\(3, 3\) \(H, W\) but predicted masks are \(4, 3\)",
        ),
        (
            np.zeros((1, 1, 3, 3)),
            np.zeros((3, 3)),
            r"`true_masks` has shape \(1, 1, 3, 3\)",
        ),
    ],
)
def test_dsb2018_bad_input(true, pred, message):
    with pytest.raises(ValueError, match=message):
        dsb2018_score(true, pred)
    with pytest.raises(ValueError, match="2 images of true masks but 1"):
        mean_dsb2018_score([true, true], [pred])
