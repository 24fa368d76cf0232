"""MultiTaskModel.train_step with gradient balancers: the update against one
computed by hand from per-task gradients, shared vs task-specific variables,
rep_grad, skipped steps, errors; MirroredStrategy and mixed precision in a
subprocess (logical devices and policies must be set before TF starts)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasmtl as mtl
from harness import run_mirrored_script, run_model_saving_test

X = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
Y = {
    "a": np.array([0, 1, 2, 0, 1, 2, 0, 1]),
    "b": np.linspace(-1, 1, 8).astype("float32")[:, None],
}


def build(weighting, units=3):
    keras.utils.set_random_seed(0)
    tasks = [mtl.tasks.Classification("a", 3), mtl.tasks.Regression("b")]
    inputs = keras.Input((4,))
    shared = keras.layers.Dense(units, activation="tanh", name="trunk")(inputs)
    model = mtl.sharing.hard_sharing(inputs, shared, tasks, weighting=weighting)
    model.compile(optimizer=keras.optimizers.SGD(1.0))
    return model


def manual_step(model, balancer):
    """The expected new weights: per-task gradients by tape, `aggregate` on the
    trunk's (or on the representation's), task gradients on the heads."""
    trunk = model.get_layer("trunk")
    features = keras.Model(model.input, (model.output, trunk.output))
    with tf.GradientTape(persistent=True) as tape:
        outputs, z = features(X, training=True)
        losses = [
            model.get_task(n).masked_loss(Y[n], outputs[n])[0] for n in model.task_names
        ]
    trunk_vars = trunk.trainable_variables
    expected = {}
    for var in model.trainable_variables:
        if any(var is v for v in trunk_vars):
            continue
        grads = [tape.gradient(loss, var) for loss in losses]
        expected[var.path] = var.numpy() - sum(g for g in grads if g is not None).numpy()
    if balancer.rep_grad:
        rows = np.stack([tape.gradient(loss, z).numpy().ravel() for loss in losses])
        balanced = balancer.aggregate(rows, [float(v) for v in losses])
        trunk_grads = tape.gradient(
            z, trunk_vars, output_gradients=tf.reshape(balanced, z.shape)
        )
    else:
        per_task = [tape.gradient(loss, trunk_vars) for loss in losses]
        rows = np.stack([np.concatenate([g.numpy().ravel() for g in p]) for p in per_task])
        update = balancer.aggregate(rows, [float(v) for v in losses]).numpy()
        sizes = np.cumsum([int(np.prod(v.shape)) for v in trunk_vars])[:-1]
        trunk_grads = [
            u.reshape(v.shape) for u, v in zip(np.split(update, sizes), trunk_vars)
        ]
    for var, grad in zip(trunk_vars, trunk_grads):
        expected[var.path] = var.numpy() - np.asarray(grad)
    return expected


@pytest.mark.parametrize(
    "make",
    [
        lambda: mtl.weighting.PCGrad(),
        lambda: mtl.weighting.MGDA(rep_grad=True),
        lambda: mtl.weighting.NashMTL(),
        lambda: mtl.weighting.UPGrad(),
        lambda: mtl.weighting.DualProj(rep_grad=True),
        lambda: mtl.weighting.ConFIG(),
    ],
    ids=["pcgrad", "mgda_rep", "nash", "upgrad", "dualproj_rep", "config"],
)
def test_step_equals_update_by_hand(make):
    model = build(make())
    expected = manual_step(model, make())
    logs = model.train_on_batch(X, Y, return_dict=True)
    for var in model.trainable_variables:
        np.testing.assert_allclose(var.numpy(), expected[var.path], atol=1e-5, err_msg=var.path)
    assert logs["balancer/skipped_steps"] == 0.0
    assert int(model.optimizer.iterations) == 1


def test_weights_logged_trains_and_saves(tmp_path):
    model = build(mtl.weighting.GradNorm(rep_grad=True))
    history = model.fit(X, Y, epochs=2, batch_size=4, verbose=0).history
    assert {"weight/a", "weight/b", "loss/a", "balancer/skipped_steps"} <= set(history)
    np.testing.assert_allclose(history["weight/a"][-1] + history["weight/b"][-1], 2.0, rtol=1e-4)
    assert history["weight/a"][-1] != 1.0  # GradNorm learned its weights
    loaded = run_model_saving_test(model, X, tmp_path)
    assert loaded.weighting.rep_grad and loaded.shared_features == {"layer": "trunk", "index": 0}
    np.testing.assert_allclose(loaded.weighting.task_weights, model.weighting.task_weights)


def test_rep_grad_over_several_trunk_outputs(tmp_path):
    # Two trunk outputs (as an FPN level and a stride-2 skip): task b reads
    # both through a layer of its own. Each task's row is its gradients
    # w.r.t. both outputs, concatenated; the trunk gets the balanced one.
    keras.utils.set_random_seed(0)
    tasks = [mtl.tasks.Classification("a", 3), mtl.tasks.Regression("b")]
    inputs = keras.Input((4,))
    z1 = keras.layers.Dense(3, activation="tanh", name="trunk")(inputs)
    z2 = keras.layers.Dense(2, activation="tanh", name="skip")(z1)
    own = keras.layers.Dense(2, activation="tanh", name="b_own")(
        keras.layers.Concatenate()([z1, z2]))
    model = mtl.sharing.hard_sharing(inputs, {"a": z1, "b": own}, tasks,
                                     weighting=mtl.weighting.MGDA(rep_grad=True),
                                     shared_features=[z1, z2])
    model.compile(optimizer=keras.optimizers.SGD(1.0))
    assert model.shared_features == [{"layer": "trunk", "index": 0},
                                     {"layer": "skip", "index": 0}]

    view = keras.Model(model.input, (model.output, [z1, z2]))
    with tf.GradientTape(persistent=True) as tape:
        outputs, zs = view(X, training=True)
        losses = [model.get_task(n).masked_loss(Y[n], outputs[n])[0] for n in "ab"]
    trunk_vars = [*model.get_layer("trunk").trainable_variables,
                  *model.get_layer("skip").trainable_variables]
    expected = {}
    for var in model.trainable_variables:
        if not any(var is v for v in trunk_vars):
            grads = [g for g in (tape.gradient(loss, var) for loss in losses) if g is not None]
            expected[var.path] = var.numpy() - sum(grads).numpy()
    rows = []
    for loss in losses:
        grads = tape.gradient(loss, zs)
        rows.append(np.concatenate([
            (np.zeros(z.shape) if g is None else g.numpy()).ravel() for g, z in zip(grads, zs)
        ]))
    assert not np.any(rows[0][X.shape[0] * 3:])  # a does not read the skip
    balanced = mtl.weighting.MGDA().aggregate(np.stack(rows), [float(v) for v in losses])
    parts = np.split(np.asarray(balanced), [X.shape[0] * 3])
    trunk_grads = tape.gradient(zs, trunk_vars, output_gradients=[
        tf.reshape(p, z.shape) for p, z in zip(parts, zs)])
    for var, grad in zip(trunk_vars, trunk_grads):
        expected[var.path] = var.numpy() - grad.numpy()

    model.train_on_batch(X, Y)
    for var in model.trainable_variables:
        np.testing.assert_allclose(var.numpy(), expected[var.path], atol=1e-5, err_msg=var.path)
    loaded = run_model_saving_test(model, X, tmp_path)
    assert loaded.shared_features == model.shared_features
    loaded.compile(optimizer=keras.optimizers.SGD(0.1))
    assert np.all(np.isfinite(loaded.train_on_batch(X, Y)))


def test_nan_step_is_skipped_and_counted():
    model = build(mtl.weighting.PCGrad())
    before = [v.numpy() for v in model.trainable_variables]
    # an infinite loss (an inf label is refused by the label checks instead)
    logs = model.train_on_batch(np.full_like(X, np.inf), Y, return_dict=True)
    assert logs["balancer/skipped_steps"] == 1.0
    assert int(model.optimizer.iterations) == 0
    for a, b in zip(before, model.trainable_variables):
        np.testing.assert_array_equal(a, b.numpy())
    logs = model.train_on_batch(X, Y, return_dict=True)  # and training goes on
    assert int(model.optimizer.iterations) == 1 and np.isfinite(logs["loss"])


def test_nan_step_under_loss_scaling_is_skipped():
    # mixed_float16: LossScaleOptimizer skips the step and halves its scale
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build(mtl.weighting.PCGrad(rep_grad=True))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    before = [v.numpy() for v in model.trainable_variables]
    # no known label (finite zero gradients: the step is skipped all the same),
    # then an infinite loss from an inf input
    unlabelled = {"a": np.full(8, -1), "b": np.full((8, 1), np.nan, "float32")}
    for i, (x, y) in enumerate([(X, unlabelled), (np.full_like(X, np.inf), Y)], start=1):
        logs = model.train_on_batch(x, y, return_dict=True)
        assert logs["balancer/skipped_steps"] == 1.0
        assert int(model.optimizer.iterations) == 0
        scale = float(model.optimizer.dynamic_scale)
        assert scale == model.optimizer.initial_scale / 2**i
    for a, b in zip(before, model.trainable_variables):
        np.testing.assert_array_equal(a, b.numpy())
    model.train_on_batch(X, Y)
    assert int(model.optimizer.iterations) == 1
    assert all(np.isfinite(v.numpy()).all() for v in model.trainable_variables)


def test_rep_grad_trunk_overflow_under_loss_scaling_is_counted():
    # Large inputs and a tiny trunk: the representation, the heads' gradients
    # and the balanced gradient of z stay in float16's range, the trunk's
    # (x^T times that gradient, at a loss scale of 2**15) does not. The
    # LossScaleOptimizer skips the step, and the metric counts it.
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build(mtl.weighting.PCGrad(rep_grad=True))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    model.train_on_batch(X, Y)
    trunk = model.get_layer("trunk")
    trunk.set_weights([np.full((4, 3), 1e-6, "float32"), np.zeros(3, "float32")])
    model.optimizer.dynamic_scale.assign(2.0**15)
    logs = model.train_on_batch(X * 3e3, Y, return_dict=True)
    assert int(model.optimizer.iterations) == 1  # the LossScaleOptimizer skipped
    assert float(model.optimizer.dynamic_scale) == 2.0**14
    assert logs["balancer/skipped_steps"] == 1.0


def test_task_without_labels_is_left_out():
    model = build(mtl.weighting.MGDA())
    missing = dict(Y, b=np.full((8, 1), np.nan, "float32"))
    logs = model.train_on_batch(X, missing, return_dict=True)
    assert logs["balancer/skipped_steps"] == 0.0
    assert logs["weight/a"] == 1.0 and logs["weight/b"] == 0.0


def test_errors():
    inputs = keras.Input((4,))
    tasks = [mtl.tasks.Regression("a"), mtl.tasks.Regression("b")]
    outputs = {t.name: t.build_head(keras.layers.Dense(2)(inputs)) for t in tasks}
    with pytest.raises(ValueError, match=r"rep_grad=True\).*does not know it.*shared_features"):
        mtl.MultiTaskModel(inputs, outputs, tasks=tasks, weighting=mtl.weighting.PCGrad(rep_grad=True))
    with pytest.raises(ValueError, match="two or more tasks; it was given 1"):
        mtl.sharing.hard_sharing(inputs, inputs, tasks[:1], weighting=mtl.weighting.IMTL())
    # towers with nothing shared: nothing to balance
    model = mtl.MultiTaskModel(inputs, outputs, tasks=tasks, weighting=mtl.weighting.PCGrad())
    model.compile(optimizer="sgd")
    y = {"a": np.zeros((8, 1), "float32"), "b": np.zeros((8, 1), "float32")}
    with pytest.raises(ValueError, match="no variable of model .* gets a gradient from two"):
        model.train_on_batch(X, y)


SCRIPT = """
makers = {
    "pcgrad": lambda: mtl.weighting.PCGrad(),
    "mgda_rep": lambda: mtl.weighting.MGDA(rep_grad=True),
    "cagrad": lambda: mtl.weighting.CAGrad(),
    "imtl_rep": lambda: mtl.weighting.IMTL(rep_grad=True),
    "aligned": lambda: mtl.weighting.AlignedMTL(),
    "nash": lambda: mtl.weighting.NashMTL(),
    "gradnorm": lambda: mtl.weighting.GradNorm(),
}
out = {name: single_and_mirrored(make) for name, make in makers.items()}
for policy in ("mixed_float16", "mixed_bfloat16"):
    keras.mixed_precision.set_global_policy(policy)
    for name, make in makers.items():
        model = build(make)
        model.compile(optimizer="adam")
        logs = model.fit(x, y, batch_size=8, epochs=2, verbose=0).history
        out[name][policy] = {
            "finite": all(np.isfinite(v).all() for v in model.get_weights()),
            "iterations": int(model.optimizer.iterations),
            "skipped": sum(logs["balancer/skipped_steps"]),
        }
    keras.mixed_precision.set_global_policy("float32")
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def subprocess_results():
    return run_mirrored_script(SCRIPT, timeout=900)


@pytest.mark.large
@pytest.mark.parametrize(
    "name", ["pcgrad", "mgda_rep", "cagrad", "imtl_rep", "aligned", "nash", "gradnorm"]
)
def test_mirrored_and_mixed_precision(subprocess_results, name):
    result = subprocess_results[name]
    assert result["max_step"] > 1e-3 and result["max_weight_diff"] < 1e-5, result
    for policy in ("mixed_float16", "mixed_bfloat16"):
        assert result[policy]["finite"], result
        # 2 epochs of 2 steps: each one applied or skipped (and counted)
        assert result[policy]["iterations"] >= 1, result
        assert result[policy]["iterations"] + result[policy]["skipped"] == 4, result
