"""Evaluation: per-task reports, joint metrics, Δm and the single-task comparison.

- `task_report(model, x, y)`: a compiled model's metrics regrouped per task.
- `joint_metrics(values, weights)`: mean and weighted mean of one value per task.
- `delta_m(mtl, stl, higher_is_better)`: the mean relative improvement of a
  multi-task model over single-task baselines (Maninis et al., CVPR 2019).
- `compare_with_single_task(build_fn, tasks, train_data, eval_data)`: trains the
  multi-task model and one single-task model per task with the same trunk and
  budget, and returns a `Comparison` (`kerasmtl/comparison.py`) whose
  `table()` prints MTL, STL and Δm.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence

import keras
import tensorflow as tf

from kerasmtl.comparison import Comparison, ComparisonRow
from kerasmtl.model import MultiTaskModel
from kerasmtl.tasks import Task


def task_report(
    model: MultiTaskModel, x, y=None, batch_size: int = 256
) -> dict[str, dict[str, float]]:
    """Evaluates `model` and regroups its metrics per task.

    Args:
        model: a compiled `MultiTaskModel`.
        x: evaluation features, or a `tf.data.Dataset` of `(x, y)` batches.
        y: dict of labels keyed by task name; `None` when `x` is a dataset.
        batch_size: int. Evaluation batch size (ignored for a dataset).
            Defaults to `256`.

    Returns:
        `{task: {metric: value}}`: each task's metrics (`"accuracy"`, `"mae"`,
        ...), its masked mean loss as `"loss"` and its weight as `"weight"`.

    Examples:

    >>> import keras, numpy as np, kerasmtl as mtl
    >>> task = mtl.tasks.Regression("y")
    >>> x = keras.Input((2,))
    >>> model = mtl.MultiTaskModel(x, {"y": task.build_head(x)}, tasks=[task])
    >>> model.compile(optimizer="sgd")
    >>> report = task_report(model, np.zeros((4, 2)), {"y": np.zeros(4)})
    >>> sorted(report["y"])
    ['loss', 'mae', 'rmse', 'weight']
    """
    if not isinstance(model, MultiTaskModel) or not model.compiled:
        raise ValueError(
            "task_report needs a compiled kerasmtl MultiTaskModel (compile creates "
            f"its per-task metrics). Received: {type(model).__name__} "
            f"'{getattr(model, 'name', '')}', compiled={getattr(model, 'compiled', None)}."
        )
    logs = model.evaluate(x, y, batch_size=None if y is None else batch_size,
                          verbose=0, return_dict=True)
    report = {name: {} for name in model.task_names}
    # Claim `loss/<task>` and `weight/<task>` first, so that a task itself named
    # "loss" or "weight" keeps only its own metrics in the prefix pass below.
    claimed = {f"{kind}/{n}": (n, kind) for n in report for kind in ("loss", "weight")}
    for key, value in logs.items():
        head, _, metric = key.partition("/")
        name, metric = claimed.get(key, (head, metric))
        if name in report and metric:
            report[name][metric] = float(value)
    return report


def dataset_metrics(model: MultiTaskModel, dataset) -> dict[str, dict[str, float]]:
    """Each task's data-set-level metrics (`Task.dataset_evaluator`: COCO mAP
    of a detection task, mIoU of a segmentation task) from one eager pass over
    `dataset` (nothing is traced or compiled).

    Args:
        model: a `MultiTaskModel` (compiled or not).
        dataset: iterable of `(x, {task: labels})` batches, e.g. a
            `tf.data.Dataset`.

    Returns:
        `{task: {metric: value}}` for the tasks that have an evaluator.
    """
    evaluators = {t.name: t.dataset_evaluator() for t in model.tasks}
    evaluators = {n: e for n, e in evaluators.items() if e is not None}
    if not evaluators:
        return {}
    for x, y in dataset:
        predictions = model.postprocess(model(x, training=False))
        for name, evaluator in evaluators.items():
            labels = y[name]
            if isinstance(labels, Mapping):
                labels = {k: keras.ops.convert_to_numpy(v) for k, v in labels.items()}
            else:
                labels = keras.ops.convert_to_numpy(labels)
            evaluator.update(labels, predictions)
    return {name: evaluator.result() for name, evaluator in evaluators.items()}


def joint_metrics(
    values: Mapping[str, float], weights: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Mean and weighted mean of one value per task.

    Formula:
    ```
    mean = (1/T) sum_t v_t;   weighted_mean = sum_t w_t v_t / sum_t w_t
    ```

    Args:
        values: dict mapping each task name to a value (e.g. its accuracy).
        weights: dict with one weight >= 0 per task of `values`, or `None`
            (equal weights: the weighted mean is the mean). Defaults to `None`.

    Returns:
        `{"mean": float, "weighted_mean": float}`.

    Examples:

    >>> joint_metrics({"a": 0.5, "b": 1.0}, {"a": 3.0, "b": 1.0})
    {'mean': 0.75, 'weighted_mean': 0.625}
    """
    if not values:
        raise ValueError("joint_metrics needs at least one task value. Received: {}.")
    if weights is None:
        weights = {name: 1.0 for name in values}
    if set(weights) != set(values):
        raise ValueError(
            f"`weights` name task(s) {sorted(weights)} but `values` name "
            f"{sorted(values)}. Give exactly one weight per task of `values`."
        )
    total = float(sum(weights.values()))
    if total == 0 or any(w < 0 for w in weights.values()):
        raise ValueError(
            "Task weights must be >= 0 and sum to more than 0 (else the weighted "
            f"mean is undefined). Received: weights={dict(weights)}"
        )
    return {
        "mean": float(sum(values.values())) / len(values),
        "weighted_mean": sum(weights[n] * values[n] for n in values) / total,
    }


