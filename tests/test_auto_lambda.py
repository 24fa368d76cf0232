"""Auto-Lambda: the meta-gradient against the official code's finite
differences, absent and auxiliary tasks, training, saving and errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasmtl as mtl
from harness import run_mirrored_script, run_model_saving_test, tiny_model
from kerasmtl.data import synthetic_tabular
from kerasmtl.tasks import synthetic_tabular_tasks
from kerasmtl.weighting import AutoLambda
from kerasmtl.weighting_spec import weighting_factory

ALPHA = 0.5
LAMBDAS = np.array([0.3, 0.1, 0.5], "float32")


def _model(weighting, seed=0):
    keras.utils.set_random_seed(seed)
    model = tiny_model(synthetic_tabular_tasks(), weighting=weighting)
    model.compile(optimizer=keras.optimizers.SGD(ALPHA))
    model.optimizer.build(model.trainable_variables)
    return model


def _batch(rows=16, seed=0):
    x, y = synthetic_tabular(64, seed=seed)
    return x[:rows], {k: v[:rows] for k, v in y.items()}


def _official_meta_gradient(model, lambdas, first, second, primary):
    """The official `unrolled_backward` (lorenmt/auto-lambda), with the
    model's weights assigned as it does on its copy: a virtual SGD step,
    the meta-batch's gradient `d` there, then the derivative w.r.t. the
    weights of the weighted loss at `theta +- eps d`, by central
    differences with `eps = 0.01 / |d|`."""
    variables = model.trainable_variables
    theta = [np.array(v.numpy(), "float64") for v in variables]

    def losses(batch):
        x, y, w = batch
        means, _ = model._task_means(y, model(x, training=True), w)
        return tf.stack([means[n] for n in model.task_names])

    def assign(values):
        for v, value in zip(variables, values):
            v.assign(value.astype("float32"))

    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(lambdas * losses(first))
    grads = [np.array(g, "float64") for g in tape.gradient(loss, variables)]
    assign([t - ALPHA * g for t, g in zip(theta, grads)])
    with tf.GradientTape() as tape:
        meta = tf.reduce_sum(losses(second) * primary)
    d = [np.array(g, "float64") for g in tape.gradient(meta, variables)]
    eps = 0.01 / np.sqrt(sum(np.sum(g**2) for g in d))
    assign([t + eps * g for t, g in zip(theta, d)])
    plus = np.array(losses(first), "float64")
    assign([t - eps * g for t, g in zip(theta, d)])
    minus = np.array(losses(first), "float64")
    assign(theta)
    return -ALPHA * (plus - minus) / (2 * eps)


def _halves(x, y, w=None):
    """The two halves of a batch, as `AutoLambda` splits it."""
    half = len(x) // 2

    def take(rows):
        return (x[rows], {k: v[rows] for k, v in y.items()},
                None if w is None else {k: v[rows] for k, v in w.items()})

    return take(slice(0, half)), take(slice(half, None))


@pytest.mark.parametrize("primary_tasks", [None, ["species"], ["size", "tags"]])
def test_meta_gradient_matches_the_official_finite_differences(primary_tasks):
    weighting = AutoLambda(primary_tasks=primary_tasks)
    model = _model(weighting)
    x, y = _batch()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)  # builds; leaves theta off its start
    weighting.lambdas.assign(LAMBDAS)
    got = np.asarray(weighting.meta_gradient(model, tf.constant(x), y))
    primary = np.array([float(n in (primary_tasks or model.task_names))
                        for n in model.task_names], "float32")
    expected = _official_meta_gradient(model, LAMBDAS, *_halves(x, y), primary)
    assert np.abs(expected).max() > 1e-4  # not a vacuous comparison
    np.testing.assert_allclose(got, expected, rtol=2e-2, atol=2e-3 * np.abs(expected).max())


def test_a_task_without_labels_in_the_first_half_gets_no_meta_gradient():
    weighting = AutoLambda()
    model = _model(weighting)
    x, y = _batch()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    weighting.lambdas.assign(LAMBDAS)
    w = {n: np.ones(16, "float32") for n in model.task_names}
    w["size"][:8] = 0.0  # no known size label in the virtual step's half
    got = np.asarray(weighting.meta_gradient(model, tf.constant(x), y, w))
    assert got[model.task_names.index("size")] == 0.0
    # The others: as the official code with size's weight at 0.
    lambdas = LAMBDAS.copy()
    lambdas[model.task_names.index("size")] = 0.0
    expected = _official_meta_gradient(model, lambdas, *_halves(x, y, w), np.ones(3, "float32"))
    np.testing.assert_allclose(got, expected, rtol=2e-2, atol=2e-3 * np.abs(expected).max())


def test_fit_moves_the_weights_keeps_them_non_negative_and_saves_them(tmp_path):
    weighting = AutoLambda(learning_rate=0.05)
    model = _model(weighting)
    x, y = synthetic_tabular(128, seed=0)
    history = model.fit(x, y, epochs=3, batch_size=32, verbose=0).history
    assert history["weighting/skipped_steps"] == [0.0, 0.0, 0.0]
    lambdas = weighting.lambdas.numpy()
    assert np.all(lambdas >= 0) and np.abs(lambdas - 0.1).max() > 1e-2
    assert float(weighting.updates.numpy()) == 12.0
    # The weights reported are those of the last real step: after its meta-step.
    np.testing.assert_allclose(list(weighting.current_weights().values()), lambdas)
    state = {v.path: v.numpy() for v in weighting.weights}
    loaded = run_model_saving_test(model, x[:16], tmp_path)
    assert isinstance(loaded.weighting, AutoLambda)
    assert loaded.weighting.get_config() == weighting.get_config()
    for var in loaded.weighting.weights:
        np.testing.assert_array_equal(var.numpy(), state[var.path], err_msg=var.path)


def test_a_large_step_clips_at_zero():
    weighting = AutoLambda(weight_init=0.0, learning_rate=1.0)
    weighting({"a": 1.0, "b": 1.0})
    weighting._adam_update(tf.constant([1.0, -1.0]))
    np.testing.assert_allclose(weighting.lambdas.numpy(), [0.0, 1.0], atol=1e-4)
    weighting._adam_update(tf.constant([np.nan, 1.0]))  # non-finite: no change
    np.testing.assert_allclose(weighting.lambdas.numpy(), [0.0, 1.0], atol=1e-4)
    assert float(weighting.updates.numpy()) == 1.0


def test_absent_task_is_left_out_of_the_loss():
    weighting = AutoLambda(weight_init=0.5)
    total = weighting({"a": 1.0, "b": 3.0}, {"a": 1.0, "b": 0.0})
    assert float(total) == 0.5 and weighting.current_weights() == {"a": 0.5, "b": 0.0}


def test_errors_and_name():
    with pytest.raises(ValueError, match="weight_init=-1"):
        AutoLambda(weight_init=-1)
    with pytest.raises(ValueError, match="learning_rate=0"):
        AutoLambda(learning_rate=0)
    with pytest.raises(ValueError, match="primary_tasks='a'"):
        AutoLambda(primary_tasks="a")
    with pytest.raises(ValueError, match=r"primary_tasks name \['c'\]"):
        AutoLambda(primary_tasks=["c"])({"a": 1.0, "b": 1.0})
    made = weighting_factory("auto_lambda:learning_rate=0.001")()
    assert isinstance(made, AutoLambda) and made.learning_rate == 0.001
    assert mtl.weighting.AutoLambda is AutoLambda


MIRRORED = """
def run(x, y, strategy_scope):
    with strategy_scope:
        model = build(lambda: mtl.weighting.AutoLambda(learning_rate=0.05))
        model.set_weights(start)
        model.compile(optimizer=keras.optimizers.SGD(0.5))
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    return model

