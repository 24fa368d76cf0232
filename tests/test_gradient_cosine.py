"""`grad_cos/<a>-<b>`: the cosine of each pair of task gradients, logged by the
gradient balancers' train step (kerasmtl/balanced_training.py), against a
numpy cosine of gradients taken by tape; opposed gradients, missing labels,
zero gradients, mixed precision; off for loss weightings, `evaluate` and
`compile(log_gradient_cosine=False)`; MirroredStrategy in a subprocess."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasmtl as mtl
from harness import run_mirrored_script

X = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
Y = {
    "a": np.array([0, 1, 2, 0, 1, 2, 0, 1]),
    "b": np.linspace(-1, 1, 8).astype("float32")[:, None],
    "c": np.cos(np.arange(8)).astype("float32")[:, None],
}
PAIRS = ["grad_cos/a-b", "grad_cos/a-c", "grad_cos/b-c"]


def build(weighting, c_weight=1.0, **compile_kwargs):
    keras.utils.set_random_seed(0)
    tasks = [
        mtl.tasks.Classification("a", 3),
        mtl.tasks.Regression("b"),
        mtl.tasks.Regression("c", loss_weight=c_weight),
    ]
    inputs = keras.Input((4,))
    shared = keras.layers.Dense(3, activation="tanh", name="trunk")(inputs)
    model = mtl.sharing.hard_sharing(inputs, shared, tasks, weighting=weighting)
    model.compile(optimizer=keras.optimizers.SGD(0.1), **compile_kwargs)
    return model


def counts(model):
    """How many steps each pair's mean counted in the last epoch."""
    return {m.name: float(keras.ops.convert_to_numpy(m.count))
            for m in model.metrics if m.name.startswith("grad_cos/")}


def cosines_by_hand(model, rep_grad):
    """numpy cosines of the per-task gradients of the trunk's variables (or of
    its output), taken by tape before the step."""
    trunk = model.get_layer("trunk")
    view = keras.Model(model.input, (model.output, trunk.output))
    with tf.GradientTape(persistent=True) as tape:
        outputs, z = view(X, training=True)
        losses = [
            model.get_task(n).masked_loss(Y[n], outputs[n])[0] * model.get_task(n).loss_weight
            for n in model.task_names
        ]
    if rep_grad:
        rows = [tape.gradient(loss, z).numpy().ravel() for loss in losses]
    else:
        rows = [
            np.concatenate([g.numpy().ravel() for g in tape.gradient(loss, trunk.trainable_variables)])
            for loss in losses
        ]
    names = model.task_names
    return {
        f"grad_cos/{names[i]}-{names[j]}": rows[i] @ rows[j]
        / (np.linalg.norm(rows[i]) * np.linalg.norm(rows[j]))
        for i in range(3)
        for j in range(i + 1, 3)
    }


@pytest.mark.parametrize(
    "weighting", [mtl.weighting.PCGrad, lambda: mtl.weighting.MGDA(rep_grad=True)],
    ids=["parameters", "rep_grad"],
)
def test_logged_cosine_is_the_cosine_of_the_task_gradients(weighting):
    model = build(weighting())
    expected = cosines_by_hand(model, model.weighting.rep_grad)
    logs = model.train_on_batch(X, Y, return_dict=True)
    for name in PAIRS:
        np.testing.assert_allclose(logs[name], expected[name], atol=1e-5, err_msg=name)
    assert len({round(float(v), 3) for v in expected.values()}) == 3  # not one number


@pytest.mark.parametrize("rep_grad", [False, True], ids=["parameters", "rep_grad"])
def test_opposed_gradients_give_minus_one(rep_grad):
    # One head for both tasks, labels one above and one below its output:
    # the two squared errors pull every shared weight in opposite directions.
    keras.utils.set_random_seed(0)
    tasks = [mtl.tasks.Regression("up"), mtl.tasks.Regression("down")]
    inputs = keras.Input((4,))
    z = keras.layers.Dense(3, activation="tanh")(inputs)
    head = keras.layers.Dense(1)
    out = head(z)
    model = mtl.MultiTaskModel(
        inputs, {"up": out, "down": keras.layers.Identity()(out)}, tasks=tasks,
        weighting=mtl.weighting.PCGrad(rep_grad=rep_grad), shared_features=z,
    )
    model.compile(optimizer="sgd")
    pred = model.predict(X, verbose=0)["up"]
    logs = model.train_on_batch(X, {"up": pred + 1.0, "down": pred - 1.0}, return_dict=True)
    np.testing.assert_allclose(logs["grad_cos/up-down"], -1.0, atol=1e-5)