def delta_m(
    mtl: Mapping[str, float],
    stl: Mapping[str, float],
    higher_is_better: Mapping[str, bool],
) -> float:
    """Δm: the mean relative improvement of multi-task over single-task models.

    Maninis, Radosavovic and Kokkinos, "Attentive Single-Tasking of Multiple
    Tasks", CVPR 2019. Positive means the multi-task model is better.

    Formula:
    ```
    Δm = (1/T) sum_t (-1)^{l_t} (M_mtl,t - M_stl,t) / M_stl,t
    ```
    with `l_t = 1` when lower is better for task `t` (an error), else 0. The
    denominator is `|M_stl,t|`: the same for positive metrics, and for a
    negative baseline the sign still means "MTL better".

    Args:
        mtl: dict mapping each task to the multi-task model's metric value.
        stl: dict mapping each task to its single-task model's metric value.
        higher_is_better: dict mapping each task to its metric's direction.

    Returns:
        Δm as a fraction (`0.05` is +5%).

    Examples:

    Accuracy 0.80 vs 0.75 gives (0.80 - 0.75) / 0.75 = +0.0667; MAE 0.9 vs
    1.0 gives -(0.9 - 1.0) / 1.0 = +0.1; Δm = (0.0667 + 0.1) / 2 = 0.08333.

    >>> round(delta_m({"acc": 0.80, "mae": 0.9}, {"acc": 0.75, "mae": 1.0},
    ...               {"acc": True, "mae": False}), 5)
    0.08333
    """
    if not mtl:
        raise ValueError("delta_m needs at least one task. Received: mtl={}.")
    for other, label in ((stl, "stl"), (higher_is_better, "higher_is_better")):
        for task in sorted(set(mtl) ^ set(other)):
            where, missing = ("mtl", label) if task in mtl else (label, "mtl")
            raise ValueError(
                f"Task '{task}' is in `{where}` but not in `{missing}`. delta_m needs "
                f"the same tasks in all three dicts; mtl has {sorted(mtl)}, {label} "
                f"has {sorted(other)}."
            )
    terms = [_improvement(t, mtl[t], stl[t], higher_is_better[t]) for t in mtl]
    return math.fsum(terms) / len(terms)


def _improvement(task: str, mtl: float, stl: float, higher_is_better: bool) -> float:
    """One task's term of Δm, signed so that positive means MTL is better."""
    if stl == 0:
        raise ValueError(
            f"The single-task value of task '{task}' is 0, so its relative "
            "improvement is undefined. Compare on a metric that is nonzero for the "
            "single-task model (or train it longer)."
        )
    sign = 1.0 if higher_is_better else -1.0
    return sign * (float(mtl) - float(stl)) / abs(float(stl))


