"""`AnnealedSampling`: data-set sampling annealed from proportional to uniform.

Stickland and Murray, "BERT and PALs: Projected Attention Layers for
Efficient Adaptation in Multi-Task Learning", ICML 2019 (section 4,
"annealed sampling"), as in TF Model Garden's multi-task trainer
(`official/modeling/multitask/task_sampler.py`, `AnnealingTaskSampler`):
early in training data sets are drawn in proportion to their sizes, later
ever closer to uniformly, so that the small tasks are not starved at the end
and the large ones not overfitted at the start.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from kerasmtl.data.dynamic_sampling import DynamicSampling


class AnnealedSampling(DynamicSampling):
    """Anneals `mix(..., strategy="dynamic")`'s weights from sizes to uniform.

    Formula (step = `optimizer.iterations`, `n_d` the size of data set `d`):
    ```
    e     = floor(step / steps_per_epoch)                  # epoch, from 0
    E     = total_steps / steps_per_epoch                  # epochs in the schedule
    alpha = max(final_alpha, 1 - (1 - final_alpha) * e / (E - 1))
    p_d   = n_d ** alpha / sum_d' n_d' ** alpha
    ```
    `alpha` is 1 (proportional) in the first epoch and `final_alpha` (0.2 in
    the paper: near uniform) in the last, and stays there after it.

    Departures from Model Garden's `AnnealingTaskSampler`, which computes
    `alpha = 1 - 0.8 (e - 1) / (E - 1)` with the same 0-based `e`: there the
    first epoch has `alpha = 1 + 0.8 / (E - 1)` (sharper than proportional)
    and the last `0.2 + 0.8 / (E - 1)`, and `alpha` keeps falling past
    `total_steps` (below 0 the small sets outweigh the large). This class
    follows the paper (1-based epochs there) and holds `final_alpha`. Model
    Garden draws one task per step (a whole batch from one data set); `mix`
    draws per example, so a batch mixes data sets in these proportions.

    Use it as `DynamicSampling`: pass it to `mix(..., strategy="dynamic",
    sampler=...)` (the data sets are repeated forever; `mix`'s `weights` are
    not used) and to `fit(..., steps_per_epoch=N, callbacks=[...])`. The
    weights are set before every batch whose epoch `e` changed; elements that
    `tf.data` drew ahead (prefetch) keep the weights they were drawn with.

    Args:
        sizes: dict `{data set name: size}` (names as given to `mix`), or a
            list of sizes in `mix`'s data-set order. Numbers > 0.
        total_steps: int >= 1. Training steps of the whole schedule.
        steps_per_epoch: int >= 1. Steps per epoch `e` of the schedule; the
            schedule needs at least two epochs (`total_steps >= 2 *
            steps_per_epoch`). Use 1 to anneal at every step.
        final_alpha: float in [0, 1]. `alpha` of the last epoch. Defaults to
            `0.2` (paper and Model Garden).

    Examples:

    >>> sampling = AnnealedSampling({"big": 900, "small": 100}, total_steps=30,
    ...                             steps_per_epoch=10, final_alpha=0.5)
    >>> sampling.probabilities(0).round(3).tolist()    # alpha 1: proportional
    [0.9, 0.1]
    >>> sampling.probabilities(25).round(3).tolist()   # alpha 0.5: sqrt sizes
    [0.75, 0.25]
    >>> from kerasmtl.data.mixing import mix
    >>> big = tf.data.Dataset.from_tensor_slices(([[0.0]] * 9, {"a": [0] * 9}))
    >>> small = tf.data.Dataset.from_tensor_slices(([[1.0]], {"b": [0]}))
    >>> ds = mix({"big": big, "small": small}, strategy="dynamic", sampler=sampling)
    >>> sampling.current_weights()
    {'big': 0.9, 'small': 0.1}
    """

    def __init__(
        self,
        sizes: Mapping[str, float] | Sequence[float],
        total_steps: int,
        steps_per_epoch: int,
        final_alpha: float = 0.2,
    ):
        # Not DynamicSampling.__init__: there are no targets; the state that
        # mix() and current_weights() use is set here.
        keras.callbacks.Callback.__init__(self)
        if isinstance(sizes, Mapping):
            names, values = [str(n) for n in sizes], list(sizes.values())
        elif isinstance(sizes, Sequence) and not isinstance(sizes, str):
            names, values = None, list(sizes)
        else:
            names, values = None, None
        values = np.asarray(values, "float64") if values is not None else None
        if values is None or values.ndim != 1 or not values.size or not np.all(values > 0):
            raise ValueError(
                "Invalid value for argument `sizes`. Expected a dict {data set name: "
                "size} or a list of sizes, all > 0. Received: sizes={sizes!r}"
            )
        for argument, value in (("total_steps", total_steps),
                                ("steps_per_epoch", steps_per_epoch)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (
                value < 1
            ):
                raise ValueError(
                    f"Invalid value for argument `{argument}`. Expected an int >= 1. "
                    f"Received: {argument}={value!r}"
                )
        if total_steps < 2 * steps_per_epoch:
            raise ValueError(
                f"AnnealedSampling anneals over epochs of {steps_per_epoch} steps, but "
                f"total_steps={total_steps} holds fewer than two: alpha would go from 1 "
                "to final_alpha in no time. Lower `steps_per_epoch` (1 anneals every "
                "step) or raise `total_steps`."
            )
        if not (isinstance(final_alpha, (int, float)) and 0.0 <= final_alpha <= 1.0):
            raise ValueError(
                "Invalid value for argument `final_alpha`. Expected a float in [0, 1]. "
                f"Received: final_alpha={final_alpha!r}"
            )
        self.size_names = names
        self.sizes = values
        self.total_steps = int(total_steps)
        self.steps_per_epoch = int(steps_per_epoch)
        self.final_alpha = float(final_alpha)
        self.targets = {}
        self.weights = None
        self.dataset_names: list[str] = []
        self.history: list[dict[str, float]] = []
        self._epoch_set = None
        self._steps_seen = 0

    @classmethod
    def from_datasets(
        cls,
        datasets: Mapping[str, tf.data.Dataset] | Sequence[tf.data.Dataset],
        total_steps: int,
        steps_per_epoch: int,
        final_alpha: float = 0.2,
    ) -> AnnealedSampling:
        """An `AnnealedSampling` whose sizes are the data sets' cardinalities
        (finite and known: take them before `.repeat()`)."""
        items = (datasets.items() if isinstance(datasets, Mapping)
                 else ((f"dataset_{i}", ds) for i, ds in enumerate(datasets)))
        sizes = {}
        for name, ds in items:
            size = int(ds.cardinality())
            if size <= 0:
                raise ValueError(
                    f"AnnealedSampling samples by data-set size, but the size of data "
                    f"set '{name}' is {'empty' if size == 0 else 'unknown or infinite'}."
                    " Pass `sizes=` to AnnealedSampling(...) instead."
                )
            sizes[name] = size
        return cls(sizes, total_steps, steps_per_epoch, final_alpha)

    def alpha(self, step: int) -> float:
        """The exponent `alpha` at training step `step`."""
        epoch = step // self.steps_per_epoch
        epochs = self.total_steps / self.steps_per_epoch
        value = 1.0 - (1.0 - self.final_alpha) * epoch / (epochs - 1.0)
        return max(self.final_alpha, value)

    def probabilities(self, step: int) -> np.ndarray:
        """Sampling probabilities at `step`, in the order of `sizes`."""
        powered = self.sizes ** self.alpha(step)
        return powered / powered.sum()

    def bind(self, dataset_names, tasks_of, initial):
        """Called by `mix`: creates the weights variable for these data sets."""
        if self.weights is not None:
            raise ValueError(
                "This AnnealedSampling already drives another mix(); create one per "
                "mixture."
            )
        names = list(dataset_names)
        order = list(range(len(names)))
        if self.size_names is not None:
            if set(self.size_names) != set(names):
                raise ValueError(
                    f"AnnealedSampling has sizes for data sets {self.size_names}, the "
                    f"mixture's data sets are {names}. Give one size per data set, by "
                    "the names given to mix()."
                )
            order = [self.size_names.index(n) for n in names]
        elif len(self.sizes) != len(names):
            raise ValueError(
                f"AnnealedSampling has {len(self.sizes)} sizes, the mixture has "
                f"{len(names)} data sets {names}."
            )
        self.sizes = self.sizes[order]
        self.size_names = names
        self.dataset_names = names
        self.tasks_of = {name: list(tasks_of[name]) for name in names}
        self.weights = tf.Variable(
            self.probabilities(0).astype("float32"), trainable=False,
            name="sampling_weights",
        )
        self._epoch_set = 0

    def on_train_batch_begin(self, batch, logs=None):
        self._steps_seen += 1
        step = self._steps_seen - 1
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None:  # resumed training continues the schedule
            step = int(optimizer.iterations.numpy())
        epoch = step // self.steps_per_epoch
        if self.weights is not None and epoch != self._epoch_set:
            self.weights.assign(self.probabilities(step).astype("float32"))
            self._epoch_set = epoch

    def on_epoch_end(self, epoch, logs=None):
        if self.weights is None:
            raise ValueError(
                "AnnealedSampling is not bound to a mixture. Pass it to "
                "mix(..., strategy='dynamic', sampler=...) first."
            )
        self.history.append(self.current_weights())
