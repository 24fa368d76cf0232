"""ScaleInvariant, STCH, DB-MTL and GradDrop: worked examples by hand, the
reference definitions (LibMTL's DB-MTL update, TorchJD's GradDrop) in numpy,
their invariances, a short fit of a tiny two-task model and the `.keras`
round trip of their state."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasmtl as mtl
from harness import as_json, run_model_saving_test, run_weighting_test, tiny_model
from kerasmtl.weighting import DBMTL, STCH, GradDrop, ScaleInvariant

X = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
Y = {
    "a": np.array([0, 1, 2, 0, 1, 2, 0, 1]),
    "b": np.linspace(-1, 1, 8).astype("float32")[:, None],
}
ACTIVE = tf.constant([True, True])


def build(weighting):
    keras.utils.set_random_seed(0)
    tasks = [mtl.tasks.Classification("a", 3), mtl.tasks.Regression("b")]
    model = tiny_model(tasks, weighting, num_features=4, units=3)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    return model


def agg(balancer, grads, losses=None):
    return np.asarray(balancer.aggregate(np.asarray(grads, "float32"), losses), "float64")


def loss_gradients(layer, make_losses):
    """d total / d x for losses built from a variable x (and present flags)."""
    x = tf.Variable([0.5, -1.0])
    with tf.GradientTape() as tape:
        total = layer(make_losses(x), training=False)
    return total, tape.gradient(total, x).numpy()


# -- ScaleInvariant ---------------------------------------------------------------


def test_scale_invariant_by_hand():
    # log 1 + log 4; weights 1 / L
    run_weighting_test(ScaleInvariant(), {"a": 1.0, "b": 4.0}, np.log(4.0), {"a": 1.0, "b": 0.25})
    # b absent: its log(0) is left out, its weight is 0
    run_weighting_test(
        ScaleInvariant(), {"a": 2.0, "b": 0.0}, np.log(2.0), {"a": 0.5, "b": 0.0},
        present={"a": 1.0, "b": 0.0},
    )


@pytest.mark.parametrize("scale", [1e-3, 1.0, 250.0])
def test_scale_invariant_gradient_ignores_a_task_scale(scale):
    def losses(factor):
        return lambda x: {"a": (x[0] - 1.0) ** 2 + 0.1, "b": factor * (x[1] + 3.0) ** 2}

    total_1, grad_1 = loss_gradients(ScaleInvariant(), losses(1.0))
    total_s, grad_s = loss_gradients(ScaleInvariant(), losses(scale))
    np.testing.assert_allclose(grad_s, grad_1, rtol=1e-5)
    np.testing.assert_allclose(float(total_s) - float(total_1), np.log(scale), rtol=1e-5)


def test_scale_invariant_errors():
    with pytest.raises(ValueError, match=r"epsilon=0"):
        ScaleInvariant(epsilon=0)


# -- STCH -------------------------------------------------------------------------


def test_stch_warmup_nadir_and_smooth_max_by_hand():
    layer = STCH(mu=1.0, warmup_epochs=1)
    # epoch 0: sum of log-losses, nothing averaged yet
    total = layer({"a": 2.0, "b": 8.0}, training=True)
    np.testing.assert_allclose(float(total), np.log(16.0), rtol=1e-6)
    np.testing.assert_allclose(layer.loss_counts.numpy(), [0.0, 0.0])
    layer.on_epoch_end({})
    # epoch 1 (the last warm-up epoch): still log-losses, averaged into the nadir
    layer({"a": 2.0, "b": 1.0}, training=True)
    layer({"a": 4.0, "b": 3.0}, training=True)
    layer({"a": 9.0, "b": 9.0}, training=False)  # evaluation is not averaged
    np.testing.assert_allclose(layer.nadir().numpy(), [3.0, 2.0], rtol=1e-6)
    layer.on_epoch_end({})
    # epoch 2: f = log(L / nadir) = (log 1, log 2); 2 * log(e^0 + e^log 2) = 2 log 3
    run_weighting_test(
        layer, {"a": 3.0, "b": 4.0}, 2 * np.log(3.0),
        # dL/dL_t = T softmax(f)_t / L_t = 2 (1/3) / 3, 2 (2/3) / 4
        {"a": 2 / 9, "b": 1 / 3},
    )
    _, grad = loss_gradients(layer, lambda x: {"a": 3.0 + x[0] - 0.5, "b": 4.0 + x[1] + 1.0})
    np.testing.assert_allclose(grad, [2 / 9, 1 / 3], rtol=1e-5)
    # an absent task leaves the log-sum-exp: 2 * mu * f_a
    total = layer({"a": 6.0, "b": 0.0}, {"a": 1.0, "b": 0.0})
    np.testing.assert_allclose(float(total), 2 * np.log(2.0), rtol=1e-5)


def test_stch_tends_to_the_tchebycheff_max():
    layer = STCH(mu=0.01, warmup_epochs=0)
    layer({"a": 1.0, "b": 1.0, "c": 1.0}, training=True)  # nadir 1
    layer.on_epoch_end({})
    total = layer({"a": 1.0, "b": 2.0, "c": 0.5})
    np.testing.assert_allclose(float(total), 3 * np.log(2.0), rtol=1e-4)
    weights = layer.current_weights()
    assert weights["b"] == pytest.approx(3 / 2, rel=1e-3) and weights["a"] < 1e-6


def test_stch_scale_invariant_after_warmup():
    # the nadir absorbs a task's scale: same gradient for b as 1 * L_b or 100 * L_b
    grads = []
    for factor in (1.0, 100.0):
        layer = STCH(warmup_epochs=0)
        layer({"a": 1.5, "b": factor * 2.0}, training=True)
        layer.on_epoch_end({})
        _, grad = loss_gradients(
            layer,
            lambda x, c=factor: {"a": (x[0] - 1.0) ** 2 + 0.1, "b": c * (x[1] + 3.0) ** 2},
        )
        grads.append(grad)
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-4)


def test_stch_errors():
    with pytest.raises(ValueError, match=r"mu=0"):
        STCH(mu=0)
    with pytest.raises(ValueError, match=r"warmup_epochs=-1"):
        STCH(warmup_epochs=-1)
    with pytest.raises(ValueError, match=r"warmup_epochs=1.5"):
        STCH(warmup_epochs=1.5)


# -- DB-MTL -----------------------------------------------------------------------


def db_mtl_reference(jacobians, losses, beta, beta_sigma, eps=1e-8):
    """LibMTL's DB_MTL.backward in numpy: an average of the full log-loss
    gradients, each normalised and rescaled to the largest."""
    buffer, updates = np.zeros_like(jacobians[0], "float64"), []
    for step, (jac, loss) in enumerate(zip(jacobians, losses), start=1):
        grads = jac.astype("float64") / (np.asarray(loss, "float64")[:, None] + eps)
        buffer = grads + beta / step**beta_sigma * (buffer - grads)
        norms = np.linalg.norm(buffer, axis=1)
        alpha = norms.max() / (norms + eps)
        updates.append(alpha @ buffer)
    return np.array(updates)


def run_db_mtl(balancer, jacobians, losses):
    balancer.build({f"t{i}": () for i in range(len(jacobians[0]))})
    got = []
    active = tf.ones([len(jacobians[0])], tf.bool)
    for step, (jac, loss) in enumerate(zip(jacobians, losses)):
        gram = tf.constant(jac @ jac.T)
        loss = tf.constant(loss, tf.float32)
        weights = balancer.weights_from_gram(gram, loss, active, step)
        got.append(np.asarray(weights) @ jac)
        balancer.update_state(gram, loss, active, weights, tf.constant(True))
    return np.array(got)


def test_db_mtl_by_hand():
    # log-gradient norms 3 / 2 and 1 / 0.5: scale 2, each unit gradient times 2
    np.testing.assert_allclose(
        agg(DBMTL(beta=0.0), [[3.0, 0.0], [0.0, 1.0]], [2.0, 0.5]), [2.0, 2.0], rtol=1e-5
    )
    # the first step of the average (from 0): 0.1 of the norms
    np.testing.assert_allclose(
        agg(DBMTL(beta=0.9), [[3.0, 0.0], [0.0, 1.0]], [2.0, 0.5]), [0.2, 0.2], rtol=1e-5
    )


@pytest.mark.parametrize("tasks,dim", [(2, 5), (3, 4), (4, 7)])
def test_db_mtl_against_libmtl(tasks, dim):
    rng = np.random.default_rng(tasks)
    # beta = 0: LibMTL's update on any gradients
    jacobians = [rng.normal(size=(tasks, dim)).astype("float32") for _ in range(3)]
    losses = [rng.uniform(0.2, 3.0, size=tasks) for _ in range(3)]
    np.testing.assert_allclose(
        run_db_mtl(DBMTL(beta=0.0), jacobians, losses),
        db_mtl_reference(jacobians, losses, 0.0, 0.0), rtol=1e-4, atol=1e-5,
    )
    # directions fixed, sizes changing: the norm average is the vector average
    units = rng.normal(size=(tasks, dim))
    jacobians = [(rng.uniform(0.1, 3.0, size=(tasks, 1)) * units).astype("float32")
                 for _ in range(5)]
    losses = [rng.uniform(0.2, 3.0, size=tasks) for _ in range(5)]
    balancer = DBMTL(beta=0.9, beta_sigma=0.5)
    np.testing.assert_allclose(
        run_db_mtl(balancer, jacobians, losses),
        db_mtl_reference(jacobians, losses, 0.9, 0.5), rtol=1e-4, atol=1e-5,
    )
    assert float(balancer.updates.numpy()) == 5.0


def test_db_mtl_state_only_on_applied_steps_and_present_tasks():
    balancer = DBMTL(beta=0.5)
    run_db_mtl(balancer, [np.array([[2.0, 0.0], [0.0, 4.0]], "float32")], [[1.0, 1.0]])
    np.testing.assert_allclose(balancer.norm_averages.numpy(), [1.0, 2.0], rtol=1e-6)
    gram = tf.constant([[1.0, 0.0], [0.0, 0.0]])
    weights = balancer.weights_from_gram(gram, tf.ones(2), tf.constant([True, False]), 1)
    # b absent: its average is kept but does not set the scale (max over a)
    np.testing.assert_allclose(weights, [1.0, 0.0], rtol=1e-6)
    balancer.update_state(gram, tf.ones(2), tf.constant([True, False]), weights,
                          tf.constant(False))
    np.testing.assert_allclose(balancer.norm_averages.numpy(), [1.0, 2.0], rtol=1e-6)
    balancer.update_state(gram, tf.ones(2), tf.constant([True, False]), weights,
                          tf.constant(True))
    np.testing.assert_allclose(balancer.norm_averages.numpy(), [1.0, 2.0], rtol=1e-6)
    assert float(balancer.updates.numpy()) == 2.0


def test_db_mtl_invariant_to_a_task_loss_scale():
    # L_b -> c L_b scales g_b and L_b alike: the update does not move
    jac = np.array([[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]], "float32")
    scaled = jac * np.array([[1.0], [40.0]], "float32")
    np.testing.assert_allclose(
        agg(DBMTL(), scaled, [0.7, 40 * 1.3]), agg(DBMTL(), jac, [0.7, 1.3]), rtol=1e-5
    )


def test_db_mtl_errors():
    with pytest.raises(ValueError, match=r"beta=1"):
        DBMTL(beta=1)
    with pytest.raises(ValueError, match=r"beta_sigma=-0.5"):
        DBMTL(beta_sigma=-0.5)


# -- GradDrop ---------------------------------------------------------------------


def graddrop_reference(jac, uniform, leak):
    """TorchJD's GradDrop aggregator in numpy, given the uniform draws."""
    jac = jac.astype("float64")
    purity = 0.5 * (1 + jac.sum(0) / np.abs(jac).sum(0))
    update = np.zeros(jac.shape[1])
    for row in jac:
        mask = (purity > uniform) * (row > 0) + (purity < uniform) * (row < 0)
        update += (leak + (1 - leak) * mask) * row
    return update


