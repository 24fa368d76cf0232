"""Decision-threshold calibration of multi-label tasks on validation data.

`calibrate_thresholds(model, x, y)` predicts on validation data, picks the
threshold of each label that maximizes its F1 (or one threshold for all labels
that maximizes micro-F1), and writes them into the task's `MultiLabelOutput`
layer, so they are used by serving predictions, metrics, `.keras` files and
exported SavedModels.

This module uses a model object but does not import `kerasmtl.model` (it sits
beside `evaluation.py` in the layering of DESIGN.md, and needs only a model's
`tasks`, `get_layer` and `predict`).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from kerasmtl.layers.multilabel_heads import MultiLabelOutput
from kerasmtl.tasks.multilabel import MultiLabel

STRATEGIES = ("per_label_f1", "global_f1")
# 0.01 steps: fine enough for F1, cheap (one pass over the data per candidate).
DEFAULT_GRID = np.round(np.linspace(0.01, 0.99, 99), 2)


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

    Candidates are the values of `grid` plus the task's own `threshold` (so
    each label's F1 with `"per_label_f1"`, or the micro-F1 with
    `"global_f1"`, is never below its value at the default threshold on this
    data). Ties go to the candidate nearest the default threshold. Unknown
    labels (`-1`) are ignored. A label with no known positive in `x` has no
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
        grid: sequence of floats in (0, 1) or None. Candidate thresholds.
            Defaults to `None`: 0.01, 0.02, ..., 0.99.
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
    >>> # label 0: F1 = 1 for thresholds 0.11..0.25; label 1: 0.61..0.90;
    >>> # ties go to the candidate nearest the default 0.5
    >>> print(calibrate_thresholds(model, logits, labels))
    [0.25 0.61]
    >>> print(np.asarray(model.get_layer("tags").thresholds))
    [0.25 0.61]
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
    candidates = np.unique(np.concatenate([grid, default]))
    known = labels >= 0
    positive = known & (labels == 1)
    negative = known & (labels == 0)
    # (candidates, labels) true positives, false positives, false negatives.
    tp = np.empty((len(candidates), task.num_labels))
    fp = np.empty_like(tp)
    fn = np.empty_like(tp)
    for i, threshold in enumerate(candidates):
        predicted = probabilities >= threshold
        tp[i] = np.sum(predicted & positive, axis=0)
        fp[i] = np.sum(predicted & negative, axis=0)
        fn[i] = np.sum(~predicted & positive, axis=0)
    has_positive = positive.any(axis=0)

    if strategy == "per_label_f1":
        f1 = _f1(tp, fp, fn)
        thresholds = default.copy()
        for label in np.flatnonzero(has_positive):
            thresholds[label] = _best(candidates, f1[:, label], default[label])
    else:
        thresholds = default.copy()
        if has_positive.any():
            micro = _f1(tp.sum(axis=1), fp.sum(axis=1), fn.sum(axis=1))
            thresholds[:] = _best(candidates, micro, float(np.mean(default)))
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
        return DEFAULT_GRID
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


def _f1(tp, fp, fn):
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros_like(tp, dtype="float64"),
                     where=denominator > 0)


def _best(candidates, scores, default) -> float:
    best = np.flatnonzero(np.isclose(scores, scores.max(), rtol=0, atol=1e-12))
    return float(candidates[best[np.argmin(np.abs(candidates[best] - default))]])
