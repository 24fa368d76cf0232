"""Evaluation: Δm and joint metrics by hand, task reports, the MTL/STL comparison."""

import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasmtl as mtl
from harness import tiny_model
from kerasmtl import evaluation
from kerasmtl.data import synthetic_tabular
from kerasmtl.evaluation import (
    compare_with_single_task,
    delta_m,
    joint_metrics,
    task_report,
)
from kerasmtl.tasks import synthetic_tabular_tasks

TASK_NAMES = ["species", "size", "tags"]


# -- delta_m --------------------------------------------------------------------


def test_delta_m_worked_example():
    # accuracy (higher is better): (0.80 - 0.75) / 0.75 = +0.0666667
    # MAE (lower is better):      -(0.9 - 1.0) / 1.0   = +0.1
    # delta_m = (0.0666667 + 0.1) / 2 = 0.0833333
    value = delta_m(
        {"species": 0.80, "size": 0.9},
        {"species": 0.75, "size": 1.0},
        {"species": True, "size": False},
    )
    assert value == pytest.approx(0.0833333, abs=1e-6)


def test_delta_m_mixed_directions_and_signs():
    # acc  (up):   (0.6 - 0.8) / 0.8 = -0.25    (MTL worse)
    # mae  (down): -(1.2 - 1.0) / 1.0 = -0.2    (MTL worse)
    # f1   (up):   (0.5 - 0.4) / 0.4 = +0.25    (MTL better)
    # rmse (down): -(1.5 - 2.0) / 2.0 = +0.25   (MTL better)
    # delta_m = (-0.25 - 0.2 + 0.25 + 0.25) / 4 = 0.0125
    value = delta_m(
        {"acc": 0.6, "mae": 1.2, "f1": 0.5, "rmse": 1.5},
        {"acc": 0.8, "mae": 1.0, "f1": 0.4, "rmse": 2.0},
        {"acc": True, "mae": False, "f1": True, "rmse": False},
    )
    assert value == pytest.approx(0.0125, abs=1e-12)
    assert delta_m({"a": 0.7}, {"a": 0.7}, {"a": True}) == 0.0


def test_delta_m_negative_baseline_keeps_the_sign_meaning():
    # A higher-is-better score of -0.25 beats -0.5: +(−0.25 + 0.5) / |−0.5| = +0.5.
    assert delta_m({"r": -0.25}, {"r": -0.5}, {"r": True}) == pytest.approx(0.5)


def test_delta_m_errors():
    with pytest.raises(ValueError, match="Task 'size' is in `mtl` but not in `stl`"):
        delta_m(
            {"species": 0.8, "size": 1.0}, {"species": 0.7}, {"species": True, "size": False}
        )
    with pytest.raises(ValueError, match="Task 'tags' is in `stl` but not in `mtl`"):
        delta_m({"a": 1.0}, {"a": 1.0, "tags": 0.5}, {"a": True})
    with pytest.raises(ValueError, match="'b' is in `mtl` but not in `higher_is_better`"):
        delta_m({"a": 1.0, "b": 1.0}, {"a": 1.0, "b": 1.0}, {"a": True})
    with pytest.raises(ValueError, match="single-task value of task 'tags' is 0"):
        delta_m({"a": 0.5, "tags": 0.3}, {"a": 0.5, "tags": 0.0}, {"a": True, "tags": True})
    with pytest.raises(ValueError, match="at least one task"):
        delta_m({}, {}, {})


# -- joint_metrics ---------------------------------------------------------------


def test_joint_metrics_by_hand():
    values = {"a": 0.9, "b": 0.5, "c": 0.1}
    # mean = 1.5 / 3 = 0.5; weighted = (2*0.9 + 1*0.5 + 1*0.1) / 4 = 2.4 / 4 = 0.6
    result = joint_metrics(values, {"a": 2.0, "b": 1.0, "c": 1.0})
    assert result == pytest.approx({"mean": 0.5, "weighted_mean": 0.6})
    assert joint_metrics(values) == pytest.approx({"mean": 0.5, "weighted_mean": 0.5})
    # A zero weight drops a task: (0.9 + 0.5) / 2 = 0.7.
    result = joint_metrics(values, {"a": 1.0, "b": 1.0, "c": 0.0})
    assert result["weighted_mean"] == pytest.approx(0.7)


