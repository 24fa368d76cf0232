"""Mixtures of experts: the gate layer by hand, MMoE/CGC/PLE building, training,
round trips, gate inspection and bad input."""

import keras
import numpy as np
import pytest

import kerasmtl as mtl
from harness import assert_finite_logs, run_model_saving_test
from kerasmtl.data import synthetic_tabular
from kerasmtl.layers.expert_gate import ExpertGate


def expert():
    return keras.layers.Dense(4, activation="relu")


def two_tasks():
    return [mtl.tasks.Classification("species", 3), mtl.tasks.Regression("size")]


def tabular(n=32):
    x, y = synthetic_tabular(n, seed=0)  # labels missing at random (30%)
    return x, {"species": y["species"], "size": y["size"]}


def test_gate_by_hand():
    gate = ExpertGate(2)
    x = np.array([[1.0, 2.0]], "float32")
    e1, e2 = np.array([[1.0, 0.0]], "float32"), np.array([[3.0, 4.0]], "float32")
    gate.build([x.shape, e1.shape, e2.shape])
    gate.set_weights([np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0.0, -1.0])])
    mixture, weights = gate([x, e1, e2])
    # logits (1, 1) -> softmax (0.5, 0.5); mixture = (2, 2)
    np.testing.assert_allclose(weights, [[0.5, 0.5]], atol=1e-6)
    np.testing.assert_allclose(mixture, [[2.0, 2.0]], atol=1e-6)


def softmax(logits):
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_gate_per_position_on_sequences_and_pooled_otherwise():
    gate = ExpertGate(3)
    tokens = np.random.default_rng(0).normal(size=(2, 5, 4)).astype("float32")
    experts = [np.full((2, 5, 6), float(i), "float32") for i in range(3)]
    mixture, weights = gate([tokens, *experts])
    assert weights.shape == (2, 5, 3) and mixture.shape == (2, 5, 6)
    kernel, bias = gate.get_weights()
    np.testing.assert_allclose(weights, softmax(tokens @ kernel + bias), atol=1e-5)
    # Expert i is constant i, so the mixture is the gate's mean expert index.
    expected = np.sum(np.asarray(weights) * np.arange(3), axis=-1)
    np.testing.assert_allclose(mixture[..., 0], expected, atol=1e-5)
    pooled = ExpertGate(3)
    mixture, weights = pooled([tokens, *[e[:, 0] for e in experts]])
    assert weights.shape == (2, 3)
    # Per-example experts: the gate reads the tokens averaged over positions.
    kernel, bias = pooled.get_weights()
    expected = softmax(tokens.mean(1) @ kernel + bias)
    np.testing.assert_allclose(weights, expected, atol=1e-5)
    mean_index = expected @ np.arange(3.0)
    np.testing.assert_allclose(mixture, np.tile(mean_index[:, None], (1, 6)), atol=1e-5)


def test_gate_errors():
    with pytest.raises(ValueError, match=r"`num_experts`.*Received: num_experts=0"):
        ExpertGate(0)
    with pytest.raises(ValueError, match="different output shapes.*expert 1"):
        ExpertGate(2)([np.ones((1, 2)), np.ones((1, 3)), np.ones((1, 4))])


def build(builder, inputs, tasks):
    if builder == "mmoe":
        experts = [expert(), keras.Sequential([keras.layers.Dense(4)]), expert()]
        return mtl.sharing.mmoe(inputs, experts, tasks, tower_layers=[4])
    if builder == "cgc":
        return mtl.sharing.cgc(
            inputs, expert, expert, tasks, num_shared_experts=2, num_task_experts=1
        )
    return mtl.sharing.ple(
        inputs, expert, expert, tasks, num_levels=2, num_shared_experts=1,
        num_task_experts=1, weighting=mtl.weighting.Uncertainty(),
    )


@pytest.mark.parametrize(
    "builder,num_experts",
    # cgc is ple's code path with one level: its training run is the slow variant.
    [("mmoe", 3), pytest.param("cgc", 3, marks=pytest.mark.large), ("ple", 2)],
)
def test_trains_with_missing_labels_round_trips_and_exposes_gates(
    builder, num_experts, tmp_path
):
    x, y = tabular()
    model = build(builder, keras.Input((8,), name="features"), two_tasks())
    # Eager steps: a few tiny batches run faster than tracing the train step.
    model.compile(optimizer=keras.optimizers.Adam(0.01), run_eagerly=True)
    before = [w.numpy().copy() for w in model.trainable_weights]
    assert_finite_logs(model.fit(x, y, batch_size=16, epochs=1, verbose=0))
    changed = [not np.allclose(a, w.numpy()) for a, w in zip(before, model.trainable_weights)]
    assert all(changed), "every expert, gate and head gets gradients"
    weights = mtl.sharing.gate_weights(model, x[:5])
    assert sorted(weights) == ["size", "species"]
    for value in weights.values():
        assert value.shape == (5, num_experts)
        np.testing.assert_allclose(value.sum(-1), 1.0, atol=1e-5)
    loaded = run_model_saving_test(model, x[:4], tmp_path, atol=1e-5)
    np.testing.assert_allclose(
        mtl.sharing.gate_weights(loaded, x[:5])["size"], weights["size"], atol=1e-6
    )


