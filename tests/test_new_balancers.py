"""UPGrad, DualProj, ConFIG and FAMO: against independent references (scipy's
NNLS and SLSQP on the primal projection, numpy's pseudo-inverse, a numpy
transcription of FAMO's update), the properties each promises, and the
balanced train step / fit / `.keras` round trip."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy.optimize import minimize, nnls
from test_balancer_training import X, Y, build

import kerasmtl as mtl
from harness import as_json, run_model_saving_test
from kerasmtl.weighting import FAMO, ConFIG, DualProj, GradVac, UPGrad

NEW = [UPGrad, DualProj, ConFIG, GradVac]
# (tasks, dimension): n < T makes the Gram matrix singular.
SHAPES = [(2, 5), (3, 5), (4, 7), (5, 3), (3, 2)]


def agg(balancer, grads, losses=None):
    return np.asarray(balancer.aggregate(np.asarray(grads, "float32"), losses), "float64")


def jacobian(seed, tasks, dim):
    return np.random.default_rng(seed).normal(size=(tasks, dim)).astype("float32")


def dual_cone_projection(jac, x):
    """proj of x onto {y : jac y >= 0} by Moreau: x + J^T a, a = NNLS(J^T, -x)."""
    jac = jac.astype("float64")
    a, _ = nnls(jac.T, -x.astype("float64"))
    return x + jac.T @ a


def primal_projection(jac, x):
    """The same projection as scipy SLSQP on the primal problem."""
    jac, x = jac.astype("float64"), x.astype("float64")
    result = minimize(
        lambda y: 0.5 * np.sum((y - x) ** 2),
        np.zeros_like(x),
        jac=lambda y: y - x,
        constraints={"type": "ineq", "fun": lambda y: jac @ y, "jac": lambda y: jac},
        method="SLSQP",
        options={"ftol": 1e-14, "maxiter": 1000},
    )
    return result.x


# -- UPGrad and DualProj ---------------------------------------------------------


@pytest.mark.parametrize("tasks,dim", SHAPES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_upgrad_against_nnls(seed, tasks, dim):
    jac = jacobian(seed, tasks, dim)
    expected = np.mean([dual_cone_projection(jac, g) for g in jac], axis=0)
    update = agg(UPGrad(), jac)
    np.testing.assert_allclose(update, expected, atol=2e-5 * np.abs(jac).max())
    # no task's loss goes up to first order
    assert np.all(jac @ update >= -1e-5 * np.linalg.norm(jac) ** 2)


@pytest.mark.parametrize("tasks,dim", SHAPES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dual_proj_against_nnls_and_slsqp(seed, tasks, dim):
    jac = jacobian(seed, tasks, dim)
    mean = jac.astype("float64").mean(axis=0)
    expected = dual_cone_projection(jac, mean)
    np.testing.assert_allclose(primal_projection(jac, mean), expected, atol=1e-5)
    update = agg(DualProj(), jac)
    np.testing.assert_allclose(update, expected, atol=2e-5 * np.abs(jac).max())
    assert np.all(jac @ update >= -1e-5 * np.linalg.norm(jac) ** 2)


def test_projections_by_hand():
    # g2 conflicts with g1: each loses its component along the other
    # (g1' = (.5, .5), g2' = (0, 1)); the mean (0, .5) conflicts with neither.
    np.testing.assert_allclose(agg(UPGrad(), [[1, 0], [-1, 1]]), [0.25, 0.75], atol=1e-6)
    np.testing.assert_allclose(agg(DualProj(), [[1, 0], [-1, 1]]), [0.0, 0.5], atol=1e-6)
    # no conflict at all: both are the mean
    for make in (UPGrad, DualProj):
        np.testing.assert_allclose(agg(make(), [[1, 0], [1, 2]]), [1.0, 1.0], atol=1e-6)


def test_upgrad_with_duplicated_gradient():
    # collinear rows (singular Gram matrix): still the exact projection
    jac = jacobian(3, 3, 4)
    jac = np.concatenate([jac, 2 * jac[:1]])
    expected = np.mean([dual_cone_projection(jac, g) for g in jac], axis=0)
    np.testing.assert_allclose(agg(UPGrad(), jac), expected, atol=1e-4)


# -- ConFIG ---------------------------------------------------------------------


def config_reference(jac):
    """The paper's formula in float64 numpy, with the pseudo-inverse of U."""
    jac = jac.astype("float64")
    units = jac / np.linalg.norm(jac, axis=1, keepdims=True)
    direction = np.linalg.pinv(units) @ np.ones(len(jac))
    direction /= np.linalg.norm(direction)
    return np.sum(jac @ direction) * direction


