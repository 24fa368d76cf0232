"""SDMGrad and MoDo: worked examples by hand, the inner solver against the
exact minimiser over the simplex (closed form for two tasks, scipy SLSQP
for more), numpy transcriptions of the official SDMGrad loop and LibMTL's
MoDo step over several steps of state, absent tasks, a short fit of a tiny
two-task model with a missing label and the `.keras` round trip of the state,
and the `--weighting` spelling."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy.optimize import minimize
from test_balancer_training import X, Y, build

import kerasmtl as mtl
from harness import as_json, run_model_saving_test
from kerasmtl.weighting import MoDo, SDMGrad
from kerasmtl.weighting_spec import parse_weighting_spec, weighting_factory

ALL = tf.constant([True, True])


def agg(balancer, grads, losses=None):
    return np.asarray(balancer.aggregate(np.asarray(grads, "float32"), losses), "float64")


def jacobian(seed, tasks, dim):
    return np.random.default_rng(seed).normal(size=(tasks, dim)).astype("float32")


def simplex_projection(v):
    """Duchi et al.'s sort-based projection, in float64."""
    u = np.sort(v)[::-1]
    cumsum = np.cumsum(u)
    rho = np.nonzero(u * np.arange(1, len(v) + 1) > cumsum - 1)[0][-1]
    return np.maximum(v - (cumsum[rho] - 1) / (rho + 1), 0.0)


def run_steps(balancer, jacobians, actives=None):
    """Training steps as the train step makes them: weights, then the state
    update; returns each step's update `weights @ J`."""
    tasks = len(jacobians[0])
    if not balancer.built:
        balancer.build({f"t{i}": () for i in range(tasks)})
    updates = []
    for k, jac in enumerate(jacobians):
        active = np.ones(tasks, bool) if actives is None else actives[k]
        jac = jac * active[:, None]
        gram = tf.constant(jac @ jac.T)
        weights = balancer.weights_from_gram(gram, tf.ones(tasks), tf.constant(active), k)
        balancer.update_state(gram, tf.ones(tasks), tf.constant(active), weights,
                              tf.constant(True))
        updates.append(np.asarray(weights, "float64") @ jac)
    return np.array(updates)


# -- SDMGrad: the inner problem --------------------------------------------------