def test_graddrop_keeps_agreeing_signs_whole():
    for seed in range(3):
        np.testing.assert_allclose(agg(GradDrop(seed=seed), [[1, 2], [3, 0.5]]), [4, 2.5])
        np.testing.assert_allclose(agg(GradDrop(seed=seed), [[-1, -2], [-3, 0]]), [-4, -2])


def test_graddrop_purity_and_expectation():
    # entry 0: (3, -1), P = (1 + 2/4) / 2 = 0.75, E = 0.75 * 3 + 0.25 * (-1) = 2
    # entry 1: (1, 1), P = 1, always 2;  entry 2: (-2, 2), P = 0.5, E = 0
    copies = 4000
    jac = np.tile(np.array([[3.0, 1.0, -2.0], [-1.0, 1.0, 2.0]], "float32"), (1, copies))
    update = agg(GradDrop(seed=1), jac).reshape(copies, 3)
    # by definition, each entry is the sum of one sign's gradients
    assert set(np.unique(update[:, 0])) == {3.0, -1.0}
    assert set(np.unique(update[:, 1])) == {2.0}
    assert set(np.unique(update[:, 2])) == {2.0, -2.0}
    np.testing.assert_allclose(np.mean(update[:, 0] == 3.0), 0.75, atol=0.03)
    np.testing.assert_allclose(update.mean(axis=0), [2.0, 2.0, 0.0], atol=0.12)


