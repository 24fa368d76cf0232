"""`DynamicSampling`: a callback that shifts sampling toward lagging tasks.

The idea of Gottumukkala, Dua, Singh and Gardner, "Dynamic Sampling Strategies
for Multi-Task Reading Comprehension", ACL 2020 (and, as a learned policy,
Sharma and Ravindran, "Learning to Multi-Task by Active Sampling", ICLR 2018):
after each epoch, sample each data set in proportion to how far its task is
from the performance it should reach (e.g. its single-task score), so that
tasks already at their target stop taking steps from those that are not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

# Metrics whose name ends in one of these are better when lower.
_LOWER_IS_BETTER = ("loss", "error", "mae", "mse", "rmse", "crossentropy", "hamming")


class DynamicSampling(keras.callbacks.Callback):
    """Moves `mix(..., strategy="dynamic")`'s weights toward lagging tasks.

    Rule, at the end of every epoch, from the epoch's logs:

    ```
    shortfall_t = max(0, (target_t - value_t) / |target_t|)   # higher is better
                = max(0, (value_t - target_t) / |target_t|)   # lower is better
    score_d     = max over the tasks labelled by data set d of shortfall_t
    q_d         = score_d / sum_d' score_d'
    w_d        <- (1 - smoothing) * w_d + smoothing * q_d
    w_d        <- min_weight + (1 - k * min_weight) * w_d   # no data set starves
    ```

    When every task meets its target the weights stay as they are. The data
    set of the task furthest below its target gains the most weight.

    Args:
        targets: dict `{task: (metric_name, target)}` or `{task: (metric_name,
            target, mode)}`; `metric_name` is a key of the epoch logs (e.g.
            `"val_ner/entity_f1"`; it must be logged every epoch), `mode` is
            `"max"` or `"min"`. Without a mode, per-task losses (`"loss/<task>"`)
            and names ending in loss, error, mae, mse, rmse, crossentropy or
            hamming are `"min"`, others `"max"`.
        smoothing: float in (0, 1]. How far the weights move toward the
            shortfall distribution each epoch. Defaults to `0.5`.
        min_weight: float >= 0. Floor on every data set's weight (`k *
            min_weight < 1` for `k` data sets). Defaults to `0.05`.

    Examples:

    >>> pos = tf.data.Dataset.from_tensor_slices(([[1.0]] * 4, {"pos": [0] * 4}))
    >>> ner = tf.data.Dataset.from_tensor_slices(([[1.0]] * 4, {"ner": [0] * 4}))
    >>> sampling = DynamicSampling({"pos": ("val_pos/accuracy", 0.9),
    ...                             "ner": ("val_ner/accuracy", 0.9)},
    ...                            smoothing=1.0, min_weight=0.0)
    >>> from kerasmtl.data.mixing import mix
    >>> ds = mix({"pos": pos, "ner": ner}, strategy="dynamic", sampler=sampling)
    >>> sampling.on_epoch_end(0, {"val_pos/accuracy": 0.8, "val_ner/accuracy": 0.6})
    >>> sampling.current_weights()
    {'pos': 0.25, 'ner': 0.75}
    """

    def __init__(
        self,
        targets: Mapping[str, Sequence],
        smoothing: float = 0.5,
        min_weight: float = 0.05,
    ):
        super().__init__()
        if not isinstance(targets, Mapping) or not targets:
            raise ValueError(
                "Invalid value for argument `targets`. Expected a non-empty dict "
                "{task: (metric_name, target)}. Received: "
                f"targets={targets!r}"
            )
        self.targets = {task: _target(task, spec) for task, spec in targets.items()}
        if not 0.0 < smoothing <= 1.0:
            raise ValueError(
                "Invalid value for argument `smoothing`. Expected a float in (0, 1]. "
                f"Received: smoothing={smoothing!r}"
            )
        if not min_weight >= 0.0:
            raise ValueError(
                "Invalid value for argument `min_weight`. Expected a float >= 0. "
                f"Received: min_weight={min_weight!r}"
            )
        self.smoothing = float(smoothing)
        self.min_weight = float(min_weight)
        self.weights = None
        self.dataset_names: list[str] = []
        self.history: list[dict[str, float]] = []

    def bind(self, dataset_names, tasks_of: Mapping[str, Sequence[str]], initial):
        """Called by `mix`: creates the weights variable for these data sets."""
        if self.weights is not None:
            raise ValueError(
                "This DynamicSampling already drives another mix(); create one per "
                "mixture."
            )
        labelled = {task for tasks in tasks_of.values() for task in tasks}
        unknown = sorted(set(self.targets) - labelled)
        if unknown:
            raise ValueError(
                f"DynamicSampling has targets for task(s) {unknown} that no data set "
                f"labels; the data sets label {sorted(labelled)}."
            )
        if len(dataset_names) * self.min_weight >= 1.0:
            raise ValueError(
                f"min_weight={self.min_weight} is too large for {len(dataset_names)} "
                "data sets: their floors must sum to less than 1."
            )
        self.dataset_names = list(dataset_names)
        self.tasks_of = {name: list(tasks_of[name]) for name in self.dataset_names}
        self.weights = tf.Variable(
            np.asarray(initial, "float32"), trainable=False, name="sampling_weights"
        )

    def current_weights(self) -> dict[str, float]:
        """The sampling weight of every data set, by name."""
        values = self.weights.numpy()
        return {n: round(float(v), 6) for n, v in zip(self.dataset_names, values)}

    def shortfalls(self, logs: Mapping[str, float]) -> dict[str, float]:
        """Each target task's relative shortfall from its target in `logs`."""
        result = {}
        for task, (metric, target, mode) in self.targets.items():
            if metric not in logs:
                raise ValueError(
                    f"DynamicSampling: the target metric '{metric}' of task '{task}' "
                    f"is not in the epoch logs {sorted(logs)}. Use one of these "
                    "names, and validate every epoch for 'val_' metrics."
                )
            gap = target - float(logs[metric]) if mode == "max" else (
                float(logs[metric]) - target
            )
            result[task] = max(0.0, gap / max(abs(target), 1e-12))
        return result

    def on_train_begin(self, logs=None):
        # The dynamic mixture repeats every data set forever: without a step
        # count the first epoch never ends, so the weights would never move and
        # fit would run until killed.
        params = self.params or {}
        if "steps" in params and params["steps"] is None:
            raise ValueError(
                "DynamicSampling: fit() was given no `steps_per_epoch`, but "
                "mix(..., strategy='dynamic') yields an endless stream (every data "
                "set is repeated), so the first epoch would never end and the "
                "sampling weights would never be updated. Pass fit(..., "
                "steps_per_epoch=N), e.g. N = examples per epoch // batch size."
            )

    def on_epoch_end(self, epoch, logs=None):
        if self.weights is None:
            raise ValueError(
                "DynamicSampling is not bound to a mixture. Pass it to "
                "mix(..., strategy='dynamic', sampler=...) first."
            )
        shortfall = self.shortfalls(logs or {})
        scores = np.array(
            [max([shortfall.get(t, 0.0) for t in self.tasks_of[n]] or [0.0])
             for n in self.dataset_names]
        )
        if scores.sum() > 0:
            weights = self.weights.numpy().astype("float64")
            weights = weights / weights.sum()
            weights = (1 - self.smoothing) * weights + self.smoothing * scores / scores.sum()
            k = len(weights)
            weights = self.min_weight + (1 - k * self.min_weight) * weights
            self.weights.assign(weights.astype("float32"))
        self.history.append(self.current_weights())


def _target(task, spec):
    if isinstance(spec, (str, bytes)) or not isinstance(spec, Sequence) or (
        len(spec) not in (2, 3)
    ):
        raise ValueError(
            f"Invalid target for task '{task}': {spec!r}. Expected (metric_name, "
            "target) or (metric_name, target, 'max'|'min')."
        )
    metric, target = str(spec[0]), float(spec[1])
    if len(spec) == 3:
        mode = spec[2]
        if mode not in ("max", "min"):
            raise ValueError(
                f"Invalid mode for the target of task '{task}': {mode!r}. Expected "
                "'max' or 'min'."
            )
    else:
        # "loss/<task>" is MultiTaskModel's per-task loss tracker.
        name = metric.removeprefix("val_")
        lower = name.startswith("loss/") or name.split("/")[-1].endswith(_LOWER_IS_BETTER)
        mode = "min" if lower else "max"
    return metric, target, mode
