"""`MultiTaskModel.compile`: per-task losses and metrics, the trackers of
per-task losses, weights and skipped steps, and the compile config saved
with the model. A mixin of `MultiTaskModel` (which provides `_tasks`,
`task_names`, `weighting` and `soft_sharing`), kept apart so that
`model.py` reads as the model's wiring.
"""

from __future__ import annotations

import keras
import numpy as np

from kerasmtl.balanced_training import gradient_cosine_metrics
from kerasmtl.weighting import GradientBalancer


class CompileMixin:
    """`MultiTaskModel`'s compile, compile config and metrics list."""

    def compile(self, optimizer="rmsprop", loss="auto", metrics="auto",
                train_metrics=True, log_gradient_cosine=True, **kwargs):
        """Configures training; losses and metrics default to the tasks' own.

        Args:
            optimizer: as for `keras.Model.compile`.
            loss: `"auto"`, or a dict mapping task names to `"auto"` or a Keras
                loss (applied per label element for regression and multi-label
                tasks, per example otherwise, and masked either way).
            metrics: `"auto"`, or a dict mapping task names to `"auto"` or a
                list of Keras metrics (names or objects).
            train_metrics: bool. Compute the tasks' metrics in training steps
                too. `False` computes them in evaluation only (`evaluate`,
                the dev pass of `fit`): training logs then hold the losses and
                weights alone, and steps whose metrics cost real work (a CRF
                task's Viterbi decoding and entity chunking) get cheaper.
                Defaults to `True`.
            log_gradient_cosine: bool. With a `GradientBalancer`, log the
                epoch mean cosine similarity of each pair of task gradients
                as `grad_cos/<a>-<b>` (a by-product of the balancer's Gram
                matrix; see `kerasmtl.balanced_training`). Ignored with a
                loss weighting, which has no per-task gradients. Defaults
                to `True`.
            **kwargs: passed to `keras.Model.compile` (`steps_per_execution`,
                `jit_compile`, ...). `loss_weights` is not accepted: use a
                task's `loss_weight` or `weighting=Static(...)`.
        """
        for key in ("loss_weights", "weighted_metrics"):
            if kwargs.get(key) is not None:
                raise ValueError(
                    f"MultiTaskModel.compile does not take `{key}`. Weight tasks with "
                    "`Task(..., loss_weight=...)` or `weighting=mtl.weighting.Static(...)`;"
                    " pass sample weights to fit() to weight examples."
                )
            kwargs.pop(key, None)
        loss_by_task = self._per_task_argument("loss", loss)
        metrics_by_task = self._per_task_argument("metrics", metrics)

        loss_fns = {t.name: t.resolve_loss(loss_by_task[t.name]) for t in self._tasks}
        object.__setattr__(self, "_loss_fns", loss_fns)
        task_metrics = {}
        for task in self._tasks:
            spec = metrics_by_task[task.name]
            if isinstance(spec, str) and spec == "auto":
                metrics_list = task.default_metrics()
            else:
                if not isinstance(spec, (list, tuple)):
                    spec = [spec]
                metrics_list = [task.metric_from_identifier(m) for m in spec]
            for metric in metrics_list:
                metric.name = f"{task.name}/{metric.name}"
            task_metrics[task.name] = metrics_list
        super().compile(optimizer=optimizer, loss=None, metrics=None, **kwargs)

        trackers = {
            "loss": {n: keras.metrics.Mean(name=f"loss/{n}") for n in self.task_names},
            "weight": {n: keras.metrics.Mean(name=f"weight/{n}") for n in self.task_names},
            "task": task_metrics,
        }
        if self.soft_sharing:
            trackers["penalty"] = keras.metrics.Mean(name="loss/soft_sharing")
        if isinstance(self.weighting, GradientBalancer):
            trackers["skipped"] = keras.metrics.Sum(name="balancer/skipped_steps")
            if log_gradient_cosine:
                trackers["grad_cos"] = gradient_cosine_metrics(self.task_names)
        else:
            trackers["skipped"] = keras.metrics.Sum(name="weighting/skipped_steps")
        object.__setattr__(self, "_mtl_metrics", trackers)
        self._build_task_metrics()
        self._train_metrics = bool(train_metrics)
        config = dict(optimizer=self.optimizer, loss=loss, metrics=metrics, **kwargs)
        if not train_metrics:  # absent when True: configs saved before it load alike
            config["train_metrics"] = False
        if not log_gradient_cosine:
            config["log_gradient_cosine"] = False
        self._compile_config = _SerializableCompileConfig(**config)

    def _per_task_argument(self, argument, value):
        if isinstance(value, str) and value == "auto" or value is None:
            return {n: "auto" for n in self.task_names}
        if not isinstance(value, dict):
            raise ValueError(
                f"Invalid value for argument `{argument}` of MultiTaskModel.compile. "
                f"Expected 'auto' or a dict keyed by task name ({self.task_names}). "
                f"Received: {value!r}"
            )
        self._check_known_tasks(value, f"`{argument}`")
        return {n: value.get(n, "auto") for n in self.task_names}

    def _check_known_tasks(self, keys, what: str, hint: str = "") -> None:
        unknown = sorted(set(keys) - set(self.task_names))
        if unknown:
            raise ValueError(
                f"{what} name unknown task(s) {unknown}; the model's tasks are "
                f"{self.task_names}.{hint}"
            )

    def _build_task_metrics(self):
        # Metrics that create their variables lazily (e.g. F1Score) must do so
        # eagerly now, not inside the traced train function.
        for task in self._tasks:
            y = task.example_labels()
            y_pred = np.zeros((1, *[d or 1 for d in task.output_shape]), "float32")
            task.update_metrics(self._mtl_metrics["task"][task.name], y, y_pred)
            for metric in self._mtl_metrics["task"][task.name]:
                metric.reset_state()

    def get_compile_config(self):
        if self.compiled and hasattr(self, "_compile_config"):
            return self._compile_config.serialize()
        return None

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    @property
    def metrics(self):
        metrics = list(super().metrics)
        trackers = self._mtl_metrics
        for group in ("loss", "weight"):
            metrics.extend(trackers.get(group, {}).values())
        for group in ("penalty", "skipped"):
            if group in trackers:
                metrics.append(trackers[group])
        metrics.extend(self._visible_gradient_cosine())
        for metric_list in trackers.get("task", {}).values():
            metrics.extend(metric_list)
        unique = []
        for metric in metrics:
            if all(metric is not m for m in unique):
                unique.append(metric)
        return unique


class _SerializableCompileConfig:
    def __init__(self, **config):
        self.config = config

    def serialize(self):
        return keras.saving.serialize_keras_object(self.config)
