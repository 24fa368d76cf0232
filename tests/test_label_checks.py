"""Label values are checked on every input path: numpy arrays before `fit`
(eagerly) and tf.data batches in the graph (`Task.assert_label_values`),
both ending in a ValueError that names the task and the bad value."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasmtl as mtl

X = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")


def build(*tasks, weighting=None):
    inputs = keras.Input((4,))
    shared = keras.layers.Dense(8, activation="relu")(inputs)
    model = mtl.sharing.hard_sharing(inputs, shared, list(tasks), weighting=weighting)
    model.compile(optimizer="sgd")
    return model


def fit_dataset(model, y, x=X):
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    return model.fit(dataset, epochs=1, verbose=0)


GOOD = {"species": np.array([0, 1, 2, -1] * 2), "tags": np.zeros((8, 2), "int32")}


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"species": np.full(8, 7)},
         r"task 'species' \(classification\) must be class ids in \[0, 3\) or -1"
         r".*Bad values in this batch: 4, the first: 7\."),
        ({"species": np.array([0, 1, -2, 0] * 2)}, r"'species'.*the first: -2\."),
        ({"species": np.full(8, np.nan, "float32")},
         r"'species'.*integer ids; NaN marks a missing \*float\* label.*first: nan"),
        ({"species": np.full(8, 1.5, "float32")}, r"'species'.*first: 1\.5"),
        ({"tags": np.full((8, 2), 2)},
         r"task 'tags' \(multi_label\) must be -1 \(missing\), 0 or 1.*first: 2\."),
    ],
)
def test_tf_data_labels_are_checked_in_the_graph(bad, message):
    model = build(mtl.tasks.Classification("species", 3),
                  mtl.tasks.MultiLabel("tags", num_labels=2))
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match=message):
        fit_dataset(model, {**GOOD, **bad})
    with pytest.raises(ValueError, match=r"'(species|tags)'"):
        model.evaluate(tf.data.Dataset.from_tensor_slices((X, {**GOOD, **bad})).batch(4),
                       verbose=0)
    # the first batch already fails: no update was applied
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_valid_tf_data_labels_train_also_with_a_balancer():
    for weighting in (None, mtl.weighting.PCGrad()):
        model = build(mtl.tasks.Classification("species", 3),
                      mtl.tasks.MultiLabel("tags", num_labels=2), weighting=weighting)
        logs = fit_dataset(model, GOOD).history
        assert np.isfinite(logs["loss"][0])
    # a balancer's own train step checks labels as well
    model = build(mtl.tasks.Classification("species", 3),
                  mtl.tasks.MultiLabel("tags", num_labels=2),
                  weighting=mtl.weighting.MGDA())
    with pytest.raises(ValueError, match=r"'species'.*first: 7\."):
        fit_dataset(model, {**GOOD, "species": np.full(8, 7)})


def test_other_kinds_are_checked_in_the_graph():
    model = build(mtl.tasks.Regression("size"))
    with pytest.raises(ValueError, match=r"'size' \(regression\) must be finite.*inf"):
        fit_dataset(model, {"size": np.array([1.0, np.inf] * 4, "float32")})
    fit_dataset(model, {"size": np.array([1.0, np.nan] * 4, "float32")})  # NaN: missing

    inputs = keras.Input((None,), dtype="int32")
    features = keras.layers.Embedding(10, 4)(inputs)
    tagger = mtl.sharing.hard_sharing(
        inputs, features, [mtl.tasks.Tagging("pos", num_tags=3)])
    tagger.compile(optimizer="sgd")
    tokens = np.ones((8, 5), "int32")
    tags = np.zeros((8, 5), "int32")
    tags[3, 2] = 5
    with pytest.raises(ValueError, match=r"'pos' \(tagging\) must be tag ids in "
                                         r"\[0, num_tags=3\).*the first: 5\."):
        fit_dataset(tagger, {"pos": tags}, x=tokens)


def test_segmentation_and_detection_labels_in_the_graph():
    image = keras.Input((32, 32, 3))
    features = keras.layers.Conv2D(4, 3, strides=4, padding="same")(image)
    seg = mtl.sharing.hard_sharing(
        image, features, [mtl.tasks.Segmentation("seg", 3, ignore_class=255)])
    seg.compile(optimizer="sgd")
    images = np.zeros((4, 32, 32, 3), "float32")
    masks = np.zeros((4, 32, 32), "int32")
    masks[0, 0, :4] = 255  # the ignore class is fine
    fit_dataset(seg, {"seg": masks}, x=images)
    masks[1, 5, 5] = 9
    with pytest.raises(ValueError, match=r"'seg' \(segmentation\).*ignore class 255"
                                         r".*the first: 9\."):
        fit_dataset(seg, {"seg": masks}, x=images)

    det = mtl.sharing.hard_sharing(
        image, features, [mtl.tasks.Detection("det", num_classes=2, max_boxes=2)])
    det.compile(optimizer="sgd")
    boxes = np.tile(np.array([[2, 2, 12, 12], [0, 0, 0, 0]], "float32"), (4, 1, 1))
    classes = np.tile(np.array([1, -1], "int32"), (4, 1))
    fit_dataset(det, {"det": {"boxes": boxes, "classes": classes}}, x=images)
    classes[2, 0] = 4
    with pytest.raises(ValueError, match=r"'det' \(detection\) must be class ids in "
                                         r"\[0, 2\) or -1.*the first: 4\."):
        fit_dataset(det, {"det": {"boxes": boxes, "classes": classes}}, x=images)


def test_string_labels_get_a_clear_error_on_both_paths():
    model = build(mtl.tasks.Classification("species", 3))
    names = np.array(["cat", "dog"] * 4)
    with pytest.raises(ValueError, match=r"'species'.*strings.*integer ids"):
        model.fit(X, {"species": names}, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"'species'.*strings.*StringLookup"):
        fit_dataset(model, {"species": names})


def test_integer_regression_labels_with_minus_one_warn():
    model = build(mtl.tasks.Regression("size"))
    with pytest.warns(UserWarning, match=r"'size'.*integers.*-1.*NaN"):
        model.fit(X, {"size": np.array([3, -1] * 4)}, epochs=1, verbose=0)