start = build(mtl.weighting.AutoLambda).get_weights()
# Each replica splits its 8 rows in two: the global halves are rows 0-3 and
# 8-11, then 4-7 and 12-15. On one device, this order gives the same halves.
order = np.r_[0:4, 8:12, 4:8, 12:16]
single = run(x[order], {k: v[order] for k, v in y.items()}, tf.name_scope("single"))
dist = run(x, y, strategy.scope())
print("RESULT " + json.dumps({
    "max_weight_diff": max_diff(single.get_weights(), dist.get_weights()),
    "lambdas_single": single.weighting.lambdas.numpy().tolist(),
    "lambdas_dist": dist.weighting.lambdas.numpy().tolist(),
}))
"""


def test_mirrored_step_equals_one_device_with_the_same_halves():
    result = run_mirrored_script(MIRRORED)
    assert result["max_weight_diff"] < 1e-5
    np.testing.assert_allclose(result["lambdas_dist"], result["lambdas_single"], atol=1e-6)
    assert result["lambdas_single"] != [0.1, 0.1, 0.1]  # the meta-step moved them


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        weighting = AutoLambda(learning_rate=0.01)
        model = tiny_model(synthetic_tabular_tasks(), weighting=weighting)
        model.compile(optimizer="adam")
        x, y = synthetic_tabular(64, seed=0)
        history = model.fit(x, y, epochs=2, batch_size=32, verbose=0).history
        assert np.all(np.isfinite(history["loss"]))
        # float16's first steps may overflow under the initial loss scale: the
        # meta-step then leaves the weights alone, as the optimizer skips.
        assert 1.0 <= float(weighting.updates.numpy()) <= 4.0
        assert weighting.lambdas.dtype == "float32"
        assert not np.allclose(weighting.lambdas.numpy(), 0.1)
    finally:
        keras.mixed_precision.set_global_policy("float32")
