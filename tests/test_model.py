"""MultiTaskModel: the foundation issue's contract, masking, errors, overrides."""

import glob
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasmtl as mtl
from harness import (
    assert_finite_logs,
    contract_model,
    run_model_saving_test,
    tiny_model,
)
from kerasmtl.data import synthetic_tabular
from kerasmtl.tasks import synthetic_tabular_tasks


def test_issue_contract(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype("float32")
    ys = rng.integers(-1, 3, 64)
    yr = rng.normal(size=64).astype("float32")
    yr[::5] = np.nan
    yt = rng.integers(-1, 2, (64, 5))
    model = contract_model(units=16)
    model.compile(optimizer="adam")
    history = model.fit(x, {"species": ys, "size": yr, "tags": yt}, epochs=2, verbose=0)
    assert_finite_logs(history)
    expected = {"loss", "species/accuracy", "size/mae", "tags/f1"}
    expected |= {f"{k}/{t}" for k in ("loss", "weight") for t in ("species", "size", "tags")}
    assert expected <= set(history.history)
    assert isinstance(model, mtl.MultiTaskModel)
    assert set(model.predict(x[:4], verbose=0)) == {"species", "size", "tags"}
    run_model_saving_test(model, x[:8], tmp_path)


def test_per_task_epoch_loss_is_the_masked_mean_over_known_labels():
    # One linear regression head, no trunk training: the epoch's loss/<task> must
    # equal the mean squared error over the known labels only.
    x = np.ones((6, 1), "float32")
    y = np.array([1.0, np.nan, 3.0, np.nan, np.nan, 5.0], "float32")
    task = mtl.tasks.Regression("r")
    inputs = keras.Input((1,))
    model = mtl.MultiTaskModel(inputs, {"r": task.build_head(inputs)}, tasks=[task])
    model.get_layer("r").set_weights([np.zeros((1, 1)), np.zeros(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    logs = model.evaluate(x, {"r": y}, batch_size=2, verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["loss/r"], (1 + 9 + 25) / 3, rtol=1e-6)


def test_a_batch_without_labels_for_a_task_trains_the_others():
    x, y = synthetic_tabular(64, missing_rate=0.0, seed=0)
    y["size"][:] = np.nan  # no size label at all
    model = tiny_model(synthetic_tabular_tasks())
    model.compile(optimizer="adam")
    history = model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert_finite_logs(history)
    assert history.history["loss/size"] == [0.0, 0.0]
    before = model.get_layer("species").get_weights()[0].copy()
    model.fit(x, y, epochs=1, verbose=0)
    assert not np.allclose(before, model.get_layer("species").get_weights()[0])


def test_tf_data_pipeline_and_sample_weights():
    x, y = synthetic_tabular(64, seed=0)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    model = tiny_model(synthetic_tabular_tasks())
    model.compile(optimizer="adam")
    assert_finite_logs(model.fit(ds, epochs=1, verbose=0))
    weights = np.linspace(0.0, 1.0, 64).astype("float32")
    assert_finite_logs(model.fit(x, y, sample_weight=weights, epochs=1, verbose=0))


def test_validation_data_as_arrays_and_as_a_dataset():
    x, y = synthetic_tabular(64, seed=0)
    model = tiny_model(synthetic_tabular_tasks())
    model.compile(optimizer="adam")
    history = model.fit(x, y, validation_data=(x, y), epochs=1, verbose=0)
    assert "val_loss/size" in history.history and "val_species/accuracy" in history.history
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    history = model.fit(ds, validation_data=ds, epochs=1, verbose=0)
    assert_finite_logs(history)
    bad = ds.map(lambda a, b: (a, {"species": b["species"]}))
    with pytest.raises(ValueError, match=r"No labels for task\(s\) \['size', 'tags'\]"):
        model.fit(ds, validation_data=bad, epochs=1, verbose=0)


def test_tensorboard_gets_per_task_weights_and_losses(tmp_path):
    x, y = synthetic_tabular(32, seed=0)
    model = tiny_model(synthetic_tabular_tasks(), weighting=mtl.weighting.Uncertainty())
    model.compile(optimizer="adam")
    model.fit(x, y, epochs=1, verbose=0, callbacks=[keras.callbacks.TensorBoard(str(tmp_path))])
    tags = set()
    for path in glob.glob(str(tmp_path / "train" / "events*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags |= {v.tag for v in event.summary.value}
    assert {"epoch_weight/species", "epoch_loss/tags"} <= tags


def test_compile_overrides_loss_and_metrics():
    x, y = synthetic_tabular(64, seed=0)
    model = tiny_model(synthetic_tabular_tasks())
    model.compile(
        optimizer="adam",
        loss={"size": "mae"},
        metrics={"species": ["accuracy", keras.metrics.SparseTopKCategoricalAccuracy(k=2, name="top2")]},
    )
    logs = model.fit(x, y, epochs=1, verbose=0).history
    assert "species/top2" in logs and "species/accuracy" in logs
    assert "size/mae" in logs  # default metrics of other tasks stay
    pred = model.predict(x, verbose=0)["size"][:, 0]
    known = ~np.isnan(y["size"])
    logs = model.evaluate(x, y, verbose=0, return_dict=True, batch_size=64)
    np.testing.assert_allclose(logs["loss/size"], np.abs(pred - y["size"])[known].mean(), rtol=1e-4)


def test_compile_errors():
    model = tiny_model(synthetic_tabular_tasks())
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['colour'\]"):
        model.compile(loss={"colour": "mse"})
    with pytest.raises(ValueError, match="loss_weight"):
        model.compile(loss_weights={"size": 2.0})


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda y: y.pop("tags"), r"No labels for task\(s\) \['tags'\].*-1.*NaN"),
        (lambda y: y.update(colour=np.zeros(8)), r"unknown task\(s\) \['colour'\]"),
        (lambda y: y.update(tags=np.zeros((8, 4))), r"'tags' \(multi_label\) have shape \(8, 4\), expected \(None, 5\)"),
        (lambda y: y.update(species=np.full(8, np.nan)), r"'species' \(classification\) contain NaN"),
        (lambda y: y.update(species=np.full(8, 7)), r"'species'.*\[-1, 3\)"),
    ],
)
def test_bad_labels_raise_clear_errors(mutate, message):
    x, y = synthetic_tabular(8, seed=0)
    mutate(y)
    model = tiny_model(synthetic_tabular_tasks())
    model.compile(optimizer="adam")
    with pytest.raises(ValueError, match=message):
        model.fit(x, y, epochs=1, verbose=0)


def test_bad_labels_in_a_dataset_raise_clear_errors():
    x, y = synthetic_tabular(8, seed=0)
    y["tags"] = y["tags"][:, :4]
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    model = tiny_model(synthetic_tabular_tasks())
    model.compile(optimizer="adam")
    with pytest.raises(ValueError, match=r"'tags'.*\(None, 4\).*\(None, 5\)"):
        model.fit(ds, epochs=1, verbose=0)


def test_nan_class_label_inside_a_dataset_is_caught_in_graph():
    x, y = synthetic_tabular(8, seed=0)
    y["species"] = y["species"].astype("float32")
    y["species"][3] = np.nan
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    model = tiny_model(synthetic_tabular_tasks())
    model.compile(optimizer="adam")
    # checked in the graph, re-raised as the ValueError numpy labels get
    with pytest.raises(ValueError, match=r"'species' \(classification\).*NaN.*first: nan"):
        model.fit(ds, epochs=1, verbose=0)


def test_duplicate_task_names():
    tasks = [mtl.tasks.Regression("a"), mtl.tasks.Classification("a", 2)]
    with pytest.raises(ValueError, match=r"Task name\(s\) \['a'\] used more than once"):
        tiny_model(tasks)


def test_outputs_must_match_tasks():
    x = keras.Input((3,))
    task = mtl.tasks.Regression("a")
    with pytest.raises(ValueError, match="dict keyed by task name"):
        mtl.MultiTaskModel(x, task.build_head(x), tasks=[task])
    with pytest.raises(ValueError, match=r"outputs \['b'\] do not match.*\['a'\]"):
        mtl.MultiTaskModel(x, {"b": task.build_head(x)}, tasks=[task])


def test_postprocess_and_task_lookup():
    model = tiny_model(synthetic_tabular_tasks())
    x, _ = synthetic_tabular(4, seed=0)
    out = model.postprocess(model(x))
    assert set(out) == {"species_prediction", "size_prediction", "tags_prediction"}
    assert model.get_task("size").kind == "regression"
    with pytest.raises(KeyError, match="No task named 'colour'"):
        model.get_task("colour")


def test_recompile_replaces_metrics():
    x, y = synthetic_tabular(32, seed=0)
    model = tiny_model(synthetic_tabular_tasks())
    model.compile(optimizer="adam")
    model.compile(optimizer="adam", metrics={"species": ["accuracy"], "size": [], "tags": []})
    logs = model.fit(x, y, epochs=1, verbose=0).history
    assert "size/mae" not in logs and "species/accuracy" in logs


@pytest.mark.parametrize("weighting", [None, "pcgrad"])
def test_train_metrics_false_computes_task_metrics_in_evaluation_only(weighting, tmp_path):
    x, y = synthetic_tabular(64, missing_rate=0.2, seed=0)
    tasks = synthetic_tabular_tasks()
    model = tiny_model(tasks, **({"weighting": mtl.weighting.PCGrad()} if weighting else {}))
    model.compile(optimizer="adam", train_metrics=False)
    history = model.fit(x, y, epochs=2, batch_size=16, verbose=0,
                        validation_data=(x[:32], {k: v[:32] for k, v in y.items()}))
    logs = set(history.history)
    assert {"loss", "loss/species", "weight/tags", "val_species/accuracy",
            "val_size/mae", "val_tags/f1"} <= logs, sorted(logs)
    assert not {"species/accuracy", "size/mae", "tags/f1"} & logs, sorted(logs)
    assert_finite_logs(history)
    evaluated = model.evaluate(x, y, verbose=0, return_dict=True)
    assert 0.0 <= evaluated["species/accuracy"] <= 1.0
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded._train_metrics is False
    assert "species/accuracy" not in loaded.fit(x, y, epochs=1, verbose=0).history
    model.compile(optimizer="adam")  # the default computes them again
    assert "species/accuracy" in model.fit(x, y, epochs=1, verbose=0).history


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        x, y = synthetic_tabular(64, seed=0)
        model = tiny_model(synthetic_tabular_tasks(), weighting=mtl.weighting.Uncertainty())
        model.compile(optimizer="adam")
        assert model.weighting.compute_dtype == "float32"
        assert_finite_logs(model.fit(x, y, epochs=2, verbose=0))
        outputs = model.predict(x[:4], verbose=0)
        assert all(v.dtype == np.float32 for v in outputs.values())
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_zero_loss_weight_task_is_monitored_not_trained():
    # loss_weight=0: the task does not train, but loss/<task> still reports its
    # masked mean loss (here the MSE of an all-zero head on labels 1, 3 -> 5).
    x = np.ones((4, 1), "float32")
    y = {"r": np.array([1.0, np.nan, 3.0, np.nan], "float32"), "c": np.zeros(4, "int32")}
    tasks = [mtl.tasks.Regression("r", loss_weight=0.0), mtl.tasks.Classification("c", 2)]
    inputs = keras.Input((1,))
    model = mtl.sharing.hard_sharing(inputs, inputs, tasks)
    model.get_layer("r").set_weights([np.zeros((1, 1)), np.zeros(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["loss/r"], (1 + 9) / 2, rtol=1e-6)
    np.testing.assert_allclose(logs["loss"], logs["loss/c"], rtol=1e-6)


def test_fit_on_a_dataset_does_not_pass_keras_an_ignored_shuffle():
    x, y = synthetic_tabular(32, seed=0)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    model = tiny_model(synthetic_tabular_tasks())
    model.compile(optimizer="adam")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(ds, epochs=1, verbose=0)
    assert not [w for w in caught if "shuffle" in str(w.message)]
    with pytest.warns(UserWarning, match="`shuffle=True` was passed"):
        model.fit(ds, epochs=1, shuffle=True, verbose=0)  # the user's own choice


def test_a_lambda_hidden_layer_builds_trains_and_loads_unsafe_only(tmp_path):
    task = mtl.tasks.Regression(
        "size", hidden_layers=[keras.layers.Lambda(lambda z: z * 2.0), 4]
    )
    model = tiny_model([task, mtl.tasks.Classification("species", num_classes=3)])
    assert isinstance(model.get_layer("size_hidden_0"), keras.layers.Lambda)
    x, y = synthetic_tabular(32, seed=0)
    model.compile(optimizer="adam")
    assert_finite_logs(model.fit(x, {k: y[k] for k in ("size", "species")}, verbose=0))
    path = str(tmp_path / "lambda.keras")
    model.save(path)
    with pytest.raises(ValueError, match="safe_mode=False"):
        keras.models.load_model(path)
    loaded = keras.models.load_model(path, safe_mode=False)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0)["size"], model.predict(x, verbose=0)["size"], atol=1e-6
    )


def test_a_lambda_hidden_layer_given_as_a_config_dict_stays_in_safe_mode():
    spec = keras.saving.serialize_keras_object(keras.layers.Lambda(lambda z: z + 1.0))
    task = mtl.tasks.Regression("size", hidden_layers=[spec])
    with pytest.raises(ValueError, match="safe_mode=False"):
        task.build_head(keras.Input((4,)))