def test_a_task_missing_from_a_batch_leaves_its_pairs_unchanged():
    first = build(mtl.weighting.PCGrad())
    step_1 = first.train_on_batch(X[:4], {k: v[:4] for k, v in Y.items()}, return_dict=True)
    # An epoch of two steps from the same start; `c` has no label in the second.
    model = build(mtl.weighting.PCGrad())
    y = dict(Y, c=np.concatenate([Y["c"][:4], np.full((4, 1), np.nan, "float32")]))
    history = model.fit(X, y, batch_size=4, epochs=1, shuffle=False, verbose=0).history
    assert history["balancer/skipped_steps"] == [0.0]
    for name in ("grad_cos/a-c", "grad_cos/b-c"):
        np.testing.assert_allclose(history[name][0], step_1[name], rtol=1e-6, err_msg=name)
    assert abs(history["grad_cos/a-b"][0] - step_1["grad_cos/a-b"]) > 1e-4  # two steps
    assert counts(model) == {"grad_cos/a-b": 2.0, "grad_cos/a-c": 1.0, "grad_cos/b-c": 1.0}


def test_a_zero_gradient_is_not_counted_and_logs_no_nan():
    model = build(mtl.weighting.PCGrad(), c_weight=0.0)  # c's gradient is exactly zero
    history = model.fit(X, Y, batch_size=4, epochs=2, verbose=0).history
    assert history["balancer/skipped_steps"] == [0.0, 0.0]
    assert history["grad_cos/a-c"] == [0.0, 0.0] and history["grad_cos/b-c"] == [0.0, 0.0]
    assert all(np.isfinite(history["grad_cos/a-b"])) and history["grad_cos/a-b"][0] != 0.0
    assert counts(model) == {"grad_cos/a-b": 2.0, "grad_cos/a-c": 0.0, "grad_cos/b-c": 0.0}


@pytest.mark.parametrize("rep_grad", [False, True], ids=["parameters", "rep_grad"])
def test_mixed_float16_logs_the_float32_cosines(rep_grad):
    # the Gram matrix is loss-scaled in the step: the cosine does not see it
    expected = build(mtl.weighting.PCGrad(rep_grad=rep_grad)).train_on_batch(
        X, Y, return_dict=True)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build(mtl.weighting.PCGrad(rep_grad=rep_grad))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    logs = model.train_on_batch(X, Y, return_dict=True)
    for name in PAIRS:
        np.testing.assert_allclose(logs[name], expected[name], atol=2e-3, err_msg=name)


def test_only_balancers_log_it_and_only_in_training():
    model = build(mtl.weighting.PCGrad())
    history = model.fit(X, Y, batch_size=4, epochs=1, verbose=0, validation_data=(X, Y)).history
    assert set(PAIRS) <= set(history)
    assert not [k for k in history if k.startswith("val_grad_cos")]
    assert not [k for k in model.evaluate(X, Y, verbose=0, return_dict=True) if "grad_cos" in k]
    assert not [k for k in model.test_on_batch(X, Y, return_dict=True) if "grad_cos" in k]
    assert "grad_cos/a-b" in model.train_on_batch(X, Y, return_dict=True)  # back after evaluate
    assert "log_gradient_cosine" not in model.get_compile_config()  # the default

    weighted = build(mtl.weighting.Uncertainty())
    assert not [m.name for m in weighted.metrics if "grad_cos" in m.name]
    assert "grad_cos/a-b" not in weighted.train_on_batch(X, Y, return_dict=True)

    off = build(mtl.weighting.PCGrad(), log_gradient_cosine=False)
    assert "grad_cos/a-b" not in off.train_on_batch(X, Y, return_dict=True)
    config = keras.saving.deserialize_keras_object(off.get_compile_config())
    assert config["log_gradient_cosine"] is False


SCRIPT = """
import contextlib
out = {}
for name, make in [("parameters", lambda: mtl.weighting.PCGrad()),
                   ("rep_grad", lambda: mtl.weighting.MGDA(rep_grad=True))]:
    logs = {}
    for label, scope in [("single", None), ("mirrored", strategy)]:
        with scope.scope() if scope else contextlib.nullcontext():
            model = build(make)
            model.compile(optimizer=keras.optimizers.SGD(0.5))
        history = model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0).history
        logs[label] = {k: v[0] for k, v in history.items() if k.startswith("grad_cos/")}
        if scope is not None:
            trackers = [m for m in model.metrics if m.name.startswith("grad_cos/")]
            # each replica's own total and count: the components of the
            # sync-on-read tf.Variable under the Keras variable (`_value`,
            # private; `.value` reads their sum)
            logs["replicas"] = {
                m.name: [[float(v) for v in strategy.experimental_local_results(w._value)]
                         for w in (m.total, m.count)]
                for m in trackers
            }
    out[name] = logs
print("RESULT " + json.dumps(out))
"""


@pytest.mark.large
def test_mirrored_cosines_are_global_and_the_same_on_every_replica():
    out = run_mirrored_script(SCRIPT, timeout=600)
    for mode in ("parameters", "rep_grad"):
        result = out[mode]
        pairs = sorted(result["single"])
        assert pairs == ["grad_cos/size-tags", "grad_cos/species-size",
                         "grad_cos/species-tags"], result
        for pair in pairs:
            np.testing.assert_allclose(result["mirrored"][pair], result["single"][pair],
                                       atol=1e-5, err_msg=f"{mode} {pair}")
            totals, counts = result["replicas"][pair]
            # replica 0's shard has no `size` label: its pairs count all the same
            assert counts == [1.0, 1.0] and totals[0] == totals[1], (mode, pair, result)