def sdmgrad_minimiser(jac, lamda):
    """argmin over the simplex of (1/2) ||J^T w + lamda g0||^2: closed form for
    two tasks, SLSQP in float64 otherwise."""
    jac = jac.astype("float64")
    g0 = jac.mean(axis=0)
    if len(jac) == 2:
        u, v = jac[0] - jac[1], jac[1] + lamda * g0
        w1 = np.clip(-(u @ v) / (u @ u), 0.0, 1.0)
        return np.array([w1, 1.0 - w1])
    result = minimize(
        lambda w: 0.5 * np.sum((jac.T @ w + lamda * g0) ** 2),
        np.full(len(jac), 1.0 / len(jac)),
        jac=lambda w: jac @ (jac.T @ w + lamda * g0),
        bounds=[(0.0, 1.0)] * len(jac),
        constraints={"type": "eq", "fun": lambda w: np.sum(w) - 1.0},
        method="SLSQP",
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    return result.x


def sdmgrad_update(jac, w, lamda):
    jac = jac.astype("float64")
    return len(jac) * (jac.T @ w + lamda * jac.mean(axis=0)) / (1.0 + lamda)


@pytest.mark.parametrize("tasks,dim", [(2, 5), (3, 5), (4, 7), (5, 3)])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("lamda", [0.0, 0.3, 2.0])
def test_sdmgrad_inner_solver_converges_to_the_exact_minimiser(seed, tasks, dim, lamda):
    # a step below 1 / L of the normalised problem (L <= its trace, about T)
    jac = jacobian(seed, tasks, dim)
    balancer = SDMGrad(lamda=lamda, learning_rate=0.1, momentum=0.0, iterations=3000)
    expected = sdmgrad_update(jac, sdmgrad_minimiser(jac, lamda), lamda)
    # the update (J^T w is unique even where w is not: 5 tasks in 3 dimensions,
    # where with lamda = 0 it is 0)
    atol = 2e-4 * tasks * np.abs(jac).max()
    np.testing.assert_allclose(agg(balancer, jac), expected, atol=atol)
    # with the official momentum too
    fast = SDMGrad(lamda=lamda, learning_rate=0.1, momentum=0.5, iterations=3000)
    np.testing.assert_allclose(agg(fast, jac), expected, atol=atol)


def test_sdmgrad_two_tasks_closed_form_by_hand():
    # g1 = (1, 0), g2 = (-1, 1), lamda = 1: g0 = (0, 0.5), u = (2, -1),
    # v = g2 + g0 = (-1, 1.5): w1 = 3.5 / 5 = 0.7, J^T w = (0.4, 0.3),
    # update = 2 ((0.4, 0.3) + (0, 0.5)) / 2 = (0.4, 0.8)
    balancer = SDMGrad(lamda=1.0, learning_rate=0.2, momentum=0.0, iterations=500)
    np.testing.assert_allclose(agg(balancer, [[1, 0], [-1, 1]]), [0.4, 0.8], atol=1e-5)
    np.testing.assert_allclose(sdmgrad_minimiser(np.array([[1, 0], [-1, 1.0]]), 1.0),
                               [0.7, 0.3])
    # lamda -> infinity: the sum of the gradients (the sum loss's gradient)
    huge = SDMGrad(lamda=1e6)
    np.testing.assert_allclose(agg(huge, [[1, 0], [-1, 1]]), [0.0, 1.0], atol=1e-5)


def official_sdmgrad(jacobians, lamda, lr, momentum, niter):
    """The official `SDMGrad.sdmgrad` loop in numpy (one batch: the three
    gradient samples equal), over training steps with the warm start."""
    tasks = len(jacobians[0])
    w, updates = np.full(tasks, 1.0 / tasks), []
    for jac in jacobians:
        jac = jac.astype("float64")
        gram = jac @ jac.T
        gram = gram / np.mean(np.sqrt(np.diag(gram))) ** 2  # (the 1e-4 dropped)
        pull = gram.mean(axis=1)
        velocity = np.zeros(tasks)
        for _ in range(niter):
            velocity = momentum * velocity + gram @ w + lamda * pull
            w = simplex_projection(w - lr * velocity)
        updates.append(sdmgrad_update(jac, w, lamda))
    return np.array(updates), w


@pytest.mark.parametrize("tasks,dim", [(2, 6), (3, 5)])
def test_sdmgrad_defaults_match_the_official_loop_over_steps(tasks, dim):
    rng = np.random.default_rng(tasks)
    base = rng.normal(size=dim)
    # aligned, then conflicting: the warm start has something to carry
    jacobians = [(base + 0.5 * rng.normal(size=(tasks, dim))).astype("float32")
                 for _ in range(2)]
    jacobians += [rng.normal(size=(tasks, dim)).astype("float32") for _ in range(3)]
    balancer = SDMGrad()
    got = run_steps(balancer, jacobians)
    expected, w = official_sdmgrad(jacobians, 0.3, 10.0, 0.5, 20)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(balancer.simplex_weights.numpy(), w, atol=1e-5)


def test_sdmgrad_official_step_need_not_find_the_minimiser():
    # The official step (10 on the normalised problem) is far beyond 1 / L:
    # an interior minimiser is an unstable fixed point, and w ends near corners.
    jac = jacobian(1, 3, 5)
    expected = sdmgrad_update(jac, sdmgrad_minimiser(jac, 0.3), 0.3)
    solved = SDMGrad(learning_rate=0.1, momentum=0.0, iterations=3000)
    np.testing.assert_allclose(agg(solved, jac), expected, atol=1e-4)
    assert np.abs(agg(SDMGrad(), jac) - expected).max() > 0.1
    _, w = official_sdmgrad([jac], 0.3, 10.0, 0.5, 2000)
    assert np.abs(w - sdmgrad_minimiser(jac, 0.3)).max() > 0.1
    # a corner minimiser is kept by any step (the docstring's example)
    corner = np.array([[1, 0], [1, 1]], "float32")
    np.testing.assert_allclose(sdmgrad_minimiser(corner, 0.3), [1.0, 0.0])
    np.testing.assert_allclose(agg(SDMGrad(), corner), sdmgrad_update(corner, [1, 0], 0.3),
                               rtol=1e-6)


# -- MoDo -------------------------------------------------------------------------


def libmtl_modo(jacobians, gamma, rho):
    """LibMTL's `MoDo.backward` in numpy with the three samples equal."""
    tasks = len(jacobians[0])
    lam, updates = np.full(tasks, 1.0 / tasks), []
    for jac in jacobians:
        jac = jac.astype("float64")
        lam = simplex_projection(lam - gamma * (jac @ (jac.T @ lam) + rho * lam))
        updates.append(jac.T @ lam)
    return np.array(updates), lam


@pytest.mark.parametrize("gamma,rho", [(1e-3, 0.1), (0.05, 0.1), (0.2, 0.0)])
@pytest.mark.parametrize("tasks,dim", [(2, 5), (4, 6)])
def test_modo_matches_libmtl_over_steps(gamma, rho, tasks, dim):
    rng = np.random.default_rng(dim)
    jacobians = [rng.normal(size=(tasks, dim)).astype("float32") for _ in range(6)]
    balancer = MoDo(gamma=gamma, rho=rho)
    got = run_steps(balancer, jacobians)
    expected, lam = libmtl_modo(jacobians, gamma, rho)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(balancer.simplex_weights.numpy(), lam, atol=1e-6)
    if gamma >= 0.05:
        assert np.abs(lam - 1.0 / tasks).max() > 1e-2  # the weights did move


def test_modo_by_hand_and_tends_to_the_min_norm_point():
    # lambda = (.5, .5): G G^T lambda = (.5, 4.5); step 0.1, rho 0: (.45, .05) -> (.7, .3)
    balancer = MoDo(gamma=0.1, rho=0.0)
    np.testing.assert_allclose(agg(balancer, [[1, 0], [0, 3]]), [0.7, 0.9], atol=1e-6)
    # gamma = 0: the mean
    np.testing.assert_allclose(agg(MoDo(gamma=0.0), [[1, 0], [0, 3]]), [0.5, 1.5], atol=1e-6)
    # many steps on one Jacobian, rho = 0: MGDA's min-norm point (0.9, 0.1)
    jac = np.array([[1, 0], [0, 3]], "float32")
    run_steps(balancer, [jac] * 200)
    np.testing.assert_allclose(balancer.simplex_weights.numpy(), [0.9, 0.1], atol=1e-4)
    mgda = agg(mtl.weighting.MGDA(), jac)
    np.testing.assert_allclose(agg(balancer, jac), mgda, atol=1e-4)


# -- both: state, absent tasks, contract -------------------------------------------


MAKERS = [
    lambda **kw: SDMGrad(**kw),
    lambda **kw: MoDo(gamma=0.05, **kw),
]


@pytest.mark.parametrize("make", MAKERS, ids=["sdmgrad", "modo"])
def test_contract(make):
    two = np.array([[1, 0.5], [-0.5, 2]], "float32")
    three = np.stack([two[0], np.zeros(2, "float32"), two[1]])
    # a zero gradient is an absent task: the same update as without it
    np.testing.assert_allclose(agg(make(), three), agg(make(), two), rtol=1e-5, atol=1e-6)
    balancer = make(rep_grad=True)
    g3 = jacobian(0, 3, 5)
    before = agg(balancer, g3)
    # aggregate is pure: the state moves only in training
    np.testing.assert_allclose(balancer.simplex_weights.numpy(), 1 / 3, rtol=1e-6)
    np.testing.assert_allclose(agg(balancer, g3), before, rtol=1e-6)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(balancer))
    assert type(clone) is type(balancer)
    assert as_json(clone.get_config()) == as_json(balancer.get_config())
    assert clone.rep_grad
    with pytest.raises(ValueError, match=r"task\(s\) \['task_1'\] contain NaN"):
        make().aggregate([[1.0, 0.0], [np.nan, 1.0]])
    with pytest.raises(ValueError, match="Every task gradient is zero"):
        make().aggregate(np.zeros((2, 3), "float32"))


