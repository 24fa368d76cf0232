"""Task sampling: strategy frequencies, missing markers, end-to-end training on
two disjoint data sets, dynamic weights and bad input."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasmtl as mtl
from harness import assert_finite_logs
from kerasmtl.data.dynamic_sampling import DynamicSampling
from kerasmtl.data.mixing import mix, padding_values


def indexed(index, size):
    """`size` examples whose feature is the data set's index."""
    x = np.full((size, 1), index, "float32")
    return tf.data.Dataset.from_tensor_slices((x, {f"task{index}": np.zeros(size, "int32")}))


def source_counts(ds, n):
    x, _ = next(iter(ds.take(n).batch(n)))
    return np.bincount(x.numpy()[:, 0].astype(int), minlength=3) / n


@pytest.mark.parametrize(
    "strategy,expected",
    [
        ("proportional", [1 / 14, 4 / 14, 9 / 14]),  # sizes 100, 400, 900
        ("temperature", [1 / 6, 2 / 6, 3 / 6]),  # sqrt sizes 10, 20, 30
        ("uniform", [1 / 3, 1 / 3, 1 / 3]),
    ],
)
def test_sampling_frequencies_match_the_strategy(strategy, expected):
    sets = [indexed(i, size) for i, size in enumerate([100, 400, 900])]
    # Repeated inputs: the strategy holds for every draw (sizes are read first).
    counts = source_counts(mix(sets, strategy=strategy, repeat=True, seed=0), 900)
    # 900 draws: three binomial standard deviations are at most 0.05
    np.testing.assert_allclose(counts, expected, atol=0.05)


def test_seeded_mixtures_repeat_and_explicit_sizes_replace_cardinality():
    sets = [indexed(i, 50) for i in range(3)]
    mixed = mix(sets, strategy="uniform", seed=3)
    first = next(iter(mixed.batch(150)))[0].numpy()
    again = next(iter(mix(sets, strategy="uniform", seed=3).batch(150)))[0].numpy()
    np.testing.assert_array_equal(first, again)
    # One pass yields every example once, whatever the order.
    np.testing.assert_array_equal(np.bincount(first[:, 0].astype(int)), [50, 50, 50])
    repeated = mix([sets[0].take(2), sets[1]], strategy="uniform", repeat=True, seed=0)
    np.testing.assert_allclose(source_counts(repeated, 90)[:2], [0.5, 0.5], atol=0.17)
    unknown = [ds.filter(lambda x, y: True) for ds in sets]
    with pytest.raises(ValueError, match="size of data set 'dataset_0' is unknown"):
        mix(unknown, strategy="proportional")
    sized = mix(unknown, strategy="proportional", weights=[0, 0, 1])
    assert {int(x[0]) for x, _ in sized.take(10)} == {2}


def test_missing_labels_are_marked_with_the_right_shape_and_dtype():
    tagged = tf.data.Dataset.from_generator(
        lambda: iter([(np.arange(3, dtype="int32"), {"pos": np.array([1, 2, 0], "int32")})]),
        output_signature=(
            tf.TensorSpec((None,), tf.int32), {"pos": tf.TensorSpec((None,), tf.int32)}
        ),
    )
    other = tf.data.Dataset.from_generator(
        lambda: iter([(np.array([7, 8], "int32"), {"size": np.array([0.5, 1.5]), "det": {
            "boxes": np.zeros((0, 4)), "classes": np.zeros((0,), "int32")}})]),
        output_signature=(tf.TensorSpec((2,), tf.int32), {
            "size": tf.TensorSpec((2,), tf.float32),
            "det": {"boxes": tf.TensorSpec((None, 4), tf.float32),
                    "classes": tf.TensorSpec((None,), tf.int32)}}),
    )
    mixed = mix({"tagged": tagged, "other": other}, strategy="uniform", seed=0)
    examples = {int(x[0]): y for x, y in mixed}
    tagged_y, other_y = examples[0], examples[7]
    np.testing.assert_array_equal(tagged_y["pos"], [1, 2, 0])
    assert np.isnan(tagged_y["size"]).all() and tagged_y["size"].shape == (2,)
    assert tagged_y["size"].dtype == tf.float32
    # An unknown dimension follows the first feature unknown on that axis (the
    # sequence length, here 3 tokens): boxes (3, 4) of NaN, classes of -1.
    assert tagged_y["det"]["boxes"].shape == (3, 4)
    assert np.isnan(tagged_y["det"]["boxes"]).all()
    np.testing.assert_array_equal(tagged_y["det"]["classes"], [-1, -1, -1])
    np.testing.assert_array_equal(other_y["pos"], [-1, -1])
    assert other_y["pos"].dtype == tf.int32
    x, y = next(iter(mixed.padded_batch(2, padding_values=padding_values(mixed))))
    row = {int(first): i for i, first in enumerate(x.numpy()[:, 0])}
    np.testing.assert_array_equal(x.numpy()[row[7]], [7, 8, 0])
    np.testing.assert_array_equal(y["pos"].numpy()[row[7]], [-1, -1, -1])
    np.testing.assert_array_equal(y["pos"].numpy()[row[0]], [1, 2, 0])
    assert np.isnan(y["det"]["boxes"].numpy()[row[7]]).all()  # padded with NaN


