"""Multi-label losses: hand-computed values, numpy re-implementations, Keras'
own losses as references, masking of unknown labels, finite gradients."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasmtl.losses.multilabel import (
    AsymmetricLoss,
    SigmoidCrossentropy,
    SigmoidFocalLoss,
    asymmetric_loss,
    sigmoid_crossentropy,
    sigmoid_focal_loss,
)
from kerasmtl.tasks.multilabel import MultiLabel

RNG = np.random.default_rng(0)
Y = RNG.integers(0, 2, size=(6, 4)).astype("float32")
P = RNG.uniform(0.02, 0.98, size=(6, 4)).astype("float32")
Z = np.log(P) - np.log1p(-P)  # logits of P


def np_loss(y, p, pos_weight=1.0, smoothing=0.0, gamma_pos=0.0, gamma_neg=0.0,
            alpha=None, clip=0.0):
    """Straight transcription of the papers' formulas, in float64."""
    y = y * (1 - smoothing) + smoothing / 2
    p = np.asarray(p, "float64")
    p_m = np.maximum(p - clip, 0.0)
    a_pos, a_neg = (1.0, 1.0) if alpha is None else (alpha, 1 - alpha)
    return -(pos_weight * y * a_pos * (1 - p) ** gamma_pos * np.log(p)
             + (1 - y) * a_neg * p_m ** gamma_neg * np.log(1 - p_m))


def value(x):
    return np.asarray(x, "float64")


def test_crossentropy_by_hand():
    y, p = [[1.0, 0.0, 1.0]], [[0.9, 0.2, 0.5]]
    # -ln 0.9, -ln 0.8, -ln 0.5
    np.testing.assert_allclose(value(sigmoid_crossentropy(y, p)),
                               [[0.105361, 0.223144, 0.693147]], atol=1e-5)
    # pos_weight per label multiplies the positive terms only: 3 * 0.105361, 0.5 * 0.693147
    np.testing.assert_allclose(
        value(sigmoid_crossentropy(y, p, pos_weight=[3.0, 7.0, 0.5])),
        [[0.316082, 0.223144, 0.346574]], atol=1e-5,
    )
    # smoothing 0.2: y = 0.9 / 0.1; -(0.9 ln 0.9 + 0.1 ln 0.1) = 0.094825 + 0.230259
    np.testing.assert_allclose(
        value(sigmoid_crossentropy([[1.0]], [[0.9]], label_smoothing=0.2)),
        [[0.325083]], atol=1e-5,
    )


NUMPY_CASES = [
    (sigmoid_crossentropy, {}, {}),
    (sigmoid_crossentropy, {"label_smoothing": 0.1, "pos_weight": [1.0, 2.0, 0.5, 4.0]},
     {"smoothing": 0.1, "pos_weight": np.array([1.0, 2.0, 0.5, 4.0])}),
    (sigmoid_focal_loss, {}, {"gamma_pos": 2.0, "gamma_neg": 2.0, "alpha": 0.25}),
    (sigmoid_focal_loss, {"gamma": 1.5, "alpha": None, "pos_weight": 3.0},
     {"gamma_pos": 1.5, "gamma_neg": 1.5, "pos_weight": 3.0}),
    (asymmetric_loss, {}, {"gamma_neg": 4.0, "clip": 0.05}),
    (asymmetric_loss, {"gamma_pos": 1.0, "gamma_neg": 2.0, "clip": 0.2,
                       "label_smoothing": 0.1},
     {"gamma_pos": 1.0, "gamma_neg": 2.0, "clip": 0.2, "smoothing": 0.1}),
]


@pytest.mark.parametrize("from_logits", [False, True])
def test_against_numpy(from_logits):
    for fn, kwargs, reference in NUMPY_CASES:
        got = fn(Y, Z if from_logits else P, from_logits=from_logits, **kwargs)
        np.testing.assert_allclose(value(got), np_loss(Y, P, **reference), rtol=2e-4,
                                   atol=1e-6, err_msg=f"{fn.__name__} {kwargs}")


def test_keras_losses_as_references():
    per_element = lambda loss: value(  # noqa: E731
        loss(Y[..., None], P[..., None])
    )
    np.testing.assert_allclose(
        value(sigmoid_crossentropy(Y, P, label_smoothing=0.1)),
        per_element(keras.losses.BinaryCrossentropy(label_smoothing=0.1, reduction=None)),
        rtol=1e-4,
    )
    np.testing.assert_allclose(
        value(sigmoid_focal_loss(Y, P, gamma=2.0, alpha=0.25)),
        per_element(keras.losses.BinaryFocalCrossentropy(
            apply_class_balancing=True, alpha=0.25, gamma=2.0, reduction=None)),
        rtol=1e-4,
    )


def test_special_cases_equal_crossentropy():
    bce = value(sigmoid_crossentropy(Y, P))
    np.testing.assert_allclose(value(sigmoid_focal_loss(Y, P, gamma=0.0, alpha=None)), bce,
                               rtol=1e-6)
    np.testing.assert_allclose(
        value(asymmetric_loss(Y, P, gamma_pos=0.0, gamma_neg=0.0, clip=0.0)), bce, rtol=1e-6
    )


def test_asymmetric_clip_discards_easy_negatives():
    # p = 0.03 < clip 0.05: p_m = 0, the negative costs nothing; p = 0.5 with
    # gamma_neg 0: -ln(1 - 0.45)
    got = value(asymmetric_loss([[0.0, 0.0]], [[0.03, 0.5]], gamma_neg=0.0, clip=0.05))
    np.testing.assert_allclose(got, [[0.0, 0.597837]], atol=1e-6)