def test_sdmgrad_weights_ignore_the_gradient_scale():
    g3 = jacobian(4, 3, 5)
    np.testing.assert_allclose(agg(SDMGrad(), 1024 * g3), 1024 * agg(SDMGrad(), g3), rtol=1e-4)
    np.testing.assert_allclose(agg(SDMGrad(), 1e-3 * g3), 1e-3 * agg(SDMGrad(), g3), rtol=1e-4)


@pytest.mark.parametrize("make", MAKERS, ids=["sdmgrad", "modo"])
def test_absent_task_keeps_its_weight_and_nothing_is_nan(make):
    balancer = make()
    jacobians = [jacobian(s, 3, 4) for s in range(4)]
    run_steps(balancer, jacobians[:2])
    kept = balancer.simplex_weights.numpy().copy()
    # task 1 absent: its entry stays, the others move within their share
    active = np.array([True, False, True])
    update = run_steps(balancer, jacobians[2:3], [active])
    state = balancer.simplex_weights.numpy()
    assert state[1] == pytest.approx(kept[1], abs=1e-7)
    assert state[0] + state[2] == pytest.approx(kept[0] + kept[2], abs=1e-6)
    assert np.all(np.isfinite(update))
    # the step's weights live on the present tasks' simplex
    gram = jacobians[3] * active[:, None]
    gram = tf.constant(gram @ gram.T)
    weights = balancer.weights_from_gram(gram, tf.ones(3), tf.constant(active), 3).numpy()
    assert weights[1] == 0.0 and np.all(np.isfinite(weights))
    # no task at all (every gradient zero): finite zero weights, and a skipped
    # step leaves the state alone
    none = tf.constant([False, False, False])
    weights = balancer.weights_from_gram(tf.zeros((3, 3)), tf.ones(3), none, 4)
    np.testing.assert_array_equal(weights.numpy(), 0.0)
    balancer.update_state(tf.zeros((3, 3)), tf.ones(3), none, weights, tf.constant(False))
    np.testing.assert_array_equal(balancer.simplex_weights.numpy(), state)


