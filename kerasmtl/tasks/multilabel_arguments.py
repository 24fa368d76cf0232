"""Argument checks of `kerasmtl.tasks.MultiLabel`: label names, their count,
per-label floats (thresholds, positive weights), smoothing, decision rule and
head. Each raises a ValueError naming the task, the argument and what to pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BUILT_IN_LOSSES = ("auto", "bce", "focal", "asl")
DECISIONS = ("threshold", "top_k")
HEADS = ("independent", "label_attention")


def check_label_smoothing(name, label_smoothing, loss, pos_weight) -> float:
    """`label_smoothing` as a float in [0, 1); it and `pos_weight` need a
    built-in loss."""
    if isinstance(label_smoothing, bool) or not (
        isinstance(label_smoothing, (int, float)) and 0.0 <= label_smoothing < 1.0
    ):
        raise ValueError(
            f"Invalid value for argument `label_smoothing` of task '{name}'. "
            f"Expected a float in [0, 1). Received: label_smoothing={label_smoothing!r}"
        )
    if (label_smoothing or pos_weight is not None) and not (
        isinstance(loss, str) and loss in BUILT_IN_LOSSES
    ):
        raise ValueError(
            f"Task '{name}': `label_smoothing` and `pos_weight` apply to the "
            f"built-in losses {list(BUILT_IN_LOSSES)}; received loss={loss!r}. "
            "Set them on the loss object instead (e.g. "
            "SigmoidFocalLoss(gamma=1.0, pos_weight=[...]))."
        )
    return float(label_smoothing)


def check_decision(name, decision, top_k, num_labels) -> int | None:
    """Checks the decision rule; returns `top_k` (an int for `"top_k"`)."""
    if decision not in DECISIONS:
        raise ValueError(
            f"Invalid value for argument `decision` of task '{name}'. Expected "
            f"one of {list(DECISIONS)}. Received: decision={decision!r}"
        )
    if decision == "top_k":
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or not (
            1 <= top_k <= num_labels
        ):
            raise ValueError(
                f"Invalid value for argument `top_k` of task '{name}'. Expected "
                f"an int in [1, {num_labels}] (num_labels) with "
                f"decision='top_k'. Received: top_k={top_k!r}"
            )
        return int(top_k)
    if top_k is not None:
        raise ValueError(
            f"Task '{name}' got top_k={top_k!r} with decision={decision!r}. "
            "Pass decision='top_k' to predict the top-k labels."
        )
    return None


def check_head(name, head, head_config) -> None:
    if head not in HEADS:
        raise ValueError(
            f"Invalid value for argument `head` of task '{name}'. Expected one "
            f"of {list(HEADS)}. Received: head={head!r}"
        )
    if head_config is not None and (head != "label_attention"
                                    or not isinstance(head_config, dict)):
        raise ValueError(
            f"Task '{name}': `head_config` is a dict of LabelAttentionHead "
            f"arguments, for head='label_attention'. Received: head={head!r}, "
            f"head_config={head_config!r}"
        )


def check_labels(name, labels):
    if labels is None:
        return None
    if isinstance(labels, str) or not isinstance(labels, Sequence) and not isinstance(
        labels, np.ndarray
    ):
        raise ValueError(
            f"Invalid value for argument `labels` of task '{name}'. Expected a list "
            f"of label names (str). Received: labels={labels!r}"
        )
    labels = list(labels)
    bad = [x for x in labels if not isinstance(x, str) or not x]
    duplicates = sorted({x for x in labels if labels.count(x) > 1 and isinstance(x, str)})
    if not labels or bad or duplicates:
        raise ValueError(
            f"Invalid value for argument `labels` of task '{name}'. Expected a "
            "non-empty list of unique, non-empty str. "
            + (f"Not a non-empty str: {bad[:5]}. " if bad else "")
            + (f"Duplicates: {duplicates[:5]}. " if duplicates else "")
            + f"Received {len(labels)} label(s)."
        )
    return [str(x) for x in labels]


def check_num_labels(name, num_labels, labels):
    if num_labels is None:
        if labels is None:
            raise ValueError(
                f"Task '{name}' needs `num_labels` or `labels` (the label names)."
            )
        return len(labels)
    if isinstance(num_labels, bool) or not isinstance(num_labels, (int, np.integer)) or (
        num_labels < 1
    ):
        raise ValueError(
            f"Invalid value for argument `num_labels` of task '{name}'. "
            f"Expected an int >= 1. Received: num_labels={num_labels!r}"
        )
    if labels is not None and len(labels) != num_labels:
        raise ValueError(
            f"Task '{name}' got num_labels={num_labels} but {len(labels)} label "
            "names. Pass one name per label, or leave num_labels out."
        )
    return int(num_labels)


def check_per_label(name, arg, value, num_labels, low, high, expected):
    """A float, or a list of `num_labels` floats, each in (low, high)."""
    if isinstance(value, bool) or isinstance(value, str):
        values = None
    else:
        try:
            values = np.asarray(value, dtype="float64")
        except (TypeError, ValueError):
            values = None
    if values is None or values.ndim > 1 or values.size == 0:
        raise ValueError(
            f"Invalid value for argument `{arg}` of task '{name}'. Expected a float "
            f"{expected} or a list of {num_labels} of them (one per label). "
            f"Received: {arg}={value!r}"
        )
    if values.ndim == 1 and values.shape[0] != num_labels:
        raise ValueError(
            f"Invalid value for argument `{arg}` of task '{name}': {values.shape[0]} "
            f"values for {num_labels} labels. Give one float, or one per label. "
            f"Received: {arg}={value!r}"
        )
    ok = (values > low) & np.isfinite(values)
    if high is not None:
        ok &= values < high
    if not np.all(ok):
        raise ValueError(
            f"Invalid value for argument `{arg}` of task '{name}'. Expected a float "
            f"{expected} (or one per label). Received: {arg}={value!r}"
        )
    return float(values) if values.ndim == 0 else [float(v) for v in values]
