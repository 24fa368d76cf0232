"""Gradient balancers' pure `aggregate(grads, losses)`: hand-worked cases,
reference solvers (scipy) and the properties each method promises."""

import itertools

import keras
import numpy as np
import pytest
from scipy.optimize import minimize

from harness import as_json
from kerasmtl.weighting import (
    IMTL,
    MGDA,
    AlignedMTL,
    CAGrad,
    GradNorm,
    NashMTL,
    PCGrad,
)

ALL = [PCGrad, MGDA, CAGrad, IMTL, NashMTL, AlignedMTL, GradNorm]
RNG = np.random.default_rng(0)
G3 = RNG.normal(size=(3, 5)).astype("float32")


def agg(balancer, grads, losses=None):
    grads = np.asarray(grads, "float32")
    return np.asarray(balancer.aggregate(grads, losses))


def simplex_reference(objective, num_tasks):
    """scipy SLSQP over the simplex (what the official MGDA/CAGrad code use)."""
    result = minimize(
        objective,
        np.full(num_tasks, 1.0 / num_tasks),
        bounds=[(0, 1)] * num_tasks,
        constraints={"type": "eq", "fun": lambda w: w.sum() - 1},
        method="SLSQP",
        options={"ftol": 1e-12, "maxiter": 500},
    )
    return result.x


def test_pcgrad_two_conflicting_gradients_by_hand():
    # g1.g2 = -1: g1' = g1 + g2/2 = (.5, .5); g2' = g2 + g1 = (0, 1)
    np.testing.assert_allclose(agg(PCGrad(), [[1, 0], [-1, 1]]), [0.5, 1.5], atol=1e-6)
    # no conflict: the plain sum
    np.testing.assert_allclose(agg(PCGrad(), [[1, 0], [1, 1]]), [2.0, 1.0], atol=1e-6)


def pcgrad_reference(grads, orders):
    """Algorithm 1 of the paper in numpy: task i visits `orders[i]`."""
    total = np.zeros_like(grads[0])
    for i, order in enumerate(orders):
        g = grads[i].copy()
        for j in order:
            if g @ grads[j] < 0:
                g -= (g @ grads[j]) / (grads[j] @ grads[j]) * grads[j]
        total += g
    return total


def test_pcgrad_projected_gradients_do_not_conflict():
    grads = np.array([[1, 0, 0], [-1, 1, 0], [-1, -1, 1]], "float32")
    update = agg(PCGrad(seed=3), grads)
    # the update is the paper's for some random order of the other tasks
    orders = [
        [list(p) for p in itertools.permutations([j for j in range(3) if j != i])]
        for i in range(3)
    ]
    candidates = [pcgrad_reference(grads, o) for o in itertools.product(*orders)]
    assert min(np.abs(c - update).max() for c in candidates) < 1e-5, update
    # each g_i' is orthogonal or aligned to what it conflicted with; the sum of
    # a 3-task PCGrad keeps a non-negative inner product with every g_i here
    assert np.all(grads @ update >= -1e-6)


def test_mgda_two_task_closed_form():
    # w_1 = (g2 - g1).g2 / ||g1 - g2||^2 = 4 / 5
    np.testing.assert_allclose(agg(MGDA(), [[1, 0], [0, 2]]), [0.8, 0.4], atol=1e-5)
    # collinear, one shorter: the min-norm point is the shorter gradient
    np.testing.assert_allclose(agg(MGDA(), [[1, 0], [3, 0]]), [1.0, 0.0], atol=1e-5)
    # l2: weights from unit directions (1/2, 1/2), applied to raw gradients
    np.testing.assert_allclose(
        agg(MGDA(normalization="l2"), [[1, 0], [0, 2]]), [0.5, 1.0], atol=1e-5
    )


def test_mgda_three_tasks_against_scipy():
    gram = G3 @ G3.T
    w = simplex_reference(lambda w: w @ gram @ w, 3)
    np.testing.assert_allclose(agg(MGDA(), G3), w @ G3, atol=1e-3)


def test_cagrad_against_scipy_reference():
    c = 0.5
    g0 = G3.mean(0)
    gram = G3 @ G3.T
    b, phi = G3 @ g0, c**2 * g0 @ g0
    w = simplex_reference(lambda w: w @ b + np.sqrt(phi * (w @ gram @ w) + 1e-12), 3)
    gw = w @ G3
    expected = (g0 + np.sqrt(phi) / np.linalg.norm(gw) * gw) / (1 + c**2)
    np.testing.assert_allclose(agg(CAGrad(c=c), G3), expected, atol=2e-3)
    np.testing.assert_allclose(agg(CAGrad(c=0.0), G3), g0, atol=1e-6)