def test_errors():
    with pytest.raises(ValueError, match=r"`lamda`.*Received: lamda=-1"):
        SDMGrad(lamda=-1)
    with pytest.raises(ValueError, match=r"learning_rate=0"):
        SDMGrad(learning_rate=0)
    with pytest.raises(ValueError, match=r"momentum=1"):
        SDMGrad(momentum=1)
    with pytest.raises(ValueError, match=r"iterations=0"):
        SDMGrad(iterations=0)
    with pytest.raises(ValueError, match=r"`gamma`.*Received: gamma=-0.1"):
        MoDo(gamma=-0.1)
    with pytest.raises(ValueError, match=r"rho=-1"):
        MoDo(rho=-1)


# -- training and saving ----------------------------------------------------------


@pytest.mark.parametrize("make", MAKERS, ids=["sdmgrad", "modo"])
@pytest.mark.parametrize("rep_grad", [False, True])
def test_fit_with_a_missing_task_and_keras_round_trip_keeps_state(make, rep_grad, tmp_path):
    model = build(make(rep_grad=rep_grad))
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    y = dict(Y, b=Y["b"].copy())
    y["b"][:4] = np.nan  # the first batch of 4 has no label for b
    history = model.fit(X, y, epochs=3, batch_size=4, shuffle=False, verbose=0).history
    assert history["balancer/skipped_steps"] == [0.0, 0.0, 0.0]
    assert np.all(np.isfinite(history["loss"])) and history["loss"][-1] < history["loss"][0]
    assert all(np.isfinite(w).all() for w in model.get_weights())
    state = model.weighting.simplex_weights.numpy()
    assert np.abs(state - 0.5).max() > 1e-3 and state.sum() == pytest.approx(1.0, abs=1e-6)
    loaded = run_model_saving_test(model, X, tmp_path)
    assert type(loaded.weighting) is type(model.weighting)
    assert loaded.weighting.rep_grad is rep_grad
    np.testing.assert_array_equal(loaded.weighting.simplex_weights.numpy(), state)


# -- by name ----------------------------------------------------------------------


def test_exported_and_named():
    assert mtl.weighting.SDMGrad is SDMGrad and mtl.weighting.MoDo is MoDo
    assert parse_weighting_spec("sdmgrad") == ("SDMGrad", {})
    assert parse_weighting_spec("SDMGrad:lamda=0.6,iterations=40") == (
        "SDMGrad", {"lamda": 0.6, "iterations": 40})
    assert parse_weighting_spec("modo:gamma=0.1") == ("MoDo", {"gamma": 0.1})
    made = weighting_factory("modo:gamma=0.1,rho=0.0,rep_grad=true")()
    assert isinstance(made, MoDo) and (made.gamma, made.rho, made.rep_grad) == (0.1, 0.0, True)
    assert weighting_factory("sdmgrad") is SDMGrad
    with pytest.raises(ValueError, match="lamda"):
        weighting_factory("sdmgrad:lamda=-1")
