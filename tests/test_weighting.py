"""Loss-weighting layers: outputs and weights against hand-computed values."""

import numpy as np
import pytest
import tensorflow as tf

import kerasmtl as mtl
from harness import (
    assert_finite_logs,
    run_model_saving_test,
    run_weighting_test,
    tiny_model,
)
from kerasmtl.data import synthetic_tabular
from kerasmtl.tasks import synthetic_tabular_tasks
from kerasmtl.weighting import (
    DynamicWeightAverage,
    Equal,
    GeometricLossStrategy,
    RandomLossWeighting,
    Static,
    Uncertainty,
)
from kerasmtl.weighting.dynamic_weight_average import dwa_weights

LOSSES = {"a": 2.0, "b": 8.0}


def test_equal():
    run_weighting_test(Equal(), {"a": 1.0, "b": 2.5}, 3.5, {"a": 1.0, "b": 1.0})


def test_static():
    run_weighting_test(Static({"a": 1.0, "b": 0.5}), {"a": 1.0, "b": 2.0}, 2.0, {"a": 1.0, "b": 0.5})


def test_static_names_must_match_tasks():
    with pytest.raises(ValueError, match=r"Static weights name tasks \['a', 'c'\].*\['a', 'b'\]"):
        Static({"a": 1.0, "c": 1.0})(LOSSES)
    with pytest.raises(ValueError, match="Expected a float >= 0"):
        Static({"a": -1.0})


def test_uncertainty_by_hand():
    w = Uncertainty()
    # s = 0: 0.5 * 2 + 0.5 * 8 = 5
    run_weighting_test(w, LOSSES, 5.0, {"a": 0.5, "b": 0.5})
    w.log_variances.assign([np.log(2.0), 0.0])
    # 0.5 * e^{-ln 2} * 2 + 0.5 ln 2 + 0.5 * 8 = 0.5 + 0.346574 + 4
    run_weighting_test(w, LOSSES, 4.846574, {"a": 0.25, "b": 0.5})
    # task b absent from the batch: its term (and its log-variance) is left out
    run_weighting_test(w, LOSSES, 0.846574, present={"a": 1.0, "b": 0.0})


def test_uncertainty_gradient_by_hand():
    w = Uncertainty()
    w.build({"a": (), "b": ()})
    with tf.GradientTape() as tape:
        total = w({"a": 2.0, "b": 0.5})
    grad = tape.gradient(total, w.log_variances).numpy()
    # d/ds (0.5 e^{-s} L + 0.5 s) at s = 0: 0.5 - 0.5 L
    np.testing.assert_allclose(grad, [-0.5, 0.25], atol=1e-6)


def test_dynamic_weight_average_by_hand():
    w = DynamicWeightAverage(temperature=2.0)
    run_weighting_test(w, {"a": 1.0, "b": 1.0}, 2.0, {"a": 1.0, "b": 1.0})
    w.on_epoch_end({"a": 1.0, "b": 2.0})
    run_weighting_test(w, {"a": 1.0, "b": 1.0}, 2.0, {"a": 1.0, "b": 1.0})
    w.on_epoch_end({"a": 0.5, "b": 2.0})
    # r = (0.5, 1.0); w_a = 2 e^{0.25} / (e^{0.25} + e^{0.5}) = 0.875646
    run_weighting_test(w, {"a": 1.0, "b": 1.0}, 2.0, {"a": 0.875646, "b": 1.124354})
    run_weighting_test(w, {"a": 2.0, "b": 1.0}, 2 * 0.875646 + 1.124354)


def test_dwa_weights_with_an_absent_task():
    # a task with no labels in an epoch (loss 0) keeps ratio 1
    np.testing.assert_allclose(dwa_weights([0.0, 1.0], [1.0, 1.0], 2.0), [1.0, 1.0])


def test_dwa_weights_ignore_a_non_finite_epoch_loss():
    # an epoch with a skipped inf step has an inf mean loss: ratio 1, not NaN
    np.testing.assert_allclose(dwa_weights([np.inf, 1.0], [1.0, 1.0], 2.0), [1.0, 1.0])
    np.testing.assert_allclose(dwa_weights([1.0, 1.0], [np.nan, 1.0], 2.0), [1.0, 1.0])


