"""Learning to branch: the gate's Gumbel-softmax, the tree it infers, training
with annealing, saving, and errors."""

import keras
import numpy as np
import pytest
from keras import ops

import kerasmtl as mtl
from harness import assert_finite_logs, run_model_saving_test
from kerasmtl.data import synthetic_tabular
from kerasmtl.sharing import (
    BranchGate,
    BranchTemperature,
    branching_tree,
    learning_to_branch,
)
from kerasmtl.tasks import synthetic_tabular_tasks


def _model(branches=(1, 2, 3), seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    x = keras.Input((8,), name="features")
    return learning_to_branch(
        x, lambda: keras.layers.Dense(6, activation="relu"), synthetic_tabular_tasks(),
        branches=branches, seed=seed, **kwargs)


def test_gate_relaxes_with_gumbel_noise_and_picks_the_argmax_at_inference():
    gate = BranchGate(3, temperature=0.5, seed=4)
    parents = [np.full((2, 4), float(i), "float32") for i in range(3)]
    gate(parents)
    gate.logits.assign([0.2, 1.5, -0.3])
    # Inference: the most likely parent, exactly.
    np.testing.assert_array_equal(ops.convert_to_numpy(gate(parents)), parents[1])
    # Training: softmax((logits + g) / tau) with the noise of the same seed.
    generator = keras.random.SeedGenerator(4)
    uniform = ops.convert_to_numpy(
        keras.random.uniform((3,), minval=1e-10, maxval=1.0, seed=generator))
    logits = np.array([0.2, 1.5, -0.3]) - np.log(-np.log(uniform))
    expected = np.exp(logits / 0.5) / np.exp(logits / 0.5).sum()
    out = ops.convert_to_numpy(gate(parents, training=True))
    np.testing.assert_allclose(out, np.full((2, 4), expected @ np.arange(3.0)), rtol=1e-5)
    # A fresh draw each call; a cold gate is nearly one-hot.
    assert not np.allclose(ops.convert_to_numpy(gate(parents, training=True)), out)
    gate.temperature.assign(1e-3)
    weights = ops.convert_to_numpy(gate.choice(training=True))
    assert weights.max() > 0.999


def test_the_tree_is_what_inference_computes():
    model = _model()
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, BranchGate):
            layer.logits.assign(rng.normal(size=layer.num_parents).astype("float32"))
    tree = branching_tree(model)
    assert set(tree) == set(model.task_names) and all(len(p) == 3 for p in tree.values())
    # Recompute each task's features along its path, block by block.
    x, _ = synthetic_tabular(4, seed=0)
    blocks = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)
              and layer.name.startswith("dense")]
    levels = [blocks[0:1], blocks[1:3], blocks[3:6]]
    for task, path in tree.items():
        h = x
        for level, node in zip(levels, path):
            h = ops.convert_to_numpy(level[node](h))
        head = keras.Model(model.input, model.get_layer(f"{task}_branch").output)
        np.testing.assert_allclose(ops.convert_to_numpy(head(x)), h, rtol=1e-5, atol=1e-6)


def test_fit_with_annealing_moves_the_logits_and_saves(tmp_path):
    model = _model()
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    x, y = synthetic_tabular(128, seed=0)
    annealing = BranchTemperature(epochs=3, start=4.0, end=0.25)
    history = model.fit(x, y, epochs=3, batch_size=32, callbacks=[annealing], verbose=0)
    assert_finite_logs(history)
    gates = [layer for layer in model.layers if isinstance(layer, BranchGate)]
    assert len(gates) == 2 + 3 + 3  # level 1, level 2, one per task
    assert all(float(g.temperature.numpy()) == pytest.approx(0.25) for g in gates)
    assert max(np.abs(g.logits.numpy()).max() for g in gates if g.num_parents > 1) > 1e-3
    loaded = run_model_saving_test(model, x[:16], tmp_path)
    assert branching_tree(loaded) == branching_tree(model)


def test_annealing_schedule():
    schedule = BranchTemperature(epochs=5, start=8.0, end=0.5)
    assert [round(schedule.temperature(e), 4) for e in (0, 2, 4, 9)] == [8.0, 2.0, 0.5, 0.5]
    assert BranchTemperature(epochs=1, start=2.0, end=0.5).temperature(0) == 0.5


def test_one_factory_per_level_and_a_single_level():
    x = keras.Input((8,))
    tasks = synthetic_tabular_tasks()
    model = learning_to_branch(
        x, [lambda: keras.layers.Dense(5), lambda: keras.layers.Dense(3)], tasks,
        branches=(2, 2))
    assert model.get_layer("branch_1_0").num_parents == 2
    flat = learning_to_branch(x, lambda: keras.layers.Dense(4), synthetic_tabular_tasks(),
                              branches=(3,))
    assert all(len(p) == 1 for p in branching_tree(flat).values())


def test_errors():
    x = keras.Input((8,))
    tasks = synthetic_tabular_tasks()
    block = lambda: keras.layers.Dense(4)  # noqa: E731
    with pytest.raises(ValueError, match=r"`branches`.*branches=\(1, 0\)"):
        learning_to_branch(x, block, tasks, branches=(1, 0))
    with pytest.raises(ValueError, match="list of 2 factories"):
        learning_to_branch(x, [block], tasks, branches=(1, 2))
    with pytest.raises(ValueError, match="factory called with no argument"):
        learning_to_branch(x, lambda h: keras.layers.Dense(4)(h), tasks, branches=(1,))
    with pytest.raises(ValueError, match="at least two tasks"):
        learning_to_branch(x, block, tasks[:1], branches=(1,))
    with pytest.raises(ValueError, match="temperature=0"):
        learning_to_branch(x, block, tasks, branches=(1,), temperature=0)
    with pytest.raises(ValueError, match="no BranchGate"):
        branching_tree(mtl.sharing.hard_sharing(x, keras.layers.Dense(4)(x), tasks))
    with pytest.raises(ValueError, match="epochs=0"):
        BranchTemperature(epochs=0)


def test_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = _model()
        model.compile(optimizer="adam")
        x, y = synthetic_tabular(64, seed=0)
        assert_finite_logs(model.fit(x, y, epochs=1, batch_size=32, verbose=0))
        assert model.get_layer("branch_1_0").logits.dtype == "float32"
        outputs = model.predict(x[:4], verbose=0)
        assert all(np.all(np.isfinite(v)) for v in outputs.values())
    finally:
        keras.mixed_precision.set_global_policy("float32")