def test_ple_levels_and_gate_order():
    tasks = [mtl.tasks.Regression("a"), mtl.tasks.Regression("b")]
    model = mtl.sharing.ple(
        keras.Input((8,)), expert, expert, tasks, num_levels=3,
        num_shared_experts=2, num_task_experts=1,
    )
    # Non-final levels: a shared gate over all 2 * 1 task experts + 2 shared.
    assert model.get_layer("shared_gate_0").num_experts == 4
    assert model.get_layer("shared_gate_1").num_experts == 4
    with pytest.raises(ValueError, match="No layer|shared_gate_2"):
        model.get_layer("shared_gate_2")
    a_names = model.get_layer("a_gate_1").expert_names
    shared_names = model.get_layer("shared_gate_1").expert_names
    assert a_names[1:] == shared_names[-2:]  # own expert first, then shared
    assert a_names[0] == shared_names[0]  # task experts in task order
    # Level 1 reads level 0: a's expert reads a's mixture, the shared experts
    # the shared gate's mixture (and b's expert b's mixture).
    mixture = {
        n: model.get_layer(f"{n}_gate_0").output[0] for n in ("a", "b", "shared")
    }
    assert model.get_layer(a_names[0]).input is mixture["a"]
    assert model.get_layer(shared_names[1]).input is mixture["b"]
    assert all(model.get_layer(n).input is mixture["shared"] for n in shared_names[-2:])
    x = np.ones((3, 8), "float32")
    assert mtl.sharing.gate_weights(model, x, level=0)["a"].shape == (3, 3)
    with pytest.raises(ValueError, match=r"gate levels \[0, 1, 2\].*level=3"):
        mtl.sharing.gate_weights(model, x, level=3)


def test_gate_inspection_needs_a_gated_model():
    x = keras.Input((4,))
    model = mtl.sharing.hard_sharing(x, x, [mtl.tasks.Regression("a")])
    with pytest.raises(ValueError, match="no task gate layers.*mmoe, cgc or ple"):
        mtl.sharing.gate_weights(model, np.ones((1, 4)))


def test_bad_input():
    x, tasks = keras.Input((8,)), two_tasks()
    with pytest.raises(ValueError, match="`experts` is empty"):
        mtl.sharing.mmoe(x, [], tasks)
    with pytest.raises(ValueError, match=r"`num_experts`.*Received: num_experts=0"):
        mtl.sharing.mmoe(x, expert, tasks, num_experts=0)
    with pytest.raises(ValueError, match=r"`num_task_experts`.*num_task_experts=-1"):
        mtl.sharing.cgc(x, expert, expert, tasks, num_shared_experts=1,
                        num_task_experts=-1)
    with pytest.raises(ValueError, match="factory, so `num_experts` is needed"):
        mtl.sharing.mmoe(x, expert, tasks)
    with pytest.raises(ValueError, match="same layer object"):
        shared = expert()
        mtl.sharing.mmoe(x, [shared, shared], tasks)
    with pytest.raises(ValueError, match="holds 2 layers but num_experts=3"):
        mtl.sharing.mmoe(x, [expert(), expert()], tasks, num_experts=3)
    with pytest.raises(ValueError, match="task 'size' has the same name as a layer"):
        mtl.sharing.mmoe(x, [keras.layers.Dense(4, name="size"), expert()], tasks)
    with pytest.raises(ValueError, match="num_levels=2, `shared_experts` must be a factory"):
        mtl.sharing.ple(x, [expert()], expert, tasks, num_shared_experts=1,
                        num_task_experts=1)
    with pytest.raises(ValueError, match=r"`num_levels`.*num_levels=0"):
        mtl.sharing.ple(x, expert, expert, tasks, num_levels=0)
    with pytest.raises(ValueError, match=r"one entry per task.*missing \['size'\]"):
        mtl.sharing.cgc(x, [expert()], {"species": [expert()]}, tasks)
    inputs = {"a": keras.Input((4,)), "b": keras.Input((4,))}
    with pytest.raises(ValueError, match="Pass `features=`"):
        mtl.sharing.mmoe(inputs, expert, tasks, num_experts=2)


def test_mmoe_on_token_features_gates_every_token():
    tokens = keras.Input((None,), dtype="int32")
    embedded = keras.layers.Embedding(20, 8)(tokens)
    tasks = [mtl.tasks.Tagging("pos", 5), mtl.tasks.Tagging("ner", 3)]
    model = mtl.sharing.mmoe(tokens, expert, tasks, num_experts=2, features=embedded)
    weights = mtl.sharing.gate_weights(model, np.ones((3, 7), "int32"))
    assert weights["ner"].shape == (3, 7, 2)
    np.testing.assert_allclose(weights["ner"].sum(-1), 1.0, atol=1e-5)


def test_experts_as_a_function_of_the_inputs_get_a_clear_error():
    x, tasks = keras.Input((8,)), two_tasks()

    def expert_fn(inputs):  # soft_sharing's tower form, not a factory
        return keras.layers.Dense(4)(inputs)

    with pytest.raises(ValueError, match=r"`experts` takes an argument.*`experts=lambda:"):
        mtl.sharing.mmoe(x, expert_fn, tasks, num_experts=2)
    with pytest.raises(ValueError, match="`shared_experts` takes an argument"):
        mtl.sharing.cgc(x, expert_fn, expert, tasks, num_shared_experts=1,
                        num_task_experts=1)
    with pytest.raises(ValueError, match=r"`task_experts\['size'\]` takes an argument"):
        mtl.sharing.ple(x, expert, {"species": expert, "size": expert_fn}, tasks,
                        num_shared_experts=1, num_task_experts=1)
    with pytest.raises(ValueError, match="factory, so `num_shared_experts` is needed"):
        mtl.sharing.cgc(x, expert, expert, tasks)
