"""Sharing builders: hard sharing, task-specific layers, soft sharing."""

import keras
import numpy as np
import pytest

import kerasmtl as mtl
from harness import assert_finite_logs, run_model_saving_test
from kerasmtl.data import synthetic_tabular
from kerasmtl.tasks import synthetic_tabular_tasks


def tower(inputs):
    return keras.layers.Dense(2, activation="relu")(inputs)


def two_tasks():
    return [mtl.tasks.Regression("a"), mtl.tasks.Regression("b")]


def test_hard_sharing_shares_the_trunk_and_not_the_heads():
    x = keras.Input((4,))
    trunk = keras.layers.Dense(3, name="trunk")
    model = mtl.sharing.hard_sharing(x, trunk(x), two_tasks())
    assert [layer.name for layer in model.layers].count("trunk") == 1
    assert model.get_layer("a") is not model.get_layer("b")


def test_task_specific_layers_by_spec_and_by_hand():
    x = keras.Input((4,))
    shared = keras.layers.Dense(3)(x)
    tasks = [mtl.tasks.Regression("a", hidden_layers=[5]), mtl.tasks.Regression("b")]
    model = mtl.sharing.hard_sharing(x, shared, tasks)
    assert model.get_layer("a_hidden_0").units == 5
    by_hand = {"a": keras.layers.Dense(6)(shared), "b": shared}
    model = mtl.sharing.hard_sharing(x, by_hand, two_tasks())
    assert model.get_layer("a").kernel.shape == (6, 1)
    with pytest.raises(ValueError, match=r"no features for task\(s\) \['b'\]"):
        mtl.sharing.hard_sharing(x, {"a": shared}, two_tasks())


def test_soft_sharing_penalty_by_hand():
    x = keras.Input((3,))
    model = mtl.sharing.soft_sharing(x, tower, two_tasks(), penalty=0.1)
    (group,) = model.soft_sharing["groups"]
    tower_a, tower_b = (model.get_layer(n) for n in group)
    tower_a.set_weights([np.ones((3, 2)), np.array([1.0, 2.0])])
    tower_b.set_weights([np.zeros((3, 2)), np.zeros(2)])
    # 0.1 * (||1_{3x2}||^2 + ||(1, 2)||^2) = 0.1 * (6 + 5)
    np.testing.assert_allclose(float(model.soft_sharing_penalty()), 1.1, rtol=1e-6)
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    data = np.zeros((4, 3), "float32"), {"a": np.zeros(4), "b": np.zeros(4)}
    logs = model.evaluate(*data, verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["loss/soft_sharing"], 1.1, rtol=1e-6)
    np.testing.assert_allclose(logs["loss"], logs["loss/a"] + logs["loss/b"] + 1.1, rtol=1e-5)


def test_soft_sharing_pulls_towers_together():
    x_data, y = synthetic_tabular(128, seed=0)
    distances = []
    for penalty in (0.0, 1.0):
        keras.utils.set_random_seed(0)
        x = keras.Input((8,))
        model = mtl.sharing.soft_sharing(x, tower, synthetic_tabular_tasks(), penalty=penalty)
        model.compile(optimizer="adam")
        assert_finite_logs(model.fit(x_data, y, epochs=5, verbose=0))
        kernels = [model.get_layer(n).kernel.numpy() for n in model.soft_sharing["groups"][0]]
        distances.append(sum(np.sum((kernels[0] - k) ** 2) for k in kernels[1:]))
    assert distances[1] < distances[0]


def test_soft_sharing_round_trip(tmp_path):
    x_data, y = synthetic_tabular(32, seed=0)
    x = keras.Input((8,), name="features")
    model = mtl.sharing.soft_sharing(
        x, lambda t: keras.layers.Dense(4)(keras.layers.Dense(4)(t)),
        synthetic_tabular_tasks(), penalty=0.01,
    )
    model.compile(optimizer="adam")
    model.fit(x_data, y, epochs=1, verbose=0)
    loaded = run_model_saving_test(model, x_data[:4], tmp_path)
    assert loaded.soft_sharing == model.soft_sharing
    np.testing.assert_allclose(
        float(loaded.soft_sharing_penalty()), float(model.soft_sharing_penalty()), rtol=1e-6
    )


def test_soft_sharing_errors():
    x = keras.Input((3,))
    shared_layer = keras.layers.Dense(2)
    with pytest.raises(ValueError, match="reuses layers of another tower"):
        mtl.sharing.soft_sharing(x, shared_layer, two_tasks())
    widths = iter([2, 3])
    with pytest.raises(ValueError, match="different architectures.*'a'.*'b'"):
        mtl.sharing.soft_sharing(x, lambda t: keras.layers.Dense(next(widths))(t), two_tasks())
    with pytest.raises(ValueError, match="at least two tasks"):
        mtl.sharing.soft_sharing(x, tower, two_tasks()[:1])
    with pytest.raises(ValueError, match="penalty"):
        mtl.sharing.soft_sharing(x, tower, two_tasks(), penalty=-1.0)


def test_soft_sharing_takes_a_function_of_the_inputs_or_a_factory_of_layers():
    x = keras.Input((3,))
    by_function = mtl.sharing.soft_sharing(x, tower, two_tasks())

    def factory():  # the form cross_stitch takes
        return [keras.layers.Dense(2, activation="relu"), keras.layers.Dense(5)]

    by_factory = mtl.sharing.soft_sharing(x, factory, two_tasks())
    single = mtl.sharing.soft_sharing(x, lambda: keras.layers.Dense(2), two_tasks())
    assert len(by_function.soft_sharing["groups"]) == 1
    assert len(by_factory.soft_sharing["groups"]) == 2
    assert len(single.soft_sharing["groups"]) == 1
    assert by_factory.get_layer("a").kernel.shape == (5, 1)
    # Each task got its own (paired) layers, as with tower(inputs).
    first, _ = by_factory.soft_sharing["groups"]
    assert len(set(first)) == 2
    with pytest.raises(ValueError, match="must return a Keras layer or a non-empty list"):
        mtl.sharing.soft_sharing(x, lambda: [], two_tasks())
    with pytest.raises(ValueError, match=r"`tower_fn` must be a factory.*\(a, b\)"):
        mtl.sharing.soft_sharing(x, lambda a, b: a, two_tasks())
    with pytest.raises(ValueError, match="Expected a callable.*Received: 3"):
        mtl.sharing.soft_sharing(x, 3, two_tasks())
