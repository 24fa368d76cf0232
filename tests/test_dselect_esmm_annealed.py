"""DSelect-k gates (smooth-step, weights by hand, sparsity after training,
regularisers, MMoE on them), ESMM (the product relation, training on
click/conversion data, round trips) and annealed data-set sampling (the
schedule's formula, draws, driving a fit)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasmtl as mtl
from harness import assert_finite_logs, run_model_saving_test
from kerasmtl.data import synthetic_tabular
from kerasmtl.data.annealed_sampling import AnnealedSampling
from kerasmtl.data.mixing import mix
from kerasmtl.sharing.dselect_k import DSelectKGate, dselect_k_mmoe, smooth_step
from kerasmtl.sharing.esmm import cvr_probabilities, esmm

# -- DSelect-k -----------------------------------------------------------------


def test_smooth_step_matches_its_closed_form():
    for gamma in (1.0, 0.5, 3.0):
        x = np.linspace(-gamma, gamma, 401, dtype="float32")
        expected = np.where(
            x <= -gamma / 2, 0.0,
            np.where(x >= gamma / 2, 1.0, -2 * x**3 / gamma**3 + 1.5 * x / gamma + 0.5),
        )
        np.testing.assert_allclose(smooth_step(x, gamma), expected, atol=1e-6)
    # By hand (gamma 1): S(0.25) = -2/64 + 3/8 + 1/2 = 0.84375; S(-0.25) = 0.15625.
    np.testing.assert_allclose(smooth_step(np.array([0.25, -0.25, 0.5, -0.5])),
                               [0.84375, 0.15625, 1.0, 0.0])
    # C^1: the cubic meets 0 and 1 with zero slope, so saturated bits get no
    # gradient.
    x = tf.constant([-0.5, 0.5, -0.7, 0.9])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = smooth_step(x)
    np.testing.assert_allclose(tape.gradient(y, x), 0.0, atol=1e-6)


def static_gate(num_experts, k, z, w, **kwargs):
    """A task-only gate (no input dependence) with its logits set."""
    gate = DSelectKGate(num_experts, k, per_example=False, **kwargs)
    gate.build([(None, 2)] + [(None, 3)] * num_experts)
    gate.z_bias.assign(np.asarray(z, "float32"))
    gate.w_bias.assign(np.asarray(w, "float32"))
    return gate


def experts_by_index(num_experts, batch=2):
    """Expert e outputs the constant e, so a mixture is the mean index."""
    return [np.full((batch, 3), float(e), "float32") for e in range(num_experts)]


def test_weights_by_hand():
    # n = 2, k = 1, one bit at z = 0.25: r = (1 - 0.84375, 0.84375).
    gate = static_gate(2, 1, [[0.25]], [0.0])
    mixture, weights = gate([np.ones((2, 2), "float32"), *experts_by_index(2)])
    np.testing.assert_allclose(weights, [[0.15625, 0.84375]] * 2, atol=1e-6)
    np.testing.assert_allclose(mixture, np.full((2, 3), 0.84375), atol=1e-6)
    # n = 4, k = 2, saturated: selector 0 has bits (1, 0) -> expert 2,
    # selector 1 bits (0, 1) -> expert 1; softmax(log 3, 0) = (0.75, 0.25).
    gate = static_gate(4, 2, [[0.6, -0.6], [-2.0, 0.5]], [np.log(3.0), 0.0])
    mixture, weights = gate([np.ones((2, 2), "float32"), *experts_by_index(4)])
    np.testing.assert_allclose(weights, [[0.0, 0.25, 0.75, 0.0]] * 2, atol=1e-6)
    assert np.count_nonzero(np.asarray(weights)[0]) == 2  # exactly k, exact zeros
    np.testing.assert_allclose(mixture, np.full((2, 3), 0.25 + 1.5), atol=1e-6)


def test_per_example_weights_sum_to_one_and_saturate_to_k_experts():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 5)).astype("float32")
    for n in (2, 4, 8):
        gate = DSelectKGate(n, 2 if n > 2 else 1)
        _, weights = gate([x, *experts_by_index(n, batch=16)])
        assert weights.shape == (16, n)
        np.testing.assert_allclose(np.sum(weights, -1), 1.0, atol=1e-5)
    # On sequences, per token (as ExpertGate).
    tokens = rng.normal(size=(2, 5, 5)).astype("float32")
    mixture, weights = DSelectKGate(4, 2)([tokens, *[np.ones((2, 5, 3), "float32")] * 4])
    assert weights.shape == (2, 5, 4) and mixture.shape == (2, 5, 3)
    np.testing.assert_allclose(np.sum(weights, -1), 1.0, atol=1e-5)
    # Saturated logits that depend on the example: bit b of selector i is
    # sign(x_0) * (-1)^(i + b) * 10, so examples with x_0 > 0 pick experts
    # {1 (01), 2 (10)} and the others {2, 1} in the other order, and every
    # row has exactly k = 2 non-zero weights.
    gate = DSelectKGate(4, 2, w_initializer="zeros")
    gate.build([(None, 5)] + [(None, 3)] * 4)
    kernel = np.zeros((5, 2, 2), "float32")
    kernel[0] = [[-10.0, 10.0], [10.0, -10.0]]
    gate.z_kernel.assign(kernel)
    gate.z_bias.assign(np.zeros((2, 2), "float32"))
    x[:, 0] = np.where(x[:, 0] > 0, 1.0, -1.0)
    _, weights = gate([x, *experts_by_index(4, batch=16)])
    np.testing.assert_array_equal(np.count_nonzero(np.asarray(weights), -1), 2)
    np.testing.assert_allclose(weights, np.tile([0.0, 0.5, 0.5, 0.0], (16, 1)), atol=1e-6)


def test_regularisers_are_added_in_training_only():
    z, w = [[0.25, -0.1]], [0.0]
    gate = static_gate(4, 1, z, w, entropy_reg=0.01)
    inputs = [np.ones((3, 2), "float32"), *experts_by_index(4, batch=3)]
    gate(inputs, training=False)
    assert gate.losses == []
    _, weights = gate(inputs, training=True)
    r = np.asarray(weights)  # k = 1, so the selector's output is the weights
    entropy = -np.sum(r * np.log(r + 1e-6))  # summed over the batch of 3
    np.testing.assert_allclose(float(gate.losses[0]), 0.01 * entropy, rtol=1e-5)
    assert len(gate.losses) == 1  # 4 experts: every code names one
    # 3 experts: code 11 names none. Bits at 0: r = 0.25 each, so the weights
    # sum to 0.75 and the penalty is 1 / 0.75 - 1 per example.
    gate = static_gate(3, 1, [[0.0, 0.0]], [0.0], entropy_reg=0.0)
    _, weights = gate([np.ones((3, 2), "float32"), *experts_by_index(3, batch=3)],
                      training=True)
    np.testing.assert_allclose(np.sum(weights, -1), 0.75, atol=1e-6)
    np.testing.assert_allclose(float(gate.losses[0]), 3 * (1 / 0.75 - 1), rtol=1e-5)
    # Saturated on a real expert: nothing lost, no penalty.
    gate = static_gate(3, 1, [[5.0, -5.0]], [0.0], entropy_reg=0.0)
    _, weights = gate([np.ones((3, 2), "float32"), *experts_by_index(3, batch=3)],
                      training=True)
    np.testing.assert_allclose(weights, [[0.0, 0.0, 1.0]] * 3)
    np.testing.assert_allclose(float(gate.losses[0]), 0.0, atol=1e-7)


def test_training_the_selectors_converges_to_exactly_k_experts():
    # Experts are the unit vectors of R^8; the target mixes experts 1 and 6
    # (0.7, 0.3). Only one-hot selectors can reach it, so training must
    # saturate them: the weights end with exact zeros on the 6 other experts.
    n, k = 8, 2
    experts = [tf.constant(np.eye(n, dtype="float32")[e][None]) for e in range(n)]
    target = tf.constant(0.7 * np.eye(n)[1] + 0.3 * np.eye(n)[6], "float32")[None]
    gate = DSelectKGate(n, k, per_example=False, entropy_reg=1e-3)
    x = tf.ones((1, 2))
    gate([x, *experts])
    optimizer = keras.optimizers.Adam(0.05)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            mixture, _ = gate([x, *experts], training=True)
            loss = tf.reduce_sum((mixture - target) ** 2) + tf.add_n(gate.losses)
        grads = tape.gradient(loss, gate.trainable_weights)
        optimizer.apply_gradients(zip(grads, gate.trainable_weights))

    for _ in range(400):
        step()
    weights = np.asarray(gate([x, *experts])[1])[0]
    assert np.count_nonzero(weights) == k, weights
    np.testing.assert_array_equal(np.flatnonzero(weights), [1, 6])
    np.testing.assert_allclose(weights[[1, 6]], [0.7, 0.3], atol=0.02)
    assert np.all(np.abs(gate.z_bias.numpy()) >= 0.5)  # every bit saturated


def test_gate_config_round_trip():
    gate = DSelectKGate(4, 2, ["a", "b", "c", "d"], gamma=2.0, entropy_reg=0.1,
                        per_example=False, name="t_gate_0")
    clone = DSelectKGate.from_config(gate.get_config())
    assert clone.get_config() == gate.get_config()
    assert "kernel_initializer" not in gate.get_config()


def test_dselect_k_mmoe_trains_round_trips_and_exposes_gates(tmp_path):
    x, y = synthetic_tabular(32, seed=0)
    y = {"species": y["species"], "size": y["size"]}
    tasks = [mtl.tasks.Classification("species", 3), mtl.tasks.Regression("size")]
    model = dselect_k_mmoe(
        keras.Input((8,), name="features"), lambda: keras.layers.Dense(4, activation="relu"),
        tasks, k=2, num_experts=3, tower_layers=[4], entropy_reg=0.01,
    )
    assert isinstance(model.get_layer("size_gate_0"), DSelectKGate)
    model(x[:4], training=True)
    # Per gate: the entropy term and, with 3 experts, the unreachable-code penalty.
    assert len(model.losses) == 4
    model.compile(optimizer=keras.optimizers.Adam(0.01), run_eagerly=True)
    before = [w.numpy().copy() for w in model.trainable_weights]
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert_finite_logs(history)
    changed = [not np.allclose(a, w.numpy()) for a, w in zip(before, model.trainable_weights)]
    assert all(changed), "every expert, gate and head gets gradients"
    weights = mtl.sharing.gate_weights(model, x[:5])
    assert weights["species"].shape == (5, 3)
    assert np.all(np.sum(weights["species"], -1) <= 1.0 + 1e-6)
    loaded = run_model_saving_test(model, x[:4], tmp_path, atol=1e-5)
    assert isinstance(loaded.get_layer("species_gate_0"), DSelectKGate)
    np.testing.assert_allclose(
        mtl.sharing.gate_weights(loaded, x[:5])["size"], weights["size"], atol=1e-6
    )


def test_dselect_k_bad_input():
    with pytest.raises(ValueError, match=r"`k`.*\[1, 4\].*Received: k=5"):
        DSelectKGate(4, 5)
    with pytest.raises(ValueError, match=r"at least 2 experts.*num_experts=1"):
        DSelectKGate(1, 1)
    with pytest.raises(ValueError, match=r"`gamma`.*Received: gamma=0"):
        DSelectKGate(4, 1, gamma=0)
    with pytest.raises(ValueError, match=r"`entropy_reg`.*entropy_reg=-1"):
        DSelectKGate(4, 1, entropy_reg=-1)
    with pytest.raises(ValueError, match="no softmax kernel.*`z_initializer`"):
        DSelectKGate(4, 1, kernel_initializer="zeros")
    with pytest.raises(ValueError, match="num_experts=4 but was called on 3"):
        DSelectKGate(4, 1)([np.ones((1, 2)), *experts_by_index(3, batch=1)])
    with pytest.raises(ValueError, match="factory, so `num_experts` is needed"):
        dselect_k_mmoe(keras.Input((4,)), lambda: keras.layers.Dense(2),
                       [mtl.tasks.Regression("a")], k=1)


# -- ESMM ----------------------------------------------------------------------


def click_data(n=512, seed=0):
    """Impressions with two categorical features: the item drives clicks
    (p 0.5 or 0.1), the user the conversions after a click (0.6 or 0.1).
    Labels exist for clicks and for click-and-conversion, never for CVR."""
    rng = np.random.default_rng(seed)
    item, user = rng.integers(0, 2, n), rng.integers(0, 2, n)
    click = rng.random(n) < np.where(item == 1, 0.5, 0.1)
    convert = click & (rng.random(n) < np.where(user == 1, 0.6, 0.1))
    x = np.stack([item, 2 + user], axis=1).astype("int32")  # one vocabulary
    y = {"ctr": click.astype("int32")[:, None], "ctcvr": convert.astype("int32")[:, None]}
    return x, y


def esmm_model(**kwargs):
    ids = keras.Input((2,), dtype="int32", name="ids")
    shared = keras.layers.Flatten()(keras.layers.Embedding(4, 4, name="embedding")(ids))
    return esmm(ids, shared, mtl.tasks.MultiLabel("ctr", 1, hidden_layers=[8]),
                mtl.tasks.MultiLabel("ctcvr", 1), cvr_tower=[8], **kwargs)


def test_esmm_outputs_the_product_exactly():
    model = esmm_model()
    x, _ = click_data(64)
    probe = keras.Model(
        model.input, [model.output["ctr"], model.get_layer("cvr").output,
                      model.output["ctcvr"]],
    )
    p_ctr, p_cvr, p_ctcvr = (np.asarray(v) for v in probe(x))
    np.testing.assert_array_equal(p_ctcvr, p_ctr * p_cvr)
    np.testing.assert_allclose(cvr_probabilities(model, x), p_cvr, atol=1e-7)
    assert model.task_names == ["ctr", "ctcvr"]
    # The CVR tower and the CTR tower read the same embedding.
    assert model.get_layer("cvr_tower_0").input is model.get_layer("ctr_hidden_0").input


def test_esmm_learns_on_the_entire_space_and_round_trips(tmp_path):
    x, y = click_data()
    model = esmm_model()
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    before = model.evaluate(x, y, verbose=0, return_dict=True)
    history = model.fit(x, y, batch_size=64, epochs=8, verbose=0)
    assert_finite_logs(history)
    after = model.evaluate(x, y, verbose=0, return_dict=True)
    assert after["loss"] < before["loss"] - 0.1, (before, after)
    # pCVR was never given a label, yet it ranks the converting users first
    # (true p(conversion | click): 0.6 for user 1, 0.1 for user 0).
    p_cvr = cvr_probabilities(model, x)[:, 0]
    np.testing.assert_allclose(
        [p_cvr[x[:, 1] == 3].mean(), p_cvr[x[:, 1] == 2].mean()], [0.6, 0.1], atol=0.15
    )
    loaded = run_model_saving_test(model, x[:8], tmp_path, atol=1e-6)
    np.testing.assert_allclose(cvr_probabilities(loaded, x[:8]), p_cvr[:8, None], atol=1e-6)


def test_esmm_bad_input():
    x = keras.Input((4,))
    ctr, ctcvr = mtl.tasks.MultiLabel("ctr", 1), mtl.tasks.MultiLabel("ctcvr", 1)
    with pytest.raises(ValueError, match="`ctcvr` must be a one-label MultiLabel"):
        esmm(x, x, ctr, mtl.tasks.Regression("ctcvr"))
    with pytest.raises(ValueError, match="`ctr` must be a one-label MultiLabel"):
        esmm(x, x, mtl.tasks.MultiLabel("ctr", 2), ctcvr)
    with pytest.raises(ValueError, match="no layers of its own.*`cvr_tower=`"):
        esmm(x, x, ctr, mtl.tasks.MultiLabel("ctcvr", 1, hidden_layers=[4]))
    with pytest.raises(ValueError, match="`cvr_name` 'ctr' is also a task's name"):
        esmm(x, x, ctr, ctcvr, cvr_name="ctr")
    with pytest.raises(ValueError, match="has no layer 'conversion'"):
        cvr_probabilities(esmm(x, x, ctr, ctcvr), np.ones((1, 4)), cvr_name="conversion")


# -- annealed sampling ---------------------------------------------------------

SIZES = {"a": 100, "b": 400, "c": 1600}


def powered(alpha):
    values = np.array(list(SIZES.values()), "float64") ** alpha
    return values / values.sum()


def test_annealed_probabilities_follow_the_formula():
    # E = 100 / 10 = 10 epochs; alpha = 1 - 0.8 e / 9.
    sampling = AnnealedSampling(SIZES, total_steps=100, steps_per_epoch=10)
    np.testing.assert_allclose(sampling.probabilities(0), [1 / 21, 4 / 21, 16 / 21])
    np.testing.assert_allclose(sampling.probabilities(9), [1 / 21, 4 / 21, 16 / 21])
    np.testing.assert_allclose(sampling.probabilities(45), powered(1 - 0.8 * 4 / 9))
    # Last epoch (steps 90-99): alpha 0.2, then held there.
    np.testing.assert_allclose(sampling.probabilities(90), powered(0.2))
    np.testing.assert_allclose(sampling.probabilities(10_000), powered(0.2))
    # By hand: 100^0.2, 400^0.2, 1600^0.2 = 2.512, 3.314, 4.373 -> 0.246, 0.325, 0.429
    np.testing.assert_allclose(sampling.probabilities(99), [0.2463, 0.3250, 0.4287], atol=1e-4)
    alphas = [sampling.alpha(s) for s in range(0, 120)]
    assert alphas[0] == 1.0 and alphas[-1] == 0.2 and alphas == sorted(alphas, reverse=True)
    for step in range(0, 120, 7):
        assert sampling.probabilities(step).sum() == pytest.approx(1.0, abs=1e-12)
    uniform = AnnealedSampling(SIZES, total_steps=4, steps_per_epoch=1, final_alpha=0.0)
    np.testing.assert_allclose(uniform.probabilities(3), [1 / 3] * 3)


def indexed(index, size):
    x = np.full((size, 1), index, "float32")
    return tf.data.Dataset.from_tensor_slices((x, {f"task{index}": np.zeros(size, "int32")}))


def test_annealed_draws_follow_the_probabilities():
    sets = {name: indexed(i, size) for i, (name, size) in enumerate(SIZES.items())}
    sampling = AnnealedSampling.from_datasets(sets, total_steps=100, steps_per_epoch=10)
    mixed = mix(sets, strategy="dynamic", sampler=sampling, seed=0)
    n = 3000
    for step in (0, 50, 99):
        expected = sampling.probabilities(step)
        sampling.weights.assign(expected.astype("float32"))
        x, _ = next(iter(mixed.batch(n)))  # a new iterator reads the new weights
        counts = np.bincount(x.numpy()[:, 0].astype(int), minlength=3) / n
        # Four binomial standard deviations (at most 0.037 at n = 3000).
        np.testing.assert_allclose(counts, expected, atol=4 * np.sqrt(0.25 / n))


def test_annealed_sampling_drives_the_weights_during_fit():
    rng = np.random.default_rng(0)
    x_a, x_b = rng.normal(size=(48, 4)), rng.normal(size=(16, 4))
    sets = {
        "species_corpus": tf.data.Dataset.from_tensor_slices(
            (x_a.astype("float32"), {"species": (x_a[:, 0] > 0).astype("int32")})),
        "size_corpus": tf.data.Dataset.from_tensor_slices(
            (x_b.astype("float32"), {"size": x_b[:, 1].astype("float32")})),
    }
    tasks = [mtl.tasks.Classification("species", 2), mtl.tasks.Regression("size")]
    inputs = keras.Input((4,))
    model = mtl.sharing.hard_sharing(inputs, inputs, tasks)
    model.compile(optimizer="sgd", run_eagerly=True)
    # Sizes given in the other order than the data sets: matched by name.
    sampling = AnnealedSampling({"size_corpus": 16, "species_corpus": 48},
                                total_steps=6, steps_per_epoch=2)
    train = mix(sets, strategy="dynamic", sampler=sampling, seed=0)
    assert sampling.current_weights() == {"species_corpus": 0.75, "size_corpus": 0.25}
    model.fit(train.batch(8), steps_per_epoch=2, epochs=3, verbose=0, callbacks=[sampling])
    # Epochs e = 0, 1, 2 of E = 3: alpha = 1, 0.6, 0.2 (weights in mix's order).
    for record, alpha in zip(sampling.history, (1.0, 0.6, 0.2)):
        expected = np.array([48.0, 16.0]) ** alpha
        np.testing.assert_allclose(
            [record["species_corpus"], record["size_corpus"]],
            expected / expected.sum(), atol=1e-5,
        )
    assert len(sampling.history) == 3


def test_annealed_bad_input():
    with pytest.raises(ValueError, match="`sizes`.*all > 0"):
        AnnealedSampling({"a": 0, "b": 3}, total_steps=10, steps_per_epoch=1)
    with pytest.raises(ValueError, match=r"`total_steps`.*total_steps=0"):
        AnnealedSampling([1, 2], total_steps=0, steps_per_epoch=1)
    with pytest.raises(ValueError, match="fewer than two"):
        AnnealedSampling([1, 2], total_steps=10, steps_per_epoch=10)
    with pytest.raises(ValueError, match=r"`final_alpha`.*final_alpha=1.5"):
        AnnealedSampling([1, 2], total_steps=10, steps_per_epoch=1, final_alpha=1.5)
    sets = [indexed(0, 5), indexed(1, 5)]
    with pytest.raises(ValueError, match=r"sizes for data sets \['a', 'b'\].*dataset_0"):
        mix(sets, strategy="dynamic",
            sampler=AnnealedSampling({"a": 1, "b": 2}, total_steps=4, steps_per_epoch=1))
    with pytest.raises(ValueError, match="has 3 sizes, the mixture has 2"):
        mix(sets, strategy="dynamic",
            sampler=AnnealedSampling([1, 2, 3], total_steps=4, steps_per_epoch=1))
    unknown = [ds.filter(lambda x, y: True) for ds in sets]
    with pytest.raises(ValueError, match="'dataset_0' is unknown or infinite"):
        AnnealedSampling.from_datasets(unknown, total_steps=4, steps_per_epoch=1)
