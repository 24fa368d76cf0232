"""Tasks: masked losses against hand-computed values, label checks, config."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasmtl as mtl
from kerasmtl.tasks import Classification, MultiLabel, Regression


def loss_and_count(task, y, y_pred, **kwargs):
    mean, count = task.compute_loss(
        np.asarray(y), np.asarray(y_pred, "float32"), **kwargs
    )
    return float(mean), float(count)


def test_classification_masked_loss_by_hand():
    task = Classification("species", num_classes=3)
    probs = [[0.7, 0.2, 0.1], [0.3, 0.3, 0.4], [0.2, 0.3, 0.5]]
    # Row 1 is missing: (-ln 0.7 - ln 0.5) / 2 = (0.356675 + 0.693147) / 2
    mean, count = loss_and_count(task, [0, -1, 2], probs)
    assert count == 2
    np.testing.assert_allclose(mean, 0.524911, atol=1e-5)
    # (batch, 1) labels are accepted and mean the same
    mean2, _ = loss_and_count(task, [[0], [-1], [2]], probs)
    np.testing.assert_allclose(mean2, mean, atol=1e-7)


def test_regression_masks_nan_per_element():
    task = Regression("size")
    # ((1 - 0.5)^2 + (3 - 2)^2) / 2 = 0.625; the NaN row is ignored
    mean, count = loss_and_count(task, [1.0, np.nan, 3.0], [[0.5], [9.0], [2.0]])
    assert count == 2
    np.testing.assert_allclose(mean, 0.625, atol=1e-6)


def test_multilabel_masks_partly_known_rows():
    task = MultiLabel("tags", num_labels=2)
    y = [[1, -1], [0, 1]]
    y_pred = [[0.8, 0.3], [0.4, 0.9]]
    # -ln 0.8 - ln 0.6 - ln 0.9 = 0.223144 + 0.510826 + 0.105361, over 3 elements
    mean, count = loss_and_count(task, y, y_pred)
    assert count == 3
    np.testing.assert_allclose(mean, 0.839331 / 3, atol=1e-5)


@pytest.mark.parametrize(
    "task, y, y_pred",
    [
        (Classification("c", 3), [-1, -1], [[0.2, 0.3, 0.5]] * 2),
        (Regression("r"), [np.nan, np.nan], [[1.0], [2.0]]),
        (MultiLabel("m", 2), [[-1, -1], [-1, -1]], [[0.5, 0.5]] * 2),
    ],
)
def test_all_missing_batch_gives_zero_loss_and_finite_gradient(task, y, y_pred):
    pred = tf.Variable(np.asarray(y_pred, "float32"))
    with tf.GradientTape() as tape:
        mean, count = task.compute_loss(np.asarray(y), pred)
    grad = tape.gradient(mean, pred)
    assert float(mean) == 0.0 and float(count) == 0.0
    assert grad is None or np.all(np.isfinite(grad.numpy()))


def test_masked_element_with_nonfinite_prediction_does_not_leak():
    task = Regression("r")
    mean, _ = loss_and_count(task, [1.0, np.nan], [[1.5], [np.inf]])
    np.testing.assert_allclose(mean, 0.25, atol=1e-6)


def test_sample_weight_and_loss_weight():
    task = Regression("r", loss_weight=2.0)
    # weights 1 and 3 on squared errors 1 and 4: (1 + 12) / 4, times loss_weight 2
    mean, count = loss_and_count(
        task, [0.0, 0.0], [[1.0], [2.0]], sample_weight=np.array([1.0, 3.0])
    )
    assert count == 4.0
    np.testing.assert_allclose(mean, 2 * 13 / 4, atol=1e-6)


def test_keras_loss_override_is_applied_per_element():
    task = Regression("r", loss="mae")
    # |1 - 0.5| and |3 - 2|, NaN row masked
    mean, _ = loss_and_count(task, [1.0, np.nan, 3.0], [[0.5], [9.0], [2.0]])
    np.testing.assert_allclose(mean, 0.75, atol=1e-6)
    ml = MultiLabel("m", 2, loss=keras.losses.BinaryCrossentropy())
    own = MultiLabel("m", 2)
    y, y_pred = [[1, -1], [0, 1]], [[0.8, 0.3], [0.4, 0.9]]
    np.testing.assert_allclose(
        loss_and_count(ml, y, y_pred)[0], loss_and_count(own, y, y_pred)[0], atol=1e-5
    )


@pytest.mark.parametrize(
    "task, shape, message",
    [
        (Classification("species", 3), (None, 3), r"'species'.*\(None, 3\).*expected \(None,\)"),
        (Regression("size", units=2), (None, 3), r"'size'.*\(None, 3\).*\(None, 2\)"),
        (MultiLabel("tags", 5), (None, 4), r"'tags'.*\(None, 4\).*\(None, 5\)"),
    ],
)
def test_label_shape_errors_name_task_and_shapes(task, shape, message):
    with pytest.raises(ValueError, match=message):
        task.check_label_shape(shape)


def test_label_value_errors():
    with pytest.raises(ValueError, match=r"'species'.*NaN.*-1"):
        Classification("species", 3).check_label_values(np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match=r"'species'.*\[-1, 3\).*\[3\]"):
        Classification("species", 3).check_label_values(np.array([0, 3]))
    with pytest.raises(ValueError, match=r"'tags'.*-1, 0 or 1.*\[2\]"):
        MultiLabel("tags", 2).check_label_values(np.array([[0, 2]]))
    with pytest.raises(ValueError, match=r"'size'.*inf"):
        Regression("size").check_label_values(np.array([1.0, np.inf]))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Classification("bad name", 3), "Invalid task name"),
        (lambda: Classification("c", 1), "num_classes"),
        (lambda: Regression("r", units=0), "units"),
        (lambda: MultiLabel("m", 3, threshold=1.0), "threshold"),
        (lambda: Regression("r", hidden_layers=["x"]), "hidden_layers"),
        (lambda: Regression("r", loss_weight=-1), "loss_weight"),
    ],
)
def test_invalid_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    "task",
    [
        Classification("c", 4, label_smoothing=0.1, hidden_layers=[8]),
        Regression("r", units=2, loss="huber", loss_weight=0.5),
        MultiLabel("m", 3, threshold=0.3, hidden_layers=[keras.layers.Dropout(0.2)]),
    ],
)
def test_config_round_trip(task):
    clone = mtl.tasks.deserialize(mtl.tasks.serialize(task))
    assert type(clone) is type(task)
    assert clone.get_config() == task.get_config()


def test_hidden_layers_are_fresh_per_head():
    task = Classification("c", 3, hidden_layers=[4, keras.layers.Dense(2)])
    x = keras.Input((5,))
    a, b = task.build_head(x), task.build_head(x)
    model_a, model_b = keras.Model(x, a), keras.Model(x, b)
    assert not {id(w) for w in model_a.weights} & {id(w) for w in model_b.weights}
    assert [layer.name for layer in model_a.layers[1:3]] == ["c_hidden_0", "c_hidden_1"]


def test_postprocess():
    probs = np.array([[0.1, 0.7, 0.2]], "float32")
    out = Classification("c", 3).postprocess(probs)
    assert out["c_prediction"].numpy().tolist() == [1]
    out = MultiLabel("m", 3, threshold=0.4).postprocess(np.array([[0.1, 0.4, 0.9]], "float32"))
    assert out["m_prediction"].numpy().tolist() == [[0, 1, 1]]