def test_random_loss_weighting():
    w = RandomLossWeighting(seed=3)
    run_weighting_test(w, LOSSES, 5.0, {"a": 0.5, "b": 0.5})  # before any draw
    totals = []
    for _ in range(3):
        totals.append(float(w(LOSSES, training=True)))
        weights = np.array(list(w.current_weights().values()))
        assert np.all(weights > 0) and np.isclose(weights.sum(), 1.0)
        np.testing.assert_allclose(totals[-1], weights @ [2.0, 8.0], rtol=1e-6)
    assert len(set(totals)) == 3  # new weights every step
    again = RandomLossWeighting(seed=3)
    np.testing.assert_allclose(
        [float(again(LOSSES, training=True)) for _ in range(3)], totals, rtol=1e-6
    )
    last = w.current_weights()
    run_weighting_test(w, LOSSES, 2.0 * last["a"] + 8.0 * last["b"])  # eval: no draw


def test_geometric_loss_strategy_by_hand():
    w = GeometricLossStrategy()
    # sqrt(2 * 8) = 4; weights L / (T L_t) = 4/4, 4/16
    run_weighting_test(w, LOSSES, 4.0, {"a": 1.0, "b": 0.25})
    run_weighting_test(w, LOSSES, 2.0, {"a": 1.0, "b": 0.0}, present={"a": 1.0, "b": 0.0})
    run_weighting_test(w, LOSSES, 0.0, present={"a": 0.0, "b": 0.0})


def test_geometric_gradient_is_finite_with_zero_loss():
    w = GeometricLossStrategy()
    w.build({"a": (), "b": ()})
    la, lb = tf.Variable(2.0), tf.Variable(0.0)
    with tf.GradientTape() as tape:
        total = w({"a": la, "b": lb}, {"a": 1.0, "b": 0.0})
    grads = tape.gradient(total, [la, lb])
    assert all(g is None or np.isfinite(g.numpy()) for g in grads)


@pytest.mark.parametrize(
    "make",
    [
        Equal,
        lambda: Static({"species": 1.0, "size": 0.5, "tags": 2.0}),
        Uncertainty,
        DynamicWeightAverage,
        lambda: RandomLossWeighting(seed=1),
        GeometricLossStrategy,
    ],
)
def test_every_weighting_trains_reports_and_saves(make, tmp_path):
    x, y = synthetic_tabular(128, seed=0)
    model = tiny_model(synthetic_tabular_tasks(), weighting=make())
    model.compile(optimizer="adam")
    history = model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    assert_finite_logs(history)
    for name in ("species", "size", "tags"):
        assert f"weight/{name}" in history.history and f"loss/{name}" in history.history
    loaded = run_model_saving_test(model, x[:16], tmp_path)
    assert loaded.weighting.get_config() == model.weighting.get_config()
    for a, b in zip(model.weighting.weights, loaded.weighting.weights):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b))


def test_dwa_in_fit_updates_weights_after_two_epochs():
    x, y = synthetic_tabular(128, seed=0)
    model = tiny_model(synthetic_tabular_tasks(), weighting=DynamicWeightAverage())
    model.compile(optimizer="adam")
    history = model.fit(x, y, epochs=4, batch_size=32, verbose=0)
    weights = {n: history.history[f"weight/{n}"] for n in model.task_names}
    assert all(np.allclose(v[:2], 1.0) for v in weights.values())
    expected = dwa_weights(
        [history.history[f"loss/{n}"][1] for n in model.task_names],
        [history.history[f"loss/{n}"][0] for n in model.task_names],
        2.0,
    )
    np.testing.assert_allclose([weights[n][2] for n in model.task_names], expected, rtol=1e-5)


def test_uncertainty_learns_in_fit():
    x, y = synthetic_tabular(256, seed=0)
    model = tiny_model(synthetic_tabular_tasks(), weighting=mtl.weighting.Uncertainty())
    model.compile(optimizer=__import__("keras").optimizers.Adam(0.05))
    model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    assert not np.allclose(model.weighting.log_variances.numpy(), 0.0)


@pytest.mark.parametrize("make", [
    lambda: mtl.weighting.CAGrad(iterations=2.5),
    lambda: mtl.weighting.NashMTL(iterations=2.5),
    lambda: mtl.weighting.FairGrad(iterations=0),
])
def test_iterations_must_be_a_whole_number_at_least_one(make):
    # 2.5 used to be truncated to 2 by CAGrad and NashMTL, silently.
    with pytest.raises(ValueError, match=r"`iterations`. Expected an int >= 1. Received"):
        make()


def test_nan_fails_every_bound():
    for make in (lambda: mtl.weighting.DynamicWeightAverage(temperature=float("nan")),
                 lambda: mtl.weighting.MoCo(beta=float("nan")),
                 lambda: mtl.weighting.FAMO(decay=float("nan"))):
        with pytest.raises(ValueError, match="Invalid value for argument"):
            make()