@pytest.mark.parametrize("leak", [0.0, 0.3])
@pytest.mark.parametrize("tasks,dim", [(2, 50), (3, 40), (5, 30)])
def test_graddrop_against_torchjd_definition(tasks, dim, leak):
    jac = np.random.default_rng(tasks).normal(size=(tasks, dim)).astype("float32")
    twin = GradDrop(seed=11)  # the same draws as the balancer's
    uniform = tf.random.stateless_uniform([dim], seed=twin.seed_generator.next()).numpy()
    update = agg(GradDrop(leak=leak, seed=11), jac)
    np.testing.assert_allclose(update, graddrop_reference(jac, uniform, leak), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(agg(GradDrop(leak=1.0), jac), jac.sum(0), rtol=1e-5, atol=1e-6)


def test_graddrop_seeded_draws_are_reproducible():
    jac = np.random.default_rng(0).normal(size=(3, 200)).astype("float32")
    first, second = GradDrop(seed=5), GradDrop(seed=5)
    runs = [[agg(b, jac) for _ in range(3)] for b in (first, second)]
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(runs[0][0], runs[0][1])  # the generator advances
    np.testing.assert_array_equal(first.seed_generator.state.numpy(),
                                  second.seed_generator.state.numpy())


def test_graddrop_contract():
    two = np.array([[1, -0.5, 2], [-0.5, 2, -1]], "float32")
    three = np.stack([two[0], np.zeros(3, "float32"), two[1]])
    np.testing.assert_allclose(agg(GradDrop(seed=2), three), agg(GradDrop(seed=2), two))
    # loss scale of mixed precision: exactly proportional
    np.testing.assert_allclose(agg(GradDrop(seed=2), 1024 * two), 1024 * agg(GradDrop(seed=2), two))
    balancer = GradDrop(leak=0.25, seed=4, rep_grad=True)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(balancer))
    assert type(clone) is GradDrop and as_json(clone.get_config()) == as_json(balancer.get_config())
    assert clone.rep_grad and clone.leak == 0.25
    with pytest.raises(ValueError, match=r"task\(s\) \['task_1'\] contain NaN"):
        GradDrop().aggregate([[1.0, 0.0], [np.nan, 1.0]])
    with pytest.raises(ValueError, match=r"leak=1.5"):
        GradDrop(leak=1.5)


