"""COCO mAP (`kerasmtl.metrics.detection`): worked examples by hand, input
forms (lists, padded batches, missing labels), and agreement with pycocotools'
COCOeval on random data sets."""

import contextlib
import io
import json

import numpy as np
import pytest

from kerasmtl.metrics.detection import COCO_AREA_RANGES, DetectionEvaluator, coco_map


def test_hand_example_duplicates_and_a_class_without_ground_truth():
    # Class 0: image 0 has boxes g1, g2; image 1 has g3. Detections by score:
    # d1 = g1 (TP), d2 far away (FP), d3 = g3 (TP), d4 = g1 again (FP: g1 is
    # taken). Recall 1/3, 1/3, 2/3, 2/3; precision 1, 1/2, 2/3, 1/2, made
    # monotone: 1, 2/3, 2/3, 1/2. The 101 recall levels: 0.00..0.33 read 1
    # (34 levels), 0.34..0.66 read 2/3 (33 levels), above 2/3 read 0.
    # AP = (34 + 33 * 2/3) / 101 = 56/101 at every threshold (IoUs are 1 or 0).
    # The class-1 detection has no class-1 ground truth: no AP, left out.
    gt = [
        {"boxes": [[0, 0, 10, 10], [20, 20, 30, 30]], "classes": [0, 0]},
        {"boxes": [[0, 0, 10, 10]], "classes": [0]},
    ]
    dt = [
        {
            "boxes": [[0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 10, 10], [5, 5, 9, 9]],
            "scores": [0.9, 0.8, 0.6, 0.99],
            "classes": [0, 0, 0, 1],
        },
        {"boxes": [[0, 0, 10, 10]], "scores": [0.7], "classes": [0]},
    ]
    result = coco_map(gt, dt)
    expected = 56 / 101
    for key in ("map", "map_50", "map_75"):
        np.testing.assert_allclose(result[key], expected, atol=1e-9, err_msg=key)
    assert list(result["per_class"]) == [0]
    np.testing.assert_allclose(result["per_class"][0], expected, atol=1e-9)
    np.testing.assert_allclose(result["mar"], 2 / 3, atol=1e-9)


def test_hand_example_greedy_match_takes_the_later_box_on_a_tie():
    # Boxes a = [0, 10] and b = [4, 14] (x; y in [0, 10]). Detection d1 = [2, 12]
    # has IoU 80/120 = 2/3 with both; on the tie COCOeval keeps the later box,
    # b. Then d2 = b exactly finds b taken: IoU with a is 60/140 < 0.5, a FP.
    # t in 0.50..0.65 (4 thresholds): TP, FP -> recall 1/2 with precision 1:
    #   AP = 51/101 (levels 0.00..0.50).
    # t in 0.70..0.95 (6): d1 misses, d2 matches b -> precisions 0, 1/2 made
    #   monotone 1/2, 1/2 at recall 1/2: AP = 51 * 0.5 / 101.
    gt = [{"boxes": [[0, 0, 10, 10], [4, 0, 14, 10]], "classes": [3, 3]}]
    dt = [
        {
            "boxes": [[2, 0, 12, 10], [4, 0, 14, 10]],
            "scores": [0.9, 0.8],
            "classes": [3, 3],
        }
    ]
    result = coco_map(gt, dt)
    np.testing.assert_allclose(result["map"], (4 * 51 + 6 * 25.5) / 1010, atol=1e-9)
    np.testing.assert_allclose(result["map_50"], 51 / 101, atol=1e-9)
    np.testing.assert_allclose(result["map_75"], 25.5 / 101, atol=1e-9)
    np.testing.assert_allclose(_pycocotools(gt, dt)["map"], result["map"], atol=1e-9)


def test_max_detections_keeps_the_best_per_image_and_class():
    # Two FPs score above the TP; with max_detections=2 the TP is cut: AP 0.
    gt = [{"boxes": [[0, 0, 10, 10]], "classes": [0]}]
    dt = [
        {
            "boxes": [[30, 30, 40, 40], [50, 50, 60, 60], [0, 0, 10, 10]],
            "scores": [0.9, 0.8, 0.7],
            "classes": [0, 0, 0],
        }
    ]
    assert coco_map(gt, dt, max_detections=2)["map"] == 0.0
    # With all three: precision 1/3 at recall 1 -> AP = 1/3 (plus eps).
    np.testing.assert_allclose(coco_map(gt, dt)["map"], 1 / 3, atol=1e-9)


