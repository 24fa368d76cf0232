"""Segmentation task (head, masked loss, label checks, metrics, serving,
round trips) and the mean-IoU metrics of `kerasmtl.metrics.segmentation`."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasmtl as mtl
from harness import as_json, assert_finite_logs, run_model_saving_test
from kerasmtl.metrics.segmentation import (
    MaskedMeanIoU,
    confusion_matrix,
    iou_from_confusion,
    mean_iou,
)
from kerasmtl.tasks.segmentation import BilinearUpSampling2D, Segmentation

# -- metrics --------------------------------------------------------------------------


def test_mean_iou_by_hand():
    y_true = np.array([[0, 0, 1, 1], [2, 2, -1, 255]])
    y_pred = np.array([[0, 1, 1, 1], [2, 0, 3, 3]])
    # Known pixels (the -1 and the 255 skipped): true/pred pairs
    # (0,0) (0,1) (1,1) (1,1) (2,2) (2,0).
    cm = confusion_matrix(y_true, y_pred, num_classes=4, ignore_class=255)
    expected = np.zeros((4, 4))
    expected[0, 0] = expected[0, 1] = expected[2, 2] = expected[2, 0] = 1
    expected[1, 1] = 2
    np.testing.assert_array_equal(cm, expected)
    # IoU: class 0: 1 / (2 + 2 - 1) = 1/3; class 1: 2 / (2 + 3 - 2) = 2/3;
    # class 2: 1 / 2; class 3: predicted only on skipped pixels -> absent, left out.
    iou = iou_from_confusion(cm)
    np.testing.assert_allclose(iou[:3], [1 / 3, 2 / 3, 1 / 2])
    assert np.isnan(iou[3])
    np.testing.assert_allclose(mean_iou(y_true, y_pred, 4, ignore_class=255), 0.5)
    # Scores instead of a class map: the argmax is taken.
    scores = np.eye(4)[y_pred]
    np.testing.assert_allclose(mean_iou(y_true[..., None], scores, 4, 255), 0.5)
    assert mean_iou([[-1, -1]], [[0, 1]], 2) == 0.0  # nothing known


def test_mean_iou_agrees_with_keras_mean_iou():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 5, (3, 6, 7))
    y_true[0, :2] = 255
    y_pred = rng.integers(0, 5, (3, 6, 7))
    y_pred[y_pred == 4] = 3  # class 4 is never predicted: IoU 0, still counted
    reference = keras.metrics.MeanIoU(num_classes=5, ignore_class=255)
    reference.update_state(y_true, y_pred)
    np.testing.assert_allclose(
        mean_iou(y_true, y_pred, 5, 255), float(reference.result()), atol=1e-6
    )
    ours = MaskedMeanIoU(5, ignore_class=255)
    ours.update_state(y_true[:2], np.eye(5)[y_pred[:2]])  # two batches, scores
    ours.update_state(y_true[2:], y_pred[2:])
    np.testing.assert_allclose(
        float(ours.result()), float(reference.result()), atol=1e-6
    )


def test_masked_mean_iou_masks_unknown_pixels_and_weights_images():
    y_true = np.array([[[0, 1], [-1, 1]], [[1, 1], [0, 0]]])
    y_pred = np.array([[[0, 0], [1, 1]], [[1, 0], [0, 1]]])
    weights = np.array([1.0, 0.5])  # one weight per image
    metric = MaskedMeanIoU(2)
    metric.update_state(y_true, y_pred, sample_weight=weights)
    expected = mean_iou(y_true, y_pred, 2, sample_weight=weights[:, None, None])
    # By hand: cm = [[1 + .5, .5], [1 + .5, 1 + .5]]; IoU0 = 1.5 / 3.5,
    # IoU1 = 1.5 / 3.5.
    np.testing.assert_allclose(expected, 1.5 / 3.5)
    np.testing.assert_allclose(float(metric.result()), expected, atol=1e-6)
    clone = MaskedMeanIoU.from_config(metric.get_config())
    assert clone.get_config() == metric.get_config()
    metric.reset_state()
    assert float(metric.result()) == 0.0


@pytest.mark.parametrize(
    "y_true, y_pred, message",
    [
        ([[0, 5]], [[0, 1]], r"class ids must lie in \[0, 3\).*\[5\]"),
        ([[0, 1]], [[0, 1, 1]], r"`y_true` has shape \(1, 2\).*\(1, 3\)"),
        ([[0.0, np.nan]], [[0, 1]], r"NaN"),
    ],
)
def test_mean_iou_bad_input(y_true, y_pred, message):
    with pytest.raises(ValueError, match=message):
        mean_iou(y_true, y_pred, num_classes=3)


# -- task -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_classes": 1}, r"`num_classes` of task 'seg'.*>= 2"),
        (
            {"num_classes": 3, "ignore_class": -1},
            r"`ignore_class` of task 'seg'.*-1 is always",
        ),
        ({"num_classes": 3, "upsample": 0}, r"`upsample` of task 'seg'"),
        ({"num_classes": 3, "head_channels": 2.5}, r"`head_channels` of task 'seg'"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Segmentation("seg", **kwargs)


def test_masked_loss_by_hand():
    task = Segmentation("seg", num_classes=3, ignore_class=255)
    logits = np.zeros((2, 2, 2, 3), "float32")
    logits[0, 0, 0] = [0.0, 0.0, 1.0]
    labels = np.array([[[2, 255], [-1, 1]], [[-1, -1], [-1, -1]]])
    # Known pixels: (0,0,0) label 2 with logits (0, 0, 1): -log(e / (e + 2));
    # (0,1,1) label 1, uniform: log 3. Image 1 is all unknown.
    expected = (np.log(np.e + 2) - 1 + np.log(3)) / 2
    loss, count = task.masked_loss(labels, logits)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-6)
    assert float(count) == 2
    # [B, H, W, 1] labels; per-image sample weights.
    loss, count = task.masked_loss(labels[..., None], logits, sample_weight=[2.0, 1.0])
    np.testing.assert_allclose(float(loss), expected, rtol=1e-6)
    assert float(count) == 4
    # Every pixel unknown: loss 0, count 0, not NaN.
    loss, count = task.masked_loss(np.full((1, 2, 2), -1), logits[:1])
    assert float(loss) == 0.0 and float(count) == 0.0


def test_label_checks():
    task = Segmentation("seg", num_classes=3, ignore_class=255)
    task.check_label_shape((None, 8, 8))
    task.check_label_shape((None, 8, 8, 1))
    with pytest.raises(
        ValueError, match=r"'seg' \(segmentation\) have shape \(None, 8, 8, 3\)"
    ):
        task.check_label_shape((None, 8, 8, 3))
    with pytest.raises(ValueError, match=r"have shape \(None, 8\)"):
        task.check_label_shape((None, 8))
    task.check_label_values(np.array([[[0, 2], [255, -1]]]))
    with pytest.raises(
        ValueError, match=r"must lie in \[-1, 3\) or be 255; found \[-2, 7\]"
    ):
        task.check_label_values(np.array([[[7, -2], [0, 0]]]))
    with pytest.raises(ValueError, match="NaN at 1 pixel"):
        task.check_label_values(np.array([[[0.0, np.nan]]]))
    with pytest.raises(
        ValueError,
        match=r"spatial shape \(H, W\) = \(2, 2\).*\(4, 4\).*"
        "divisible by the stride of the model",
    ):
        task.masked_loss(np.zeros((1, 2, 2)), np.zeros((1, 4, 4, 3), "float32"))


def test_metrics_and_postprocess():
    task = Segmentation("seg", num_classes=2, ignore_class=255)
    labels = np.array([[[0, 1], [1, 255]], [[-1, 0], [0, 1]]])
    logits = np.zeros((2, 2, 2, 2), "float32")
    logits[..., 1] = [
        [[1, 1], [-1, 1]],
        [[1, -1], [1, 1]],
    ]  # predicts class 1 where > 0
    predicted = task.postprocess(logits)["seg"]
    assert predicted.dtype == tf.int32
    np.testing.assert_array_equal(predicted, [[[1, 1], [0, 1]], [[1, 0], [1, 1]]])
    metrics = task.default_metrics()
    assert [m.name for m in metrics] == ["mean_iou", "pixel_accuracy"]
    task.update_metrics(metrics, labels, logits)
    # Known pixels (true, pred): (0,1) (1,1) (1,0) | (0,0) (0,1) (1,1).
    # Correct 3 of 6; IoU0 = 1 / (3 + 2 - 1) = 1/4, IoU1 = 2 / (3 + 4 - 2) = 2/5.
    np.testing.assert_allclose(
        float(metrics[0].result()), (1 / 4 + 2 / 5) / 2, rtol=1e-6
    )
    np.testing.assert_allclose(float(metrics[1].result()), 0.5, rtol=1e-6)
    assert task.metric_from_identifier("miou").name == "mean_iou"


def _model(task, size=None):
    x = keras.Input((size, size, 3), name="image")
    features = keras.layers.Conv2D(8, 3, strides=4, padding="same", name="trunk")(x)
    return mtl.sharing.hard_sharing(x, features, [task])


def test_fit_round_trips_and_export(tmp_path):
    task = Segmentation(
        "seg",
        num_classes=3,
        ignore_class=255,
        upsample=4,
        head_channels=8,
        hidden_layers=[8],
    )
    clone = mtl.tasks.deserialize(mtl.tasks.serialize(task))
    assert as_json(clone.get_config()) == as_json(task.get_config())
    model = _model(task)
    assert tuple(model.output["seg"].shape) == (None, None, None, 3)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    masks = rng.integers(0, 3, (4, 32, 32))
    masks[0] = -1  # an image without a mask
    masks[1, :8] = 255
    model.compile(optimizer="adam")
    history = model.fit(
        images, {"seg": masks[..., None]}, batch_size=2, epochs=1, verbose=0
    )
    assert_finite_logs(history)
    assert {"seg/mean_iou", "seg/pixel_accuracy"} <= set(history.history)
    run_model_saving_test(model, images[:2], tmp_path, atol=1e-5)
    version = mtl.export.export_saved_model(model, tmp_path / "export")
    served = tf.saved_model.load(version).signatures["serving_default"]
    outputs = served(image=tf.constant(images[:2]))
    assert set(outputs) == {"seg", "seg_logits"}
    assert outputs["seg"].dtype == tf.int32 and outputs["seg"].shape == (2, 32, 32)
    np.testing.assert_array_equal(outputs["seg"], np.argmax(outputs["seg_logits"], -1))


def test_size_mismatch_in_a_graph_fails_with_the_advice():
    # Inside fit() shapes are relaxed to None: the check is a graph assertion.
    task = Segmentation("seg", num_classes=3)
    loss = tf.function(
        lambda y, logits: task.masked_loss(y, logits)[0],
        input_signature=[
            tf.TensorSpec((None, None, None), tf.int32),
            tf.TensorSpec((None, None, None, 3), tf.float32),
        ],
    )
    assert float(loss(tf.zeros((1, 4, 4), tf.int32), tf.zeros((1, 4, 4, 3)))) > 0
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=r"Task seg \(segmentation\).*\(H, W\) = x.*divisible by the stride",
    ):
        loss(tf.zeros((1, 2, 2), tf.int32), tf.zeros((1, 4, 4, 3)))


def test_upsampling_traces_without_autograph_on_unknown_sizes():
    # Keras' SavedModel export traces without AutoGraph.
    layer = BilinearUpSampling2D(4, dtype="float32")
    x = np.random.default_rng(0).normal(size=(1, 3, 5, 2)).astype("float32")
    traced = tf.function(
        layer, autograph=False, input_signature=[tf.TensorSpec((None, None, None, 2))]
    )
    expected = keras.layers.UpSampling2D(4, interpolation="bilinear")(x)
    np.testing.assert_allclose(traced(x), expected, atol=1e-6)
    assert traced(x).shape == (1, 12, 20, 2)
    clone = BilinearUpSampling2D.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


def test_pixel_accuracy_pools_pixels_over_images_of_different_sizes():
    # Keras's mean metrics weight a [batch, H, W] weight by 1 / (H * W): over
    # a small and a large batch the task's pixel accuracy must still count
    # every known pixel once (as `SegmentationEvaluator` does).
    task = mtl.tasks.Segmentation("seg", 3)
    metrics = task.default_metrics()
    rng = np.random.default_rng(0)
    correct = total = 0
    for size in (2, 6):
        y = rng.integers(0, 3, (2, size, size)).astype("int32")
        y[0, 0] = -1  # unknown pixels
        scores = rng.random((2, size, size, 3)).astype("float32")
        task.update_metrics(metrics, y, scores)
        known = y >= 0
        correct += int((scores.argmax(-1) == y)[known].sum())
        total += int(known.sum())
    accuracy = next(m for m in metrics if m.name == "pixel_accuracy")
    np.testing.assert_allclose(float(accuracy.result()), correct / total, rtol=1e-6)