# -- training and saving ------------------------------------------------------------


def assert_same_state(loaded, state):
    for var in loaded.weighting.non_trainable_variables:
        np.testing.assert_array_equal(var.numpy(), state[var.path], err_msg=var.path)


@pytest.mark.parametrize(
    "make,missing",
    [
        # With 4 labels of b, 1 / L_b steps of SGD(0.1) overshoot: all labels.
        (ScaleInvariant, False),
        (lambda: STCH(warmup_epochs=0), True),
        (DBMTL, True),
        (lambda: DBMTL(rep_grad=True), True),
        (lambda: GradDrop(seed=0), True),
        (lambda: GradDrop(seed=0, rep_grad=True), True),
    ],
    ids=["scale_invariant", "stch", "db_mtl", "db_mtl_rep", "graddrop", "graddrop_rep"],
)
def test_fit_lowers_the_loss_and_keras_round_trip_keeps_state(make, missing, tmp_path):
    model = build(make())
    y = dict(Y, b=Y["b"].copy())
    if missing:
        y["b"][:4] = np.nan  # the first batch has no label for b
    history = model.fit(X, y, epochs=6, batch_size=4, shuffle=False, verbose=0).history
    skipped = [k for k in history if k.endswith("skipped_steps")]
    assert skipped and all(v == 0.0 for v in history[skipped[0]])
    losses = history["loss"]
    # STCH's first epoch is its log-loss warm-up: compare from the second
    assert losses[-1] < losses[1] and np.all(np.isfinite(losses))
    assert all(np.isfinite(w).all() for w in model.get_weights())
    state = {v.path: v.numpy() for v in model.weighting.non_trainable_variables}
    loaded = run_model_saving_test(model, X, tmp_path)
    assert type(loaded.weighting) is type(model.weighting)
    assert_same_state(loaded, state)