@pytest.mark.parametrize("tasks,dim", [(2, 5), (3, 5), (4, 7), (5, 9)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_config_against_numpy_and_equal_cosines(seed, tasks, dim):
    jac = jacobian(seed, tasks, dim)
    update = agg(ConFIG(), jac)
    np.testing.assert_allclose(update, config_reference(jac), rtol=1e-4, atol=1e-5)
    cosines = jac @ update / np.linalg.norm(jac, axis=1) / np.linalg.norm(update)
    assert cosines.min() > 0
    np.testing.assert_allclose(cosines, cosines.mean(), atol=1e-4)


def test_config_more_tasks_than_dimensions_matches_pinv():
    # U has rank 3 < T: pinv gives the least-squares direction
    jac = jacobian(4, 5, 3)
    np.testing.assert_allclose(agg(ConFIG(), jac), config_reference(jac), rtol=1e-3, atol=1e-4)


# -- what every balancer promises ---------------------------------------------


@pytest.mark.parametrize("make", NEW)
def test_contract(make):
    two = np.array([[1, 0.5], [-0.5, 2]], "float32")
    three = np.stack([two[0], np.zeros(2, "float32"), two[1]])
    np.testing.assert_allclose(agg(make(), three), agg(make(), two), rtol=1e-4, atol=1e-6)
    g3 = jacobian(0, 3, 5)
    balancer = make(rep_grad=True)
    np.testing.assert_allclose(agg(balancer, 1024 * g3), 1024 * agg(balancer, g3), rtol=1e-4)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(balancer))
    assert type(clone) is make and as_json(clone.get_config()) == as_json(balancer.get_config())
    assert clone.rep_grad
    with pytest.raises(ValueError, match=r"task\(s\) \['task_1'\] contain NaN"):
        make().aggregate([[1.0, 0.0], [np.nan, 1.0]])


def test_too_many_tasks_for_the_exact_solver():
    with pytest.raises(ValueError, match="13 tasks are too many"):
        UPGrad().aggregate(np.eye(13, dtype="float32"))


# -- in the balanced train step -----------------------------------------------


# The train step's update by hand: in test_balancer_training.py, with the others.


@pytest.mark.parametrize("make", NEW)
@pytest.mark.parametrize("rep_grad", [False, True])
def test_fit_trains_with_a_missing_task(make, rep_grad):
    model = build(make(rep_grad=rep_grad))
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    y = dict(Y, b=Y["b"].copy())
    y["b"][:4] = np.nan  # the first batch of 4 has no label for b
    history = model.fit(X, y, epochs=3, batch_size=4, shuffle=False, verbose=0).history
    assert history["balancer/skipped_steps"] == [0.0, 0.0, 0.0]
    assert history["loss"][-1] < history["loss"][0]
    assert all(np.isfinite(w).all() for w in model.get_weights())


# -- FAMO -----------------------------------------------------------------------


def famo_reference(loss_steps, lr, decay, optimizer, eps=1e-8):
    """Algorithm 1 of the paper (or the official code's Adam on the logits) in
    numpy; `loss_steps` holds the losses of each step, None for a skipped one
    (non-finite). Returns the weights of each step and the final logits."""
    num_tasks = len(loss_steps[0])
    xi, m, v, t = np.zeros(num_tasks), np.zeros(num_tasks), np.zeros(num_tasks), 0
    previous, all_weights = None, []
    for losses in loss_steps:
        if losses is None:
            continue
        losses = np.asarray(losses, "float64")
        if previous is not None:
            z = np.exp(xi) / np.exp(xi).sum()
            delta = np.log(previous + eps) - np.log(losses + eps)
            jacobian_z = np.diag(z) - np.outer(z, z)
            grad = jacobian_z.T @ delta + decay * xi
            if optimizer == "sgd":
                xi = xi - lr * grad
            else:
                t += 1
                m = 0.9 * m + 0.1 * grad
                v = 0.999 * v + 0.001 * grad**2
                m_hat, v_hat = m / (1 - 0.9**t), v / (1 - 0.999**t)
                xi = xi - lr * m_hat / (np.sqrt(v_hat) + 1e-8)
        z = np.exp(xi) / np.exp(xi).sum()
        weights = (z / (losses + eps)) / np.sum(z / (losses + eps))
        all_weights.append(weights)
        previous = losses
    return np.array(all_weights), xi


LOSS_STEPS = [
    [2.0, 1.0, 0.5],
    [1.5, 0.9, 0.5],
    None,  # an infinite loss: skipped, state kept
    [1.0, 0.85, 0.45],
    [0.6, 0.8, 0.44],
    [0.3, 0.79, 0.3],
]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_famo_update_rule_against_numpy(optimizer):
    # sgd with a large step, so that the logits move visibly
    lr = 0.5 if optimizer == "sgd" else 0.025
    layer = FAMO(learning_rate=lr, decay=0.01, optimizer=optimizer)
    names = ["a", "b", "c"]
    got = []
    for losses in LOSS_STEPS:
        values = [np.inf, 1.0, 1.0] if losses is None else losses
        total = layer(dict(zip(names, values)), training=True)
        if losses is not None:
            weights = np.array(list(layer.current_weights().values()))
            np.testing.assert_allclose(float(total), weights @ losses, rtol=1e-5)
            got.append(weights)
    expected, logits = famo_reference(LOSS_STEPS, lr, 0.01, optimizer)
    np.testing.assert_allclose(np.array(got), expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(layer.logits.numpy(), logits, rtol=1e-4, atol=1e-6)
    assert abs(logits[0] - logits[1]) > 1e-3  # the rule did something
    # task a fell fastest: its logit went down
    assert logits[0] < logits[1]
    # evaluation does not learn
    before = layer.logits.numpy().copy()
    layer(dict(zip(names, [0.1, 0.1, 0.1])), training=False)
    np.testing.assert_array_equal(layer.logits.numpy(), before)


def test_famo_absent_task_gets_no_weight_and_no_change():
    layer = FAMO(learning_rate=0.5, optimizer="sgd", decay=0.0)
    layer({"a": 1.0, "b": 1.0}, training=True)
    # b absent: weight 0, delta_b = 0, so only a's fall moves the logits
    layer({"a": 0.5, "b": 0.0}, {"a": 1.0, "b": 0.0}, training=True)
    assert layer.current_weights()["b"] == 0.0
    _, logits = famo_reference([[1.0, 1.0], [0.5, 1.0]], 0.5, 0.0, "sgd")
    np.testing.assert_allclose(layer.logits.numpy(), logits, rtol=1e-5)
    # b had no label last step: no change is learned from it now
    layer({"a": 0.5, "b": 3.0}, training=True)
    np.testing.assert_allclose(layer.logits.numpy(), logits, rtol=1e-5)


def test_famo_fit_keeps_state_through_keras_round_trip(tmp_path):
    model = build(FAMO())
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    history = model.fit(X, Y, epochs=3, batch_size=4, verbose=0).history
    assert history["weighting/skipped_steps"] == [0.0, 0.0, 0.0]
    np.testing.assert_allclose(history["weight/a"][-1] + history["weight/b"][-1], 1.0, rtol=1e-4)
    state = {v.path: v.numpy() for v in model.weighting.weights}
    assert float(model.weighting.updates.numpy()) == 5.0  # 6 steps, the first has no change
    assert np.abs(model.weighting.logits.numpy()).max() > 1e-3
    loaded = run_model_saving_test(model, X, tmp_path)
    assert isinstance(loaded.weighting, FAMO)
    for var in loaded.weighting.weights:
        np.testing.assert_array_equal(var.numpy(), state[var.path], err_msg=var.path)


def test_famo_errors():
    with pytest.raises(ValueError, match=r"`optimizer`.*Received: optimizer='rmsprop'"):
        FAMO(optimizer="rmsprop")
    with pytest.raises(ValueError, match=r"learning_rate=0"):
        FAMO(learning_rate=0)
    with pytest.raises(ValueError, match=r"decay=-1"):
        FAMO(decay=-1)
    with pytest.raises(ValueError, match="expects a dict of per-task losses"):
        FAMO()([1.0, 2.0])
    clone = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(FAMO(decay=0.01, optimizer="sgd"))
    )
    assert clone.decay == 0.01 and clone.optimizer == "sgd"


def test_exported_by_name():
    assert mtl.weighting.UPGrad is UPGrad and mtl.weighting.FAMO is FAMO


# -- GradVac --------------------------------------------------------------------


def gradvac_reference(jacobians, beta):
    """LibMTL's GradVac loop (one group) in numpy, two tasks (one order)."""
    targets, updates = np.zeros((2, 2)), []
    for jac in jacobians:
        jac = jac.astype("float64")
        total = np.zeros(jac.shape[1])
        for i, j in ((0, 1), (1, 0)):
            g = jac[i].copy()
            rho = g @ jac[j] / (np.linalg.norm(g) * np.linalg.norm(jac[j]))
            phi = targets[i, j]
            if rho < phi:
                size = np.linalg.norm(g) * (phi * np.sqrt(1 - rho**2) - rho * np.sqrt(1 - phi**2))
                g = g + size / (np.linalg.norm(jac[j]) * np.sqrt(1 - phi**2)) * jac[j]
            targets[i, j] = (1 - beta) * phi + beta * rho
            total += g
        updates.append(total)
    return np.array(updates), targets


def test_gradvac_against_numpy_over_steps():
    rng = np.random.default_rng(5)
    # positively aligned first (targets grow above 0), then mildly conflicting
    base = rng.normal(size=4)
    jacobians = [
        np.stack([base + 0.3 * rng.normal(size=4), base + 0.3 * rng.normal(size=4)]),
        np.stack([base, -0.2 * base + rng.normal(size=4)]),
        rng.normal(size=(2, 4)),
        np.stack([base, base + rng.normal(size=4)]),
    ]
    jacobians = [j.astype("float32") for j in jacobians]
    balancer = GradVac(beta=0.5)
    balancer.build({"a": (), "b": ()})
    got = []
    for step, jac in enumerate(jacobians):
        gram = tf.constant(jac @ jac.T)
        weights = balancer.weights_from_gram(gram, tf.ones(2), tf.constant([True, True]), step)
        got.append(np.asarray(weights) @ jac)
        balancer.update_state(gram, tf.ones(2), tf.constant([True, True]), weights,
                              tf.constant(True))
    expected, targets = gradvac_reference(jacobians, 0.5)
    np.testing.assert_allclose(np.array(got), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(balancer.targets.numpy(), targets, atol=1e-5)
    assert targets[0, 1] > 0.1  # the targets did move away from PCGrad's 0
    # a skipped step leaves the targets alone
    balancer.weights_from_gram(tf.constant(jacobians[0] @ jacobians[0].T), tf.ones(2),
                               tf.constant([True, True]), 9)
    balancer.update_state(None, None, None, tf.ones(2), tf.constant(False))
    np.testing.assert_allclose(balancer.targets.numpy(), targets, atol=1e-5)


def test_gradvac_starts_as_pcgrad_and_aggregate_is_pure():
    jac = jacobian(1, 4, 6)
    balancer = GradVac(seed=3)
    np.testing.assert_allclose(agg(balancer, jac), agg(mtl.weighting.PCGrad(seed=3), jac),
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(balancer.targets.numpy(), 0.0)
    with pytest.raises(ValueError, match=r"beta=2"):
        GradVac(beta=2)


@pytest.mark.parametrize("rep_grad", [False, True])
def test_gradvac_fit_learns_targets_and_saves_them(rep_grad, tmp_path):
    model = build(GradVac(rep_grad=rep_grad))
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    history = model.fit(X, Y, epochs=2, batch_size=4, verbose=0).history
    assert history["balancer/skipped_steps"] == [0.0, 0.0]
    targets = model.weighting.targets.numpy()
    assert np.abs(targets).max() > 1e-3 and np.all(np.diag(targets) == 0)
    loaded = run_model_saving_test(model, X, tmp_path)
    np.testing.assert_array_equal(loaded.weighting.targets.numpy(), targets)