def test_imtl_equal_projections():
    # by hand: alpha = (2/3, 1/3), update (2/3, 2/3)
    np.testing.assert_allclose(agg(IMTL(), [[1, 0], [0, 2]]), [2 / 3, 2 / 3], atol=1e-5)
    update = agg(IMTL(), G3)
    units = G3 / np.linalg.norm(G3, axis=1, keepdims=True)
    projections = units @ update
    np.testing.assert_allclose(projections, projections[0], rtol=1e-3)


def test_nash_mtl_solves_the_bargaining_equation():
    # orthogonal: alpha_t = 1/sqrt(M_tt), M = diag(1, 4)/sqrt(17)
    expected = 17**0.25
    np.testing.assert_allclose(agg(NashMTL(), [[1, 0], [0, 2]]), [expected] * 2, rtol=1e-4)
    gram = G3 @ G3.T
    m = gram / np.linalg.norm(gram)
    alpha = np.linalg.lstsq(G3.T, agg(NashMTL(), G3), rcond=None)[0]
    np.testing.assert_allclose(m @ alpha, 1 / alpha, rtol=1e-3)
    assert np.all(alpha > 0)


def test_aligned_mtl_gives_orthogonal_equal_norm_components():
    np.testing.assert_allclose(agg(AlignedMTL(), [[1, 0], [0, 2]]), [1.0, 1.0], atol=1e-5)
    balancer = AlignedMTL()
    gram = G3 @ G3.T
    values, vectors = np.linalg.eigh(gram)
    b = np.sqrt(values.min()) * vectors @ np.diag(values**-0.5) @ vectors.T
    np.testing.assert_allclose(agg(balancer, G3), b.sum(1) @ G3, rtol=1e-3, atol=1e-4)
    aligned = b @ G3  # rows: the aligned task gradients
    np.testing.assert_allclose(aligned @ aligned.T, values.min() * np.eye(3), atol=1e-3)


def test_gradnorm_weights_by_hand():
    balancer = GradNorm(alpha=1.5, learning_rate=0.025)
    grads = np.array([[1, 0], [0, 2]], "float32")
    np.testing.assert_allclose(agg(balancer, grads, [1.0, 1.0]), [1.0, 2.0])
    gram = grads @ grads.T
    balancer.update_state(gram, np.float32([2.0, 3.0]), np.array([True, True]),
                          None, np.array(True))
    # G = (1, 2), mean 1.5, r = 1 (first step): dL/dw = (-1, +2) / mean norm 1.5
    w = np.array([1 + 0.025 / 1.5, 1 - 0.05 / 1.5])
    np.testing.assert_allclose(balancer.current_weights()["task_0"], 2 * w[0] / w.sum(), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(balancer.initial_losses), [2.0, 3.0])
    # a skipped step changes nothing
    before = balancer.current_weights()
    balancer.update_state(gram, np.float32([1.0, 1.0]), np.array([True, True]),
                          None, np.array(False))
    assert balancer.current_weights() == before


@pytest.mark.parametrize("make", ALL)
def test_every_balancer_contract(make):
    # a zero-gradient task is left out of the balance
    two = np.array([[1, 0.5], [-0.5, 2]], "float32")
    three = np.stack([two[0], np.zeros(2, "float32"), two[1]])
    np.testing.assert_allclose(agg(make(), three), agg(make(), two), rtol=2e-3, atol=1e-5)
    # what mixed-precision loss scaling relies on: aggregate(s G) = s aggregate(G)
    balancer = make(rep_grad=make not in (CAGrad, NashMTL))
    np.testing.assert_allclose(agg(balancer, 1024 * G3), 1024 * agg(balancer, G3), rtol=2e-3)
    # config round trip
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(balancer))
    assert type(clone) is make and as_json(clone.get_config()) == as_json(balancer.get_config())
    np.testing.assert_allclose(agg(clone, G3), agg(balancer, G3), rtol=1e-5)


def test_bad_input():
    with pytest.raises(ValueError, match=r"two or more tasks.*given 1 \(\['a'\]\)"):
        PCGrad().build({"a": ()})
    with pytest.raises(ValueError, match=r"two or more tasks.*shape \(1, 3\)"):
        PCGrad().aggregate(np.ones((1, 3)))
    with pytest.raises(ValueError, match=r"shape \[T, n\].*\(3,\)"):
        MGDA().aggregate(np.ones(3))
    for make in (CAGrad, NashMTL):
        with pytest.raises(ValueError, match=f"{make.__name__} cannot balance representation"):
            make(rep_grad=True)
    with pytest.raises(ValueError, match=r"task\(s\) \['task_1'\] contain NaN"):
        MGDA().aggregate([[1.0, 0.0], [np.nan, 1.0]])
    with pytest.raises(ValueError, match="Every task gradient is zero"):
        PCGrad().aggregate(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"2 task gradients but losses of shape \(3,\)"):
        IMTL().aggregate(np.ones((2, 3)), [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="Expected one of"):
        MGDA(normalization="l1")
    with pytest.raises(ValueError, match=r"c=-1"):
        CAGrad(c=-1)