def test_padded_batches_missing_labels_and_prefixes():
    gt = [
        {"boxes": [[0, 0, 10, 10], [20, 20, 30, 30]], "classes": [0, 1]},
        {"boxes": np.zeros((0, 4)), "classes": np.zeros(0, int)},  # no object
    ]
    dt = [
        {"boxes": [[0, 0, 10, 10]], "scores": [0.9], "classes": [0]},
        {"boxes": [[1, 1, 5, 5]], "scores": [0.5], "classes": [1]},
    ]
    expected = coco_map(gt, dt)
    # Padded as a Detection label (M = 3) and as Detection.postprocess (K = 2).
    labels = {"boxes": np.zeros((2, 3, 4), "float32"), "classes": np.full((2, 3), -1)}
    labels["boxes"][0, :2] = gt[0]["boxes"]
    labels["classes"][0, :2] = [0, 1]
    outputs = {
        "boxes": np.zeros((2, 2, 4), "float32"),
        "scores": np.zeros((2, 2), "float32"),
        "classes": np.full((2, 2), -1),
        "num_detections": np.array([1, 1]),
    }
    outputs["boxes"][:, 0] = [[0, 0, 10, 10], [1, 1, 5, 5]]
    outputs["scores"][:, 0] = [0.9, 0.5]
    outputs["classes"][:, 0] = [0, 1]
    # A row past num_detections is dropped even with a class.
    outputs["classes"][0, 1] = 0
    outputs["scores"][0, 1] = 0.95
    for prefix, count in (
        ("detection", "num_detections"),
        ("boxes", "boxes_num_detections"),
    ):
        # Postprocess names: pixel boxes under `<prefix>_boxes_xyxy`.
        padded = {
            f"{prefix}_{k}_xyxy" if k == "boxes" else f"{prefix}_{k}": v
            for k, v in outputs.items() if k != "num_detections"
        }
        padded[count] = outputs["num_detections"]
        got = coco_map(labels, padded, prefix=prefix)
        np.testing.assert_allclose(got["map"], expected["map"], atol=1e-12)
    # A missing label (boxes NaN) leaves the image out with its detections.
    missing = {"boxes": np.full((3, 4), np.nan), "classes": np.full(3, -1)}
    extra = {"boxes": [[0, 0, 10, 10]], "scores": [0.99], "classes": [0]}
    got = coco_map([*gt, missing], [*dt, extra])
    np.testing.assert_allclose(got["map"], expected["map"], atol=1e-12)
    # The same image, annotated as empty, makes that detection a FP.
    empty = {"boxes": np.zeros((3, 4)), "classes": np.full(3, -1)}
    assert coco_map([*gt, empty], [*dt, extra])["map"] < expected["map"]


def test_evaluator_accumulates_batches():
    rng = np.random.default_rng(1)
    gt, dt = _random_data_set(rng, num_images=6, num_classes=3)
    evaluator = DetectionEvaluator(area_ranges=COCO_AREA_RANGES)
    evaluator.update({"detection": gt[:4], "segmentation": None}, dt[:4])
    evaluator.update(gt[4:], dt[4:])
    got = evaluator.result()
    expected = coco_map(gt, dt, area_ranges=COCO_AREA_RANGES)
    assert json.dumps(got) == json.dumps(expected)  # NaN == NaN as JSON
    evaluator.reset()
    assert np.isnan(evaluator.result()["map"])


@pytest.mark.parametrize(
    "gt, dt, kwargs, message",
    [
        (
            [{"boxes": [[0, 0, 1, 1]], "classes": [0]}],
            [],
            {},
            r"1 images of ground truth but 0",
        ),
        (
            [{"boxes": [[0, 0, 1, 1]], "classes": [0, 1]}],
            [{"boxes": [], "scores": [], "classes": []}],
            {},
            r"image 0: 1 boxes but 2 classes",
        ),
        (
            [{"boxes": [[0, 0, 1, 1]], "classes": [0]}],
            [{"boxes": [[0, 0, np.nan, 1]], "scores": [1.0], "classes": [0]}],
            {},
            r"detections of image 0 has NaN",
        ),
        (
            [{"boxes": [[0, 0, 1, 1]]}],
            [{}],
            {},
            r"ground_truth of image 0 must be a dict",
        ),
        ([], [], {"max_detections": 0}, r"`max_detections`"),
        ([], [], {"iou_thresholds": [0.5, 1.5]}, r"`iou_thresholds`"),
        ({"boxes": np.zeros((2, 4)), "classes": np.zeros(2)}, [], {}, r"\[B, M, 4\]"),
        ([], {"det_boxes": np.zeros((1, 1, 4))}, {}, r"needs `detection_boxes_xyxy`"),
    ],
)
def test_bad_input_raises(gt, dt, kwargs, message):
    with pytest.raises(ValueError, match=message):
        coco_map(gt, dt, **kwargs)


# -- agreement with pycocotools ---------------------------------------------------