def compare_with_single_task(
    build_fn: Callable[[list[Task]], MultiTaskModel],
    tasks: Sequence[Task],
    train_data: tuple,
    eval_data: tuple,
    *,
    epochs: int = 5,
    batch_size: int = 64,
    optimizer: str | dict | keras.optimizers.Optimizer = "adam",
    seed: int = 0,
    verbose: int = 0,
) -> Comparison:
    """Trains a multi-task model and single-task baselines, and compares them.

    The multi-task model is `build_fn(tasks)`, the baseline of task `t` is
    `build_fn([t])`: the same trunk, one head. Each is seeded with `seed` just
    before it is built and trained for the same epochs and batch size with a
    fresh optimizer of the same config; a baseline sees the same rows with only
    its task's labels. Tasks are scored on `eval_data` by their `primary_metric`.
    The loss weighting is whatever `build_fn` gives (`hard_sharing(weighting=)`).

    Args:
        build_fn: `build_fn(list_of_tasks) -> MultiTaskModel`, uncompiled.
        tasks: the tasks to compare on.
        train_data: `(x, {task_name: labels})`, or a `tf.data.Dataset` of
            such batches (then `batch_size` is the dataset's own).
        eval_data: `(x, {task_name: labels})`, or a dataset as above.
        epochs: int. Training epochs of every model. Defaults to `5`.
        batch_size: int. Training batch size of every model. Defaults to `64`.
        optimizer: optimizer name, config dict or instance; each model gets its
            own copy. Defaults to `"adam"`.
        seed: int. Seed set before building each model. Defaults to `0`.
        verbose: int. Passed to `fit`. Defaults to `0`.

    Returns:
        A `Comparison`.

    Examples:

    ```python
    def build_fn(tasks):
        inputs = keras.Input((8,), name="features")
        shared = keras.layers.Dense(16, activation="relu")(inputs)
        return mtl.sharing.hard_sharing(inputs, shared, tasks)
    comparison = mtl.evaluation.compare_with_single_task(
        build_fn, synthetic_tabular_tasks(), synthetic_tabular(512, seed=0),
        synthetic_tabular(256, seed=1), epochs=5)
    print(comparison.table())
    ```
    """
    tasks = list(tasks)
    if not tasks or not all(isinstance(t, Task) for t in tasks):
        raise ValueError(f"`tasks` must be a non-empty list of kerasmtl Tasks. "
                         f"Received: {tasks!r}")
    for arg, data in (("train_data", train_data), ("eval_data", eval_data)):
        label_keys = _label_keys(arg, data)
        for task in tasks:
            if task.name not in label_keys:
                raise ValueError(
                    f"`{arg}` has no labels for task '{task.name}'; its label keys "
                    f"are {sorted(label_keys)}. Every task needs a label array; mark "
                    "missing labels with -1 (class, binary) or NaN (float)."
                )
    budget = {"epochs": epochs, "batch_size": batch_size, "seed": seed,
              "optimizer": keras.optimizers.serialize(_fresh_optimizer(optimizer))}

    def train(model_tasks: list[Task]) -> tuple[MultiTaskModel, dict]:
        names = [t.name for t in model_tasks]
        keras.utils.set_random_seed(seed)
        model = build_fn(list(model_tasks))
        if not isinstance(model, MultiTaskModel) or sorted(model.task_names) != sorted(names):
            got = getattr(model, "task_names", type(model).__name__)
            raise ValueError(
                f"build_fn({names}) returned a model with tasks {got}. It must build "
                "a MultiTaskModel with one head for each task it is given, and no other."
            )
        model.compile(optimizer=_fresh_optimizer(optimizer))
        x, y = _select_tasks(train_data, names)
        model.fit(x, y, epochs=epochs, batch_size=None if y is None else batch_size,
                  verbose=verbose)
        report = task_report(model, *_select_tasks(eval_data, names))
        return model, report

    mtl_model, mtl_report = train(tasks)
    stl_models, stl_reports, rows = {}, {}, []
    for task in tasks:
        stl_models[task.name], report = train([task])
        stl_reports[task.name] = report[task.name]
        mtl_value = _primary_metric(mtl_report, task)
        stl_value = _primary_metric(report, task)
        if stl_value == 0:
            # Keep the trained results rather than raise after all that training.
            warnings.warn(
                f"The single-task {task.primary_metric} of task '{task.name}' is 0; "
                "its relative improvement and Δm are NaN.", stacklevel=2)
            improvement = math.nan
        else:
            improvement = _improvement(task.name, mtl_value, stl_value, task.higher_is_better)
        rows.append(ComparisonRow(task.name, task.primary_metric, task.higher_is_better,
                                  mtl_value, stl_value, improvement))
    return Comparison(rows, math.fsum(r.improvement for r in rows) / len(rows),
                      mtl_report, stl_reports, budget, mtl_model, stl_models)


def _label_keys(arg: str, data) -> list[str]:
    if isinstance(data, tf.data.Dataset):
        spec = data.element_spec
        if isinstance(spec, tuple) and len(spec) >= 2 and isinstance(spec[1], Mapping):
            return list(spec[1])
        raise ValueError(f"`{arg}` is a tf.data.Dataset whose elements are {spec}; "
                         "expected batches of (x, {task_name: labels}).")
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[1], Mapping):
        return list(data[1])
    raise ValueError(f"`{arg}` must be a tuple (x, {{task_name: labels}}) or a "
                     f"tf.data.Dataset of such batches. Received: {type(data).__name__}.")


def _select_tasks(data, names: list[str]):
    """`(x, y)` for fit/evaluate, with only the labels of `names`."""
    if isinstance(data, tf.data.Dataset):
        return data.map(lambda x, y, *rest: (x, {n: y[n] for n in names})), None
    return data[0], {n: data[1][n] for n in names}


def _primary_metric(report: dict, task: Task) -> float:
    metrics = report[task.name]
    if task.primary_metric not in metrics:
        raise ValueError(
            f"Task '{task.name}' reports no '{task.primary_metric}' (its primary "
            f"metric); it reports {sorted(metrics)}. Keep its default metrics."
        )
    return metrics[task.primary_metric]


def _fresh_optimizer(optimizer) -> keras.optimizers.Optimizer:
    # Each model needs its own optimizer state; the shared config is the budget.
    if isinstance(optimizer, keras.optimizers.Optimizer):
        return keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    return keras.optimizers.get(optimizer)