def test_joint_metrics_errors():
    values = {"a": 0.9, "b": 0.5}
    with pytest.raises(ValueError, match=r"`weights` name task\(s\) \['a', 'z'\]"):
        joint_metrics(values, {"a": 1.0, "z": 1.0})
    with pytest.raises(ValueError, match="one weight per task"):
        joint_metrics(values, {"a": 1.0})
    with pytest.raises(ValueError, match="sum to more than 0"):
        joint_metrics(values, {"a": 0.0, "b": 0.0})
    with pytest.raises(ValueError, match=">= 0"):
        joint_metrics(values, {"a": 2.0, "b": -1.0})
    with pytest.raises(ValueError, match="at least one task"):
        joint_metrics({})


# -- task_report -----------------------------------------------------------------


def test_task_report_regroups_evaluate_logs_per_task():
    x, y = synthetic_tabular(128, seed=0)
    model = tiny_model(synthetic_tabular_tasks())
    model.compile(optimizer="adam")
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    report = task_report(model, x, y)
    assert sorted(report) == sorted(TASK_NAMES)
    assert set(report["species"]) == {"loss", "weight", "accuracy"}
    assert set(report["size"]) == {"loss", "weight", "mae", "rmse"}
    assert set(report["tags"]) == {"loss", "weight", "f1", "auc", "binary_accuracy"}
    logs = model.evaluate(x, y, batch_size=256, verbose=0, return_dict=True)
    for name in TASK_NAMES:
        assert report[name]["loss"] == pytest.approx(logs[f"loss/{name}"])
        assert report[name]["weight"] == pytest.approx(logs[f"weight/{name}"])
    assert report["species"]["accuracy"] == pytest.approx(logs["species/accuracy"])
    assert report["tags"]["f1"] == pytest.approx(logs["tags/f1"])
    # A dataset of (x, y) batches works too, with the same numbers.
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    from_ds = task_report(model, ds)
    assert from_ds["size"]["mae"] == pytest.approx(report["size"]["mae"], rel=1e-5)


def test_task_report_with_a_task_named_loss():
    # "loss/species" is the loss of task "species", "loss/mae" a metric of "loss".
    tasks = [mtl.tasks.Regression("loss"), mtl.tasks.Classification("species", 3)]
    model = tiny_model(tasks)
    model.compile(optimizer="adam")
    x = np.zeros((8, 8), "float32")
    y = {"loss": np.ones(8, "float32"), "species": np.zeros(8, "int32")}
    report = task_report(model, x, y)
    assert set(report["loss"]) == {"loss", "weight", "mae", "rmse"}
    assert set(report["species"]) == {"loss", "weight", "accuracy"}


def test_task_report_needs_a_compiled_multi_task_model():
    with pytest.raises(ValueError, match="compiled=False"):
        task_report(tiny_model(synthetic_tabular_tasks()), None, None)
    with pytest.raises(ValueError, match="MultiTaskModel"):
        task_report(keras.Sequential([keras.layers.Dense(1)]), None, None)


# -- compare_with_single_task ----------------------------------------------------


def _compare(**kwargs):
    train = synthetic_tabular(256, seed=0)
    val = synthetic_tabular(128, seed=1)
    kwargs = {"epochs": 1, "batch_size": 64, "seed": 0, **kwargs}
    tasks = synthetic_tabular_tasks()
    return compare_with_single_task(tiny_model, tasks, train, val, **kwargs)


@pytest.fixture(scope="module")
def comparison():
    return _compare()


def test_comparison_rows_and_models(comparison):
    assert [r.task for r in comparison.rows] == TASK_NAMES
    assert [r.metric for r in comparison.rows] == ["accuracy", "mae", "f1"]
    assert [r.higher_is_better for r in comparison.rows] == [True, False, True]
    assert sorted(comparison.multi_task_model.task_names) == sorted(TASK_NAMES)
    assert sorted(comparison.single_task_models) == sorted(TASK_NAMES)
    for name, model in comparison.single_task_models.items():
        assert model.task_names == [name]
        assert len(model.outputs) == 1
        assert model is not comparison.multi_task_model
    for row in comparison.rows:
        assert row.mtl == comparison.mtl_report[row.task][row.metric]
        assert row.stl == comparison.stl_reports[row.task][row.metric]
        assert math.isfinite(row.improvement)
    assert comparison.budget["epochs"] == 1 and comparison.budget["batch_size"] == 64


def test_comparison_delta_m_is_recomputed_from_rows(comparison):
    rows = comparison.rows
    expected = delta_m(
        {r.task: r.mtl for r in rows},
        {r.task: r.stl for r in rows},
        {r.task: r.higher_is_better for r in rows},
    )
    assert comparison.delta_m == pytest.approx(expected, abs=1e-12)
    for r in rows:  # positive improvement = MTL better, in each direction
        better = r.mtl > r.stl if r.higher_is_better else r.mtl < r.stl
        assert (r.improvement > 0) == better


