"""A new kind of task defined in this file alone: `Count` (Poisson regression of
event counts). It trains with a missing-label mask, is checked, evaluated
(batch metrics and a data-set-level evaluator), saved as `.keras`, loaded and
exported as a SavedModel, through the library's public API and nothing else:
the `Task` contract is the one extension point (DESIGN.md)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

import kerasmtl as mtl


class ExactCountRate:
    """Data-set-level evaluator: the share of known labels predicted exactly."""

    def __init__(self, name):
        self.name, self.hits, self.known = name, 0, 0

    def update(self, labels, predictions):
        labels = np.asarray(labels[self.name] if isinstance(labels, dict) else labels)
        labels = labels.reshape(-1)
        predicted = np.asarray(predictions[f"{self.name}_prediction"]).reshape(-1)
        known = ~np.isnan(labels)
        self.hits += int((predicted[known] == labels[known]).sum())
        self.known += int(known.sum())

    def result(self):
        return {"exact_rate": self.hits / max(self.known, 1)}


@keras.saving.register_keras_serializable(package="kerasmtl_test")
class Count(mtl.tasks.Task):
    """Non-negative event counts; NaN marks a missing label."""

    kind = "count"
    elementwise = True
    label_dtype = "float32"
    primary_metric = "mae"
    higher_is_better = False
    output_shape = (1,)
    label_shape = (1,)

    def make_output_layer(self):
        # log-rate head; exp() keeps the Poisson rate positive.
        return keras.layers.Dense(1, activation="exponential", name=self.name,
                                  dtype="float32")

    def label_help(self):
        return "Pass counts >= 0, and NaN for a missing count."

    def valid_label_values(self, labels):
        ok = tf.logical_or(tf.math.is_nan(labels), labels >= 0)
        return ok, "counts >= 0, or NaN for a missing count"

    def standardize_labels(self, y):
        y = ops.reshape(ops.cast(ops.convert_to_tensor(y), "float32"), (-1, 1))
        known = ops.logical_not(ops.isnan(y))
        return ops.where(known, y, 0.0), ops.cast(known, "float32")

    def element_loss(self, y_true, y_pred):
        return y_pred - y_true * ops.log(y_pred + 1e-7)  # Poisson deviance, up to a constant

    def default_metrics(self):
        return [keras.metrics.MeanAbsoluteError(name="mae")]

    def dataset_evaluator(self):
        return ExactCountRate(self.name)

    def postprocess(self, y_pred):
        # The most likely count of a Poisson(rate) is floor(rate).
        return {f"{self.name}_prediction": ops.cast(ops.floor(y_pred), "int32")}


def _data(n=512, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    visits = rng.poisson(np.exp(0.8 * x[:, 0] + 0.5)).astype("float32")
    visits[rng.random(n) < 0.3] = np.nan  # missing labels are masked, not dropped
    species = (x[:, 1] > 0).astype("int32")
    return x, {"visits": visits, "species": species}


def _model():
    keras.utils.set_random_seed(0)
    tasks = [Count("visits"), mtl.tasks.Classification("species", num_classes=2)]
    x = keras.Input((4,), name="features")
    trunk = keras.layers.Dense(16, activation="relu", name="trunk")(x)
    model = mtl.sharing.hard_sharing(x, trunk, tasks)
    model.compile(optimizer=keras.optimizers.Adam(0.02))
    return model


def test_a_task_kind_defined_outside_the_library_trains_evaluates_saves_and_exports(tmp_path):
    x, y = _data()
    model = _model()
    before = mtl.evaluation.task_report(model, x, y)["visits"]["loss"]
    model.fit(x, y, epochs=15, batch_size=64, verbose=0)
    report = mtl.evaluation.task_report(model, x, y)
    assert report["visits"]["loss"] < before - 0.2
    known = y["visits"][~np.isnan(y["visits"])]
    constant_mae = np.abs(known - np.median(known)).mean()  # the best constant
    assert report["visits"]["mae"] < 0.9 * constant_mae
    assert report["species"]["accuracy"] > 0.9

    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(128)
    exact = mtl.evaluation.dataset_metrics(model, dataset)
    assert list(exact) == ["visits"] and 0.2 < exact["visits"]["exact_rate"] <= 1.0

    # .keras round trip: same outputs and post-processing.
    path = tmp_path / "count.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.get_task("visits"), Count)
    np.testing.assert_allclose(loaded.predict(x, verbose=0)["visits"],
                               model.predict(x, verbose=0)["visits"], rtol=1e-5)

    # SavedModel: the raw rate and the task's own post-processing.
    signature = tf.saved_model.load(
        mtl.export.export_saved_model(loaded, tmp_path / "export")
    ).signatures["serving_default"]
    out = signature(features=tf.constant(x[:8]))
    rate = model.predict(x[:8], verbose=0)["visits"]
    np.testing.assert_allclose(out["visits"].numpy(), rate, rtol=1e-5)
    np.testing.assert_array_equal(out["visits_prediction"].numpy(), np.floor(rate).astype("int32"))


def test_the_new_kind_gets_the_library_label_checks():
    x, y = _data(64)
    y["visits"][3] = -2.0
    model = _model()
    with pytest.raises(ValueError, match=r"'visits' \(count\).*counts >= 0"):
        model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(32), epochs=1, verbose=0)