def disjoint_datasets():
    rng = np.random.default_rng(0)
    x_a = rng.normal(size=(48, 4)).astype("float32")
    x_b = rng.normal(size=(16, 4)).astype("float32")
    species = (x_a[:, 0] > 0).astype("int32") + (x_a[:, 1] > 0).astype("int32")
    size = x_b @ np.array([1.0, -1.0, 0.5, 0.0], "float32")
    return {
        "species_corpus": tf.data.Dataset.from_tensor_slices((x_a, {"species": species})),
        "size_corpus": tf.data.Dataset.from_tensor_slices((x_b, {"size": size})),
    }


def test_fit_on_two_disjoint_data_sets_trains_both_tasks():
    tasks = [mtl.tasks.Classification("species", 3), mtl.tasks.Regression("size")]
    inputs = keras.Input((4,))
    model = mtl.sharing.hard_sharing(inputs, keras.layers.Dense(8)(inputs), tasks)
    model.compile(optimizer=keras.optimizers.Adam(0.01), run_eagerly=True)
    heads = {n: model.get_layer(n).kernel.numpy().copy() for n in ("species", "size")}
    train = mix(disjoint_datasets(), strategy="proportional", seed=0).batch(16)
    history = model.fit(train, epochs=2, verbose=0)
    assert_finite_logs(history)
    for name, kernel in heads.items():
        assert history.history[f"loss/{name}"][-1] > 0
        assert not np.allclose(model.get_layer(name).kernel.numpy(), kernel), name


def test_dynamic_weights_are_read_at_every_draw():
    sampling = DynamicSampling({"task0": ("task0_score", 1.0)})
    sets = [indexed(i, 100) for i in range(2)]
    iterator = iter(mix(sets, strategy="dynamic", sampler=sampling, weights=[1, 0]))
    assert {int(next(iterator)[0][0]) for _ in range(20)} == {0}
    sampling.weights.assign([0.0, 1.0])
    for _ in range(10):  # elements possibly drawn ahead with the old weights
        next(iterator)
    assert [int(next(iterator)[0][0]) for _ in range(20)] == [1] * 20


def test_dynamic_sampling_moves_weight_toward_the_lagging_task():
    sampling = DynamicSampling(
        {"species": ("val_species/accuracy", 0.9), "size": ("val_size/mae", 0.1)},
        smoothing=0.5, min_weight=0.0,
    )
    mix(disjoint_datasets(), strategy="dynamic", sampler=sampling)
    assert sampling.current_weights() == {"species_corpus": 0.5, "size_corpus": 0.5}
    # species: (0.9 - 0.81) / 0.9 = 0.1 short; size (lower is better):
    # (0.4 - 0.1) / 0.1 = 3 short -> q = (1/31, 30/31)
    sampling.on_epoch_end(0, {"val_species/accuracy": 0.81, "val_size/mae": 0.4})
    expected = 0.5 * 0.5 + 0.5 * 30 / 31
    assert sampling.current_weights()["size_corpus"] == pytest.approx(expected, abs=1e-5)
    before = sampling.current_weights()
    sampling.on_epoch_end(1, {"val_species/accuracy": 0.95, "val_size/mae": 0.05})
    assert sampling.current_weights() == before  # every target met: no change
    with pytest.raises(ValueError, match="'val_size/mae' of task 'size' is not in"):
        sampling.on_epoch_end(2, {"val_species/accuracy": 0.5})