def test_comparison_table_and_dict(comparison):
    table = comparison.table()
    lines = table.splitlines()
    for name in TASK_NAMES:
        assert name in table
    assert lines[-1].startswith("Δm = ")
    assert f"{100 * comparison.delta_m:+.2f}%" in lines[-1]
    assert len({len(line) for line in lines[:-1]}) == 1  # aligned columns
    data = json.loads(json.dumps(comparison.to_dict()))
    assert [r["task"] for r in data["rows"]] == TASK_NAMES
    assert data["delta_m"] == comparison.delta_m


def test_comparison_same_seed_same_numbers(comparison):
    # Exact on CPU: every model is built and trained after set_random_seed(seed).
    again = _compare()
    assert again.to_dict()["rows"] == comparison.to_dict()["rows"]
    assert again.delta_m == comparison.delta_m


def test_comparison_accepts_datasets_with_the_same_results(comparison):
    # Large corpora come as tf.data pipelines; baselines get only their labels.
    train = synthetic_tabular(256, seed=0)
    val = synthetic_tabular(128, seed=1)
    batches = tf.data.Dataset.from_tensor_slices(train).batch(64)
    from_dataset = compare_with_single_task(
        tiny_model, synthetic_tabular_tasks(), batches,
        tf.data.Dataset.from_tensor_slices(val).batch(64), epochs=1, seed=0)
    assert [r.task for r in from_dataset.rows] == TASK_NAMES
    for row in from_dataset.rows:
        assert math.isfinite(row.mtl) and math.isfinite(row.stl)
    # Evaluation on the dataset equals evaluation on the arrays.
    model = from_dataset.single_task_models["size"]
    assert task_report(model, val[0], {"size": val[1]["size"]})["size"]["mae"] == (
        pytest.approx(from_dataset.stl_reports["size"]["mae"], rel=1e-5))
    with pytest.raises(ValueError, match="whose elements are"):
        compare_with_single_task(tiny_model, synthetic_tabular_tasks(),
                                 tf.data.Dataset.range(3), batches)


def test_comparison_task_missing_from_labels():
    tasks = synthetic_tabular_tasks()
    x, y = synthetic_tabular(32, seed=0)
    partial = {k: v for k, v in y.items() if k != "size"}
    message = r"`train_data` has no labels for task 'size'; its label keys are \['species', 'tags'\]"
    with pytest.raises(ValueError, match=message):
        compare_with_single_task(tiny_model, tasks, (x, partial), (x, y))
    with pytest.raises(ValueError, match="`eval_data` has no labels for task 'size'"):
        compare_with_single_task(tiny_model, tasks, (x, y), (x, partial))
    with pytest.raises(ValueError, match="must be a tuple"):
        compare_with_single_task(tiny_model, tasks, x, (x, y))


def test_build_fn_must_build_the_tasks_it_is_given():
    x, y = synthetic_tabular(32, seed=0)
    with pytest.raises(ValueError, match="returned a model with tasks"):
        compare_with_single_task(
            lambda tasks: tiny_model(tasks[:1]), synthetic_tabular_tasks(), (x, y), (x, y)
        )


def test_zero_single_task_value_gives_nan_and_a_warning(monkeypatch):
    # Evaluation is faked: only the handling of a zero baseline is under test.
    monkeypatch.setattr(evaluation, "task_report", lambda *a, **k: {"r": {"mae": 0.0}})
    x = np.zeros((16, 8), "float32")
    y = {"r": np.zeros(16, "float32")}
    with pytest.warns(UserWarning, match="single-task mae of task 'r' is 0"):
        result = compare_with_single_task(
            tiny_model, [mtl.tasks.Regression("r")], (x, y), (x, y), epochs=1
        )
    assert math.isnan(result.rows[0].improvement) and math.isnan(result.delta_m)
    assert "n/a" in result.table()


def test_each_model_gets_a_fresh_copy_of_an_optimizer_object():
    optimizer = keras.optimizers.SGD(learning_rate=0.05, momentum=0.5)
    copies = [evaluation._fresh_optimizer(optimizer) for _ in range(2)]
    assert copies[0] is not optimizer and copies[0] is not copies[1]
    for copy in copies:
        assert isinstance(copy, keras.optimizers.SGD)
        assert copy.get_config() == optimizer.get_config()
    assert evaluation._fresh_optimizer("adam") is not evaluation._fresh_optimizer("adam")