@pytest.mark.parametrize("from_logits", [False, True])
def test_gradients_finite_at_extremes(from_logits):
    extremes = np.array([[0.0, 1e-12, 1e-7, 0.5, 1 - 1e-7, 1.0]] * 2, "float32")
    y = np.array([[0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]], "float32")
    if from_logits:
        extremes = np.array([[-200.0, -30.0, -16.0, 0.0, 16.0, 200.0]] * 2, "float32")
    for fn, kwargs in [
        (sigmoid_crossentropy, {"label_smoothing": 0.1}),
        (sigmoid_focal_loss, {"gamma": 0.5}),  # (1 - p)^0.5 is steep at p = 1
        (asymmetric_loss, {"gamma_pos": 0.5, "gamma_neg": 0.5}),  # p_m = 0 at small p
        (asymmetric_loss, {"gamma_pos": 0.0, "gamma_neg": 0.0, "clip": 0.0}),
    ]:
        var = tf.Variable(extremes)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(fn(y, var, from_logits=from_logits, **kwargs))
        grad = tape.gradient(loss, var).numpy()
        assert np.isfinite(float(loss)) and np.all(np.isfinite(grad)), (fn, kwargs, grad)


def test_loss_objects_mask_unknown_and_round_trip():
    y = np.array([[1, -1, 0], [-1, -1, -1]], "float32")
    p = np.array([[0.8, 0.01, 0.4], [0.5, 0.5, 0.5]], "float32")
    # Row 0: mean of -ln 0.8 and -ln 0.6; row 1: no known label, 0; batch mean
    loss = SigmoidCrossentropy()
    np.testing.assert_allclose(float(loss(y, p)), (0.223144 + 0.510826) / 2 / 2, atol=1e-5)
    for obj in [SigmoidCrossentropy(pos_weight=[1.0, 2.0, 3.0], label_smoothing=0.1),
                SigmoidFocalLoss(gamma=1.0, alpha=None, from_logits=True),
                AsymmetricLoss(gamma_pos=1.0, clip=0.1, stop_focusing_gradient=True)]:
        clone = keras.losses.deserialize(keras.losses.serialize(obj))
        assert type(clone) is type(obj) and clone.get_config() == obj.get_config()
        np.testing.assert_allclose(float(clone(y, p)), float(obj(y, p)), rtol=1e-6)


def test_stop_focusing_gradient_changes_only_the_gradient():
    p = tf.Variable([[0.3, 0.7]])
    y = np.array([[1.0, 0.0]], "float32")
    grads, values = [], []
    for stop in (False, True):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(asymmetric_loss(y, p, gamma_pos=1.0, gamma_neg=2.0,
                                                 stop_focusing_gradient=stop))
        values.append(float(loss))
        grads.append(tape.gradient(loss, p).numpy())
    assert values[0] == pytest.approx(values[1])
    # Positive, weight detached: d/dp -(1-p) ln p = -(1-p)/p = -2.333333
    np.testing.assert_allclose(grads[1][0, 0], -0.7 / 0.3, rtol=1e-4)
    # Full derivative adds ln p: -(1-p)/p + ln p = -2.333333 - 1.203973
    np.testing.assert_allclose(grads[0][0, 0], -0.7 / 0.3 + np.log(0.3), rtol=1e-4)


def test_invalid_arguments():
    with pytest.raises(ValueError, match=r"`gamma`.*>= 0.*-1"):
        SigmoidFocalLoss(gamma=-1)
    with pytest.raises(ValueError, match=r"`clip`.*\[0.0, 1.0\).*1.0"):
        AsymmetricLoss(clip=1.0)
    with pytest.raises(ValueError, match=r"`pos_weight`.*> 0"):
        SigmoidCrossentropy(pos_weight=[1.0, 0.0])
    with pytest.raises(ValueError, match=r"`label_smoothing`"):
        sigmoid_crossentropy(Y, P, label_smoothing=1.0)


def test_task_masks_each_unknown_element():
    y = Y.copy()
    y[0, 1] = y[3, 0] = y[5, 3] = -1
    pos_weight = [2.0, 1.0, 1.0, 0.5]
    for loss, reference in [
        ("auto", {}),
        ("bce", {}),
        ("focal", {"gamma_pos": 2.0, "gamma_neg": 2.0, "alpha": 0.25}),
        ("asl", {"gamma_neg": 4.0, "clip": 0.05}),
        (AsymmetricLoss(gamma_pos=1.0, gamma_neg=2.0, clip=0.1),
         {"gamma_pos": 1.0, "gamma_neg": 2.0, "clip": 0.1}),
    ]:
        settings = {}
        if isinstance(loss, str):  # task-level smoothing and weights
            settings = {"label_smoothing": 0.1, "pos_weight": pos_weight}
            reference = {**reference, "smoothing": 0.1, "pos_weight": np.array(pos_weight)}
        task = MultiLabel("tags", 4, loss=loss, **settings)
        expected = np_loss(np.maximum(y, 0), P, **reference)[y >= 0].mean()
        mean, count = task.masked_loss(y, P)
        assert float(count) == y.size - 3
        np.testing.assert_allclose(float(mean), expected, rtol=1e-4, err_msg=str(loss))
    # A compile-time override by name uses the task's smoothing and weights too.
    task = MultiLabel("tags", 4, label_smoothing=0.1, pos_weight=pos_weight)
    expected = np_loss(np.maximum(y, 0), P, gamma_pos=2.0, gamma_neg=2.0, alpha=0.25,
                       smoothing=0.1, pos_weight=np.array(pos_weight))[y >= 0].mean()
    mean, _ = task.masked_loss(y, P, loss_fn=task.resolve_loss("focal"))
    np.testing.assert_allclose(float(mean), expected, rtol=1e-4)