def _random_data_set(rng, num_images=10, num_classes=4, size=200.0):
    """Ground truth over `num_classes - 1` classes (the last never occurs),
    images without boxes, detections near the true boxes (IoUs spread over
    0.3..1), far-off ones, exact duplicates, and ones of the absent class."""
    gt, dt = [], []
    for i in range(num_images):
        n = 0 if i % 4 == 3 else int(rng.integers(1, 6))
        xy = rng.uniform(0, size * 0.7, (n, 2))
        wh = rng.uniform(3, size * 0.5, (n, 2))  # areas from small to large
        boxes = np.concatenate([xy, xy + wh], 1)
        classes = rng.integers(0, num_classes - 1, n)
        gt.append({"boxes": boxes, "classes": classes})
        near = boxes + rng.normal(0, 0.15, (n, 4)) * np.tile(wh, 2)
        near[:, 2:] = np.maximum(near[:, 2:], near[:, :2] + 1)
        far_xy = rng.uniform(0, size * 0.8, (3, 2))
        far = np.concatenate([far_xy, far_xy + rng.uniform(2, 60, (3, 2))], 1)
        d_boxes = np.concatenate([near, near[:1], far])
        d_classes = np.concatenate(
            [
                np.where(
                    rng.random(n) < 0.85, classes, rng.integers(0, num_classes, n)
                ),
                classes[:1],
                rng.integers(0, num_classes, 3),
            ]
        )
        dt.append(
            {"boxes": d_boxes, "scores": rng.random(len(d_boxes)), "classes": d_classes}
        )
    return gt, dt


def _pycocotools(gt, dt, max_detections=100, num_classes=4):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def xywh(box):
        x1, y1, x2, y2 = (float(v) for v in box)
        return [x1, y1, x2 - x1, y2 - y1]

    annotations, results = [], []
    for i, image in enumerate(gt):
        for box, c in zip(image["boxes"], image["classes"]):
            b = xywh(box)  # COCO boxes are xywh, areas w * h (no +1)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": int(c) + 1,
                    "bbox": b,
                    "area": b[2] * b[3],
                    "iscrowd": 0,
                }
            )
    for i, image in enumerate(dt):
        for box, s, c in zip(image["boxes"], image["scores"], image["classes"]):
            results.append(
                {
                    "image_id": i + 1,
                    "category_id": int(c) + 1,
                    "bbox": xywh(box),
                    "score": float(s),
                }
            )
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {
            "images": [{"id": i + 1} for i in range(len(gt))],
            "categories": [{"id": c + 1} for c in range(num_classes)],
            "annotations": annotations,
        }
        coco.createIndex()
        evaluation = COCOeval(coco, coco.loadRes(results), "bbox")
        # COCOeval sorts maxDets; ours must stay the last.
        evaluation.params.maxDets = [1, min(10, max_detections), max_detections]
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    # COCOeval.summarize's means, read at our max_detections (its stats use
    # 100 detections for AP whatever maxDets says).
    precision = evaluation.eval["precision"][..., -1]  # [T, R, K, A]
    recall = evaluation.eval["recall"][..., 0, -1]  # [T, K]
    thresholds = evaluation.params.iouThrs

    def mean(values):
        return float(values[values > -1].mean()) if (values > -1).any() else np.nan

    result = {
        "map": mean(precision[..., 0]),
        "map_50": mean(precision[thresholds == 0.5][..., 0]),
        "map_75": mean(precision[thresholds == 0.75][..., 0]),
        "mar": mean(recall),
        "per_class": {
            k: float(precision[:, :, k, 0].mean())
            for k in range(num_classes)
            if (precision[:, :, k, 0] > -1).all()
        },
        "per_class_50": {
            k: float(precision[thresholds == 0.5][:, :, k, 0].mean())
            for k in range(num_classes)
            if (precision[:, :, k, 0] > -1).all()
        },
        "stats": evaluation.stats,
    }
    for a, name in enumerate(evaluation.params.areaRngLbl[1:], start=1):
        result[f"map_{name}"] = mean(precision[..., a])
    return result


# COCOeval.stats rows 0-5 and 8: AP, AP50, AP75, AP small/medium/large, AR@100.
_SUMMARY_KEYS = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large",
                 "mar")


@pytest.mark.parametrize(
    "seed, max_detections", [(0, 100), (1, 100), (2, 1), (3, 2), (4, 100)]
)
def test_agrees_with_pycocotools(seed, max_detections):
    rng = np.random.default_rng(seed)
    gt, dt = _random_data_set(rng)
    got = coco_map(gt, dt, max_detections=max_detections, area_ranges=COCO_AREA_RANGES)
    expected = _pycocotools(gt, dt, max_detections=max_detections)
    for key in _SUMMARY_KEYS:
        np.testing.assert_allclose(got[key], expected[key], atol=1e-3, err_msg=key)
    assert set(got["per_class"]) == set(expected["per_class"])
    assert 3 not in got["per_class"]  # the class with no ground truth
    for c, value in expected["per_class"].items():
        np.testing.assert_allclose(got["per_class"][c], value, atol=1e-3)
        np.testing.assert_allclose(
            got["per_class_50"][c], expected["per_class_50"][c], atol=1e-3
        )
    assert 0.02 < got["map"] < 0.95  # a data set that tests something
    if max_detections == 100:  # COCOeval's own summary, the numbers people quote
        np.testing.assert_allclose(
            [got[k] for k in _SUMMARY_KEYS],
            np.where(expected["stats"] == -1, np.nan, expected["stats"])[
                [0, 1, 2, 3, 4, 5, 8]
            ],
            atol=1e-3,
        )
