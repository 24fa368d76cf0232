"""Decision-threshold calibration of multi-label tasks on validation data.

`calibrate_thresholds(model, x, y)` predicts on validation data, picks the
threshold of each label that maximizes its F1 (or one threshold for all labels
that maximizes micro-F1), and writes them into the task's `MultiLabelOutput`
layer, so they are used by serving predictions, metrics, `.keras` files and
exported SavedModels.

It lives with the multi-label task because it is that kind's own code (no
module outside `kerasmtl/tasks/` switches on the kind of a task);
`kerasmtl.calibration` is its public name. It uses a model object but does
not import `kerasmtl.model`: it needs only a model's `tasks`, `get_layer` and
`predict`.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from kerasmtl.layers.multilabel_heads import MultiLabelOutput
from kerasmtl.tasks.multilabel import MultiLabel

STRATEGIES = ("per_label_f1", "global_f1")


def calibrate_thresholds(
    model,
    x,
    y=None,
    task: str | MultiLabel | None = None,
    strategy: str = "per_label_f1",
    grid=None,
    batch_size: int = 256,
) -> np.ndarray:
    """Calibrates a multi-label task's decision thresholds on validation data.

    F1 only changes where a threshold crosses a predicted probability, so the
    search is exact: each label's F1 with `"per_label_f1"`, or the micro-F1
    with `"global_f1"`, is the best any threshold reaches on this data, and
    never below its value at the task's own `threshold`. Among equally good
    thresholds, the range nearest the default wins; the task's `threshold` is
    kept if it lies in that range, else the range's midpoint is used. A
    threshold is thus never equal to a probability seen in calibration: a
    probability computed 1 ulp differently (other CPU kernels) predicts the
    same. Unknown labels (`-1`) are ignored. A label with no known positive in `x` has no
    F1 to maximize: it keeps the task's default threshold (its `threshold`
    argument), not a value fitted to negatives only. A label predicted as
    positive when its probability is `>=` its threshold, as in serving.

    Args:
        model: a `kerasmtl.MultiTaskModel` with a `MultiLabel` task whose head
            ends in a `MultiLabelOutput` layer (as `task.build_head` builds it).
        x: validation features (numpy arrays or a dict of them), or a
            `tf.data.Dataset` of `(features, labels)` batches, labels a dict
            keyed by task name.
        y: the labels of `x`: a dict keyed by task name, or the task's label
            array `(num_examples, num_labels)`; None when `x` is a dataset.
        task: str, `MultiLabel` or None. The task to calibrate. Defaults to
            `None`: the model's only multi-label task.
        strategy: `"per_label_f1"` (one threshold per label, maximizing its F1)
            or `"global_f1"` (one threshold for all labels, maximizing
            micro-F1). Defaults to `"per_label_f1"`.
        grid: sequence of floats in (0, 1) or None. Restricts the candidate
            thresholds to these values (plus the task's `threshold`); a grid
            value equal to a probability is as fragile as that tie. Defaults
            to `None`: the exact search above.
        batch_size: int. Prediction batch size for numpy inputs. Defaults to `256`.

    Returns:
        The thresholds written into the model, a float32 array `(num_labels,)`.

    Examples:

    >>> import keras, numpy as np, kerasmtl as mtl
    >>> task = mtl.tasks.MultiLabel("tags", num_labels=2)
    >>> x = keras.Input((2,))
    >>> model = mtl.sharing.hard_sharing(x, x, [task])
    >>> model.get_layer("tags_logits").set_weights([np.eye(2), np.zeros(2)])
    >>> probs = np.array([[0.355, 0.9], [0.255, 0.6], [0.105, 0.7]])
    >>> logits = np.log(probs) - np.log(1 - probs)  # the model outputs `probs`
    >>> labels = np.array([[1, 1], [1, 0], [0, -1]])
    >>> # label 0: F1 = 1 for thresholds in (0.105, 0.255]; label 1: (0.6, 0.9];
    >>> # the midpoints are robust to 1-ulp differences in the probabilities
    >>> print(np.round(calibrate_thresholds(model, logits, labels), 4))
    [0.18 0.75]
    >>> print(np.round(model.get_layer("tags").thresholds, 4))
    [0.18 0.75]
    """
    task = _resolve_task(model, task)
    layer = model.get_layer(task.name)
    if not isinstance(layer, MultiLabelOutput):
        raise ValueError(
            f"Cannot calibrate task '{task.name}': its output layer is a "
            f"{type(layer).__name__}, not a MultiLabelOutput. Build the head with "
            "task.build_head() (or sharing.hard_sharing), which stores thresholds."
        )
    if task.decision != "threshold":
        raise ValueError(
            f"Task '{task.name}' uses decision={task.decision!r}: it predicts the "
            "top-k labels and uses no thresholds. Calibrate a task with "
            "decision='threshold'."
        )
    if strategy not in STRATEGIES:
        raise ValueError(
            f"Invalid value for argument `strategy` of calibrate_thresholds. Expected "
            f"one of {list(STRATEGIES)}. Received: strategy={strategy!r}"
        )
    grid = _check_grid(grid)
    probabilities, labels = _predict_with_labels(model, task, x, y, batch_size)

    default = np.broadcast_to(
        np.asarray(task.threshold, "float64"), (task.num_labels,)
    ).copy()
    known = labels >= 0
    thresholds = default.copy()
    if strategy == "per_label_f1":
        for label in range(task.num_labels):
            rows = known[:, label]
            if (labels[rows, label] == 1).any():
                thresholds[label] = _best_threshold(
                    probabilities[rows, label], labels[rows, label] == 1,
                    default[label], grid,
                )
    elif (labels[known] == 1).any():
        thresholds[:] = _best_threshold(
            probabilities[known], labels[known] == 1, float(np.mean(default)), grid
        )
    thresholds = thresholds.astype("float32")
    layer.thresholds.assign(thresholds)
    return thresholds


def _resolve_task(model, task) -> MultiLabel:
    tasks = getattr(model, "tasks", None)
    if tasks is None or not hasattr(model, "get_layer"):
        raise ValueError(
            "calibrate_thresholds expects a kerasmtl MultiTaskModel (e.g. from "
            f"mtl.sharing.hard_sharing). Received: {type(model).__name__}."
        )
    multi_label = [t for t in tasks if isinstance(t, MultiLabel)]
    if isinstance(task, MultiLabel):
        task = task.name
    if task is None:
        if len(multi_label) != 1:
            raise ValueError(
                f"Model '{model.name}' has {len(multi_label)} multi-label tasks "
                f"{[t.name for t in multi_label]}; pass `task=` to name the one "
                "to calibrate."
            )
        return multi_label[0]
    for candidate in multi_label:
        if candidate.name == task:
            return candidate
    raise ValueError(
        f"No multi-label task named {task!r} in model '{model.name}'. Its "
        f"multi-label tasks are {[t.name for t in multi_label]}."
    )


def _check_grid(grid) -> np.ndarray:
    if grid is None:
        return None
    values = np.asarray(grid, dtype="float64").ravel()
    if values.size == 0 or not np.all((values > 0) & (values < 1)):
        raise ValueError(
            "Invalid value for argument `grid` of calibrate_thresholds. Expected a "
            f"non-empty list of floats in (0, 1). Received: grid={grid!r}"
        )
    return values


def _predict_with_labels(model, task, x, y, batch_size):
    """`(probabilities, labels)` as numpy arrays `(examples, num_labels)`."""
    if isinstance(x, tf.data.Dataset):
        if y is not None:
            raise ValueError(
                "calibrate_thresholds got a tf.data.Dataset and `y`; a dataset "
                "carries its labels: yield (features, {task_name: labels})."
            )
        # One pass, predicting batch by batch: a shuffled dataset iterated
        # twice would pair predictions with the wrong labels.
        probs, labels = [], []
        for batch in x:
            if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                raise ValueError(
                    "calibrate_thresholds needs a dataset of (features, labels) "
                    f"batches to calibrate task '{task.name}'."
                )
            probs.append(np.asarray(model.predict_on_batch(batch[0])[task.name]))
            labels.append(np.asarray(_task_labels(task, batch[1])))
        if not probs:
            raise ValueError(
                f"The dataset given to calibrate task '{task.name}' is empty."
            )
        probabilities, labels = np.concatenate(probs), np.concatenate(labels)
    else:
        if y is None:
            raise ValueError(
                f"calibrate_thresholds needs the labels of task '{task.name}': pass "
                "`y` (a dict keyed by task name, or the label array), or a "
                "tf.data.Dataset of (features, labels)."
            )
        probabilities = np.asarray(
            model.predict(x, batch_size=batch_size, verbose=0)[task.name]
        )
        labels = np.asarray(_task_labels(task, y))
    task.check_label_values(labels)
    labels = labels.reshape(-1, task.num_labels)
    probabilities = probabilities.reshape(-1, task.num_labels)
    if labels.shape[0] != probabilities.shape[0] or labels.shape[0] == 0:
        raise ValueError(
            f"Cannot calibrate task '{task.name}': {probabilities.shape[0]} "
            f"predictions and {labels.shape[0]} label rows. Pass the labels of "
            "the same (non-empty) examples."
        )
    return probabilities, labels


def _task_labels(task, y):
    if isinstance(y, dict):
        if task.name not in y:
            raise ValueError(
                f"The labels given to calibrate have no entry for task "
                f"'{task.name}' (keys: {sorted(y)})."
            )
        return y[task.name]
    return y


def _best_threshold(scores, positive, default, grid) -> float:
    """The threshold maximizing F1 of `scores >= threshold` against `positive`.

    F1 only changes where the threshold crosses a score, so the candidates
    are runs of thresholds between sorted distinct scores with equal F1. The
    run nearest `default` wins; inside it, `default` if it lies there, else
    its midpoint: never a score itself, so a probability computed 1 ulp
    differently (other float32 kernels) does not change the prediction.
    With an explicit `grid`, the candidates are the grid's values instead.
    """
    scores = np.asarray(scores, "float64")
    order = np.argsort(-scores, kind="stable")
    scores, positive = scores[order], positive[order]
    cuts = np.flatnonzero(np.diff(scores)) + 1  # ends of runs of equal scores
    ends = np.concatenate([[0], cuts, [scores.size]])
    # Predicting the k highest distinct scores as positive, k = 0..m.
    tp = np.concatenate([[0], np.cumsum(positive)[ends[1:] - 1]]).astype("float64")
    fp = ends.astype("float64") - tp
    fn = positive.sum() - tp
    f1 = _f1(tp, fp, fn)
    # Option k predicts `scores >= t` for t in (lower[k], upper[k]].
    distinct = scores[ends[:-1]]
    upper = np.concatenate([[1.0], distinct])
    lower = np.concatenate([distinct, [0.0]])
    if grid is not None:
        grid = np.unique(np.append(grid, default))
        option = np.searchsorted(-distinct, -np.asarray(grid), side="right")
        values = f1[option]
        best = np.flatnonzero(np.isclose(values, values.max(), rtol=0, atol=1e-12))
        return float(grid[best[np.argmin(np.abs(grid[best] - default))]])
    best = np.isclose(f1, f1.max(), rtol=0, atol=1e-12)
    # Runs of consecutive best options form one interval of equal F1.
    starts = np.flatnonzero(best & ~np.concatenate([[False], best[:-1]]))
    stops = np.flatnonzero(best & ~np.concatenate([best[1:], [False]]))
    lo, hi = lower[stops], upper[starts]  # each run's (lo, hi)
    inside = (lo < default) & (default < hi)
    if inside.any():
        return float(default)
    distance = np.minimum(np.abs(lo - default), np.abs(hi - default))
    run = int(np.argmin(distance))
    return float((lo[run] + hi[run]) / 2)


def _f1(tp, fp, fn):
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros_like(tp, dtype="float64"),
                     where=denominator > 0)