def test_dynamic_sampling_during_fit():
    tasks = [mtl.tasks.Classification("species", 3), mtl.tasks.Regression("size")]
    inputs = keras.Input((4,))
    model = mtl.sharing.hard_sharing(inputs, inputs, tasks)
    model.compile(optimizer="sgd", run_eagerly=True)
    sampling = DynamicSampling({"size": ("loss/size", 1e-6)}, min_weight=0.1)
    train = mix(disjoint_datasets(), strategy="dynamic", sampler=sampling, seed=0)
    model.fit(train.batch(16).repeat(), steps_per_epoch=1, epochs=2, verbose=0,
              callbacks=[sampling])
    # Only 'size' has a target: q = (0, 1) each epoch, so with smoothing 0.5
    # and floor 0.1: 0.1 + 0.8 * (0.5 * 0.5 + 0.5) = 0.7, then
    # 0.1 + 0.8 * (0.5 * 0.7 + 0.5) = 0.78.
    assert [h["size_corpus"] for h in sampling.history] == pytest.approx([0.7, 0.78])


def test_dynamic_mixture_without_steps_per_epoch_is_refused():
    # The dynamic mixture is endless: without steps_per_epoch, fit used to run
    # forever with the weights never updated.
    tasks = [mtl.tasks.Classification("species", 3), mtl.tasks.Regression("size")]
    inputs = keras.Input((4,))
    model = mtl.sharing.hard_sharing(inputs, inputs, tasks)
    model.compile(optimizer="sgd")
    sampling = DynamicSampling({"size": ("loss/size", 1e-6)})
    train = mix(disjoint_datasets(), strategy="dynamic", sampler=sampling, seed=0)
    with pytest.raises(ValueError, match="no `steps_per_epoch`.*never end"):
        model.fit(train.batch(16), epochs=1, verbose=0, callbacks=[sampling])
    assert sampling.history == []


def test_bad_input():
    a = tf.data.Dataset.from_tensor_slices((np.zeros((2, 3), "float32"), {"a": [0, 1]}))
    b = tf.data.Dataset.from_tensor_slices((np.zeros((2, 4), "float32"), {"b": [0, 1]}))
    with pytest.raises(ValueError, match="features of data set 'b'.*do not match.*'a'"):
        mix({"a": a, "b": b})
    c = tf.data.Dataset.from_tensor_slices((np.zeros((2, 3), "float32"), {"a": [0.5, 1]}))
    with pytest.raises(ValueError, match="Task 'a' has labels.*data set 'c'.*data set 'a'"):
        mix({"a": a, "c": c})
    with pytest.raises(ValueError, match=r"`strategy`.*strategy='random'"):
        mix([a], strategy="random")
    with pytest.raises(ValueError, match="needs `sampler=DynamicSampling"):
        mix([a], strategy="dynamic")
    with pytest.raises(ValueError, match=r"`temperature`.*temperature=0"):
        mix([a], strategy="temperature", temperature=0)
    with pytest.raises(ValueError, match="one non-negative number per data set"):
        mix([a], weights=[-1])
    with pytest.raises(ValueError, match=r"`weights` has keys \['x'\].*\['a', 'c'\]"):
        mix({"a": a, "c": a}, weights={"x": 1.0})
    with pytest.raises(ValueError, match=r"must yield \(features, \{task: label\}\)"):
        mix([tf.data.Dataset.range(3)])
    with pytest.raises(ValueError, match="task 's'.*dtype string"):
        mix([tf.data.Dataset.from_tensors((1.0, {"s": "x"})),
             tf.data.Dataset.from_tensors((1.0, {"a": 0}))])
    with pytest.raises(ValueError, match=r"targets for task\(s\) \['c'\]"):
        mix([a], strategy="dynamic", sampler=DynamicSampling({"c": ("m", 1.0)}))
    with pytest.raises(ValueError, match="'dynamic' draws from repeated data sets"):
        mix([a], strategy="dynamic", sampler=DynamicSampling({"a": ("m", 1.0)}),
            repeat=False)
    with pytest.raises(ValueError, match="Invalid target for task 'a'"):
        DynamicSampling({"a": "accuracy"})