def test_fitted_state_is_the_methods_own(tmp_path):
    model = build(STCH(warmup_epochs=1))
    model.fit(X, Y, epochs=3, batch_size=4, shuffle=False, verbose=0)
    assert float(model.weighting.epoch.numpy()) == 3.0
    np.testing.assert_allclose(model.weighting.loss_counts.numpy(), [2.0, 2.0])
    db = build(DBMTL())
    db.fit(X, Y, epochs=1, batch_size=4, shuffle=False, verbose=0)
    assert float(db.weighting.updates.numpy()) == 2.0
    assert np.all(db.weighting.norm_averages.numpy() > 0)
    drop = build(GradDrop(seed=3))
    drop.fit(X, Y, epochs=1, batch_size=4, shuffle=False, verbose=0)
    np.testing.assert_array_equal(drop.weighting.seed_generator.state.numpy(), [3, 2])
    loaded = run_model_saving_test(drop, X, tmp_path)
    np.testing.assert_array_equal(loaded.weighting.seed_generator.state.numpy(), [3, 2])


def test_exported_and_named():
    from kerasmtl.weighting_spec import parse_weighting_spec

    assert mtl.weighting.GradDrop is GradDrop and mtl.weighting.STCH is STCH
    assert parse_weighting_spec("db_mtl:beta=0.5") == ("DBMTL", {"beta": 0.5})
    assert parse_weighting_spec("grad_drop:leak=0.1")[0] == "GradDrop"
    assert parse_weighting_spec("scale_invariant")[0] == "ScaleInvariant"
    assert parse_weighting_spec("stch:mu=0.5,warmup_epochs=1") == (
        "STCH", {"mu": 0.5, "warmup_epochs": 1})
