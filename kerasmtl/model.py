"""`MultiTaskModel`: a functional Keras model with one output per `Task`.

It wires tasks, sharing and weighting together:

- `compile()` takes each task's masked loss and default metrics ("auto"); a user
  may override any of them per task.
- `compute_loss()` computes every task's masked mean loss, feeds the dict to the
  weighting layer, adds the soft-sharing penalty and regularisation losses, and
  tracks `loss/<task>`, `weight/<task>` (and `loss/soft_sharing`; a gradient
  balancer's step adds `grad_cos/<a>-<b>`) as metrics, so they appear in
  `History` and TensorBoard.
- `fit()` / `evaluate()` check labels before training: a label dict missing a
  task or naming an unknown one, a shape that does not fit the task, a NaN
  class label, each raise a ValueError naming the task (`model_inputs.py`).

Loss-level weightings use Keras' own train step plus one check
(`_weighted_train_step`: a non-finite loss or gradient skips the step and is
counted, as for balancers): the multi-task logic lives in `compute_loss` and
`compute_metrics`, so distribution strategies and `steps_per_execution` work
unchanged. A weighting's epoch-end update (DWA) runs before the user's
callbacks, so that backups hold the updated state. A
gradient-level `GradientBalancer` (PCGrad, MGDA, ...) needs per-task
gradients, so `train_step` takes its own path for it (`_balanced_train_step`,
see there for what goes where). `AutoLambda` runs its meta-step first.
Under `tf.distribute` the losses and checks come from `distribution.py`.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence

import keras
import tensorflow as tf
from keras import ops

from kerasmtl import tasks as tasks_lib
from kerasmtl.autograph import skip_autograph
from kerasmtl.balanced_training import GradientBalancingMixin
from kerasmtl.distribution import all_finite, global_means, replicas_in_sync
from kerasmtl.flip_averaging import FlipAveragingMixin, check_test_time_flips
from kerasmtl.model_compile import CompileMixin
from kerasmtl.model_inputs import (
    LabelChecksMixin,
    check_outputs,
    label_errors_as_value_errors,
    shuffled_by_caller,
    strings_as_tensors,
)
from kerasmtl.model_serving import ServingOutputsMixin
from kerasmtl.model_soft_sharing import SoftSharingMixin, check_soft_sharing
from kerasmtl.multi_worker import MultiWorkerTrainingMixin
from kerasmtl.weighting import AutoLambda, Equal, GradientBalancer, LossWeighting


@keras.saving.register_keras_serializable(package="kerasmtl")
class MultiTaskModel(
    MultiWorkerTrainingMixin,
    GradientBalancingMixin,
    LabelChecksMixin,
    CompileMixin,
    FlipAveragingMixin,
    ServingOutputsMixin,
    SoftSharingMixin,
    keras.Model,
):
    """A functional model whose outputs are a dict keyed by task name.

    Most users get one from a builder (`kerasmtl.sharing.hard_sharing`,
    `soft_sharing`) rather than constructing it directly.

    Args:
        inputs: Keras input tensor(s), as for `keras.Model`.
        outputs: dict mapping each task name to its output tensor.
        name: str or None. The model's name.
        tasks: sequence of `kerasmtl.tasks.Task`, one per output, names unique.
        weighting: `kerasmtl.weighting.LossWeighting` (loss level) or
            `kerasmtl.weighting.GradientBalancer` (gradient level, e.g.
            `PCGrad()`), or None. How the tasks combine. Defaults to `Equal()`
            (the sum of the losses).
        soft_sharing: dict or None. `{"penalty": float, "groups": [[layer
            name per task], ...]}`: an L2 penalty pulling the weights of
            corresponding layers together (set by `sharing.soft_sharing`).
        shared_features: Keras tensor, list of Keras tensors, dict or None.
            The shared representation (the trunk's output, which the heads
            read; several outputs, e.g. an FPN level and a stride-2 skip,
            as a list), needed by a balancer with `rep_grad=True`;
            `hard_sharing` sets it. Saved as the name of the layer that
            outputs it.
        test_time_flips: int. 1, 2 or 4: `predict` and the exported
            SavedModel average the outputs over this many flips of the image
            inputs (`kerasmtl.flip_averaging`); training, `evaluate` and
            `model(x)` take one pass. Defaults to `1`.

    Examples:

    >>> import keras, kerasmtl as mtl
    >>> task = mtl.tasks.Regression("y")
    >>> x = keras.Input((4,))
    >>> model = mtl.MultiTaskModel(x, {"y": task.build_head(x)}, tasks=[task])
    >>> model.task_names
    ['y']
    """

    def __init__(
        self,
        inputs,
        outputs,
        name=None,
        *,
        tasks: Sequence[tasks_lib.Task],
        weighting: LossWeighting | dict | None = None,
        soft_sharing: dict | None = None,
        shared_features=None,
        test_time_flips: int = 1,
        **kwargs,
    ):
        # === Tasks ===
        tasks = [tasks_lib.deserialize(t) for t in tasks]
        if not tasks:
            raise ValueError("A MultiTaskModel needs at least one task.")
        names = [t.name for t in tasks]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(
                f"Task name(s) {duplicates} used more than once. Each task needs a "
                "unique name: it keys the outputs, the labels and the metrics."
            )
        check_outputs(outputs, tasks)

        # === Functional model ===
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)

        # === Multi-task state ===
        # Plain tuple, set around Keras' attribute tracker (which would wrap
        # it and track the tasks as state): tasks are specs, bound to this
        # model's layers where their kind needs them. The same holds for the
        # other object.__setattr__ calls of this class: plain Python state.
        object.__setattr__(self, "_tasks", tuple(t.bind(self) for t in tasks))
        if isinstance(weighting, dict):
            weighting = keras.saving.deserialize_keras_object(weighting)
        weighting = weighting if weighting is not None else Equal()
        if not isinstance(weighting, LossWeighting):
            raise ValueError(
                "Invalid value for argument `weighting`. Expected a "
                "kerasmtl.weighting.LossWeighting (e.g. mtl.weighting.Uncertainty())."
                f" Received: {weighting!r}"
            )
        if weighting.built and weighting.task_names != names:
            raise ValueError(
                f"The weighting layer was built for tasks {weighting.task_names}, "
                f"this model's tasks are {names}. Use a new weighting object."
            )
        if not weighting.built:
            weighting.build({n: () for n in names})
        self.weighting = weighting
        object.__setattr__(self, "soft_sharing", check_soft_sharing(self, soft_sharing))
        object.__setattr__(self, "_mtl_metrics", {})
        self._set_shared_features(shared_features)
        object.__setattr__(self, "test_time_flips", check_test_time_flips(test_time_flips))

    # -- tasks ----------------------------------------------------------------

    @property
    def tasks(self) -> list[tasks_lib.Task]:
        return list(self._tasks)

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self._tasks]

    def get_task(self, name: str) -> tasks_lib.Task:
        for task in self._tasks:
            if task.name == name:
                return task
        raise KeyError(f"No task named '{name}'. The model's tasks are {self.task_names}.")

    # -- loss and metrics -----------------------------------------------------

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        total, _, _, _ = self._compute_losses(y, y_pred, sample_weight, training)
        return total

    def _compute_losses(self, y, y_pred, sample_weight, training, track_weights=True):
        """Returns `(total, losses, present, extra)`: the total as Keras wants
        it (divided by the replicas), the per-task losses (each replica's
        estimate of the global-batch masked mean, times `loss_weight`), their
        presence (1.0 if the global batch has a known label) and the
        soft-sharing penalty plus regularisation losses (None if none)."""
        replicas = replicas_in_sync()
        means, counts = self._task_means(y, y_pred, sample_weight)
        if self._mtl_metrics:
            for name in self.task_names:
                self._mtl_metrics["loss"][name].update_state(
                    means[name], sample_weight=counts[name])
        if replicas > 1:
            means, counts = global_means(means, counts, replicas)
        losses = {t.name: means[t.name] * t.loss_weight for t in self._tasks}
        present = {name: ops.cast(count > 0, "float32") for name, count in counts.items()}
        total = self.weighting(losses, present, training=training)
        if self._mtl_metrics and track_weights:
            self._track_weights()
        extra = None
        if self.soft_sharing:
            extra = self.soft_sharing_penalty()
            if "penalty" in self._mtl_metrics:
                self._mtl_metrics["penalty"].update_state(extra)
        if self.losses:
            regularization = ops.sum(
                ops.stack([ops.cast(v, "float32") for v in self.losses])
            )
            extra = regularization if extra is None else extra + regularization
        if extra is not None:
            total = total + extra
        # As Keras' own compute_loss: gradients are summed over replicas.
        total = total / replicas if replicas > 1 else total
        return total, losses, present, extra

    def _task_means(self, y, y_pred, sample_weight):
        """`(means, counts)`: each task's masked mean loss over this replica's
        known labels (not times `loss_weight`) and their weighted count."""
        y = self.check_label_structure(y)
        sample_weights = self._sample_weights_by_task(sample_weight)
        means, counts = {}, {}
        for task in self._tasks:
            labels = task.assert_label_values(y[task.name])
            means[task.name], counts[task.name] = task.masked_loss(
                labels,
                y_pred[task.name],
                sample_weight=sample_weights[task.name],
                loss_fn=self._loss_fns[task.name],
            )
        return means, counts

    def _track_weights(self):
        for i, name in enumerate(self.task_names):
            self._mtl_metrics["weight"][name].update_state(self.weighting.task_weights[i])

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        y = self.check_label_structure(y)
        sample_weights = self._sample_weights_by_task(sample_weight)
        for task in self._tasks:
            task.update_metrics(
                self._mtl_metrics["task"][task.name],
                y[task.name],
                y_pred[task.name],
                sample_weight=sample_weights[task.name],
            )
        return self.get_metrics_result()

    def train_step_metrics(self, x, y, y_pred, sample_weight=None):
        """What a train step returns: `compute_metrics`, or without the tasks'
        metrics when compiled with `train_metrics=False`."""
        if getattr(self, "_train_metrics", True):
            return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
        skipped = {m.name for group in self._mtl_metrics["task"].values() for m in group}
        return {name: value for name, value in self.get_metrics_result().items()
                if name not in skipped}

    def _sample_weights_by_task(self, sample_weight):
        if sample_weight is None:
            return {n: None for n in self.task_names}
        if isinstance(sample_weight, dict):
            self._check_known_tasks(sample_weight, "sample_weight")
            return {n: sample_weight.get(n) for n in self.task_names}
        return {n: sample_weight for n in self.task_names}

    # -- training -------------------------------------------------------------

    def fit(self, *args, **kwargs):
        bound = _FIT_SIGNATURE.bind(self, *args, **kwargs).arguments
        self._check_data(bound.get("x"), bound.get("y"))
        bound["x"] = strings_as_tensors(bound.get("x"))
        validation = bound.get("validation_data")
        if isinstance(validation, (tuple, list)) and len(validation) >= 2:
            self._check_data(validation[0], validation[1])
            bound["validation_data"] = (strings_as_tensors(validation[0]),
                                        *validation[1:])
        elif isinstance(validation, tf.data.Dataset):
            self._check_data(validation, None)
        callbacks = list(bound.get("callbacks") or [])
        if type(self.weighting).on_epoch_end is not LossWeighting.on_epoch_end:
            # First, so that the user's callbacks (BackupAndRestore,
            # ModelCheckpoint) see and save the state after this epoch's update.
            callbacks.insert(0, _EpochEndWeighting())
        bound["callbacks"] = callbacks
        if "shuffle" not in bound and shuffled_by_caller(bound.get("x")):
            # Keras' default shuffle=True only applies to arrays; passed with a
            # dataset or generator it just warns that it is ignored.
            bound["shuffle"] = False
        bound.pop("self")
        with label_errors_as_value_errors():
            return super().fit(**bound.pop("kwargs", {}), **bound)

    def evaluate(self, *args, **kwargs):
        bound = _EVALUATE_SIGNATURE.bind(self, *args, **kwargs).arguments
        self._check_data(bound.get("x"), bound.get("y"))
        bound["x"] = strings_as_tensors(bound.get("x"))
        bound.pop("self")
        # fit() passes private keywords (validation caching) through **kwargs.
        with label_errors_as_value_errors():
            return super().evaluate(**bound.pop("kwargs", {}), **bound)

    def predict(self, x, *args, **kwargs):
        return super().predict(strings_as_tensors(x), *args, **kwargs)

    def train_step(self, data):
        if isinstance(self.weighting, GradientBalancer):
            return self._balanced_train_step(data)
        return self._weighted_train_step(data)

    @skip_autograph
    def _weighted_train_step(self, data):
        """Keras' own train step, except that a non-finite loss or gradient
        (an inf in the inputs, a diverging loss) skips the step as a gradient
        balancer does: weights, optimizer state and `optimizer.iterations`
        are unchanged, and `weighting/skipped_steps` counts it. Non-trainable
        state updated in the forward pass (BatchNormalization statistics) is
        not rolled back."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        replicas = replicas_in_sync()
        if isinstance(self.weighting, AutoLambda):
            self.weighting.meta_step(self, x, y, sample_weight)
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(x, y, y_pred, sample_weight, training=True)
            scaled = self.optimizer.scale_loss(loss)
        loss_tracker = getattr(self, "_loss_tracker", None)
        if loss_tracker is not None:
            batch = tf.shape(next(t for t in tf.nest.flatten(x) if t is not None))[0]
            loss_tracker.update_state(loss * replicas, sample_weight=batch)
        variables = list(self.trainable_weights)
        if variables:
            grads = tape.gradient(scaled, variables)
            ok = all_finite([loss, *grads])
            self._apply_unless_skipped(ok, grads, variables)
            self._count_skipped(ok)
        else:
            warnings.warn("The model does not have any trainable weights.", stacklevel=2)
        return self.train_step_metrics(x, y, y_pred, sample_weight=sample_weight)

    # -- config ---------------------------------------------------------------

    def get_config(self):
        return {
            **super().get_config(),
            "tasks": [tasks_lib.serialize(t) for t in self._tasks],
            "weighting": keras.saving.serialize_keras_object(self.weighting),
            "soft_sharing": self.soft_sharing,
            "shared_features": self.shared_features,
            "test_time_flips": self.test_time_flips,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # Keras' public from_config cannot pass extra constructor arguments to
        # a functional subclass; this is the function it uses internally
        # (private API; guarded by the .keras round trips in tests/test_model.py).
        from keras.src.models.functional import functional_from_config

        config = dict(config)
        config["tasks"] = [tasks_lib.deserialize(t) for t in config["tasks"]]
        config["weighting"] = keras.saving.deserialize_keras_object(
            config["weighting"], custom_objects=custom_objects
        )
        return functional_from_config(cls, config, custom_objects=custom_objects)


class _EpochEndWeighting(keras.callbacks.Callback):
    """Hands each epoch's mean per-task training losses to the weighting."""

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.model.weighting.on_epoch_end(
            {n: logs.get(f"loss/{n}", 0.0) for n in self.model.task_names}
        )


_FIT_SIGNATURE = inspect.signature(keras.Model.fit)
_EVALUATE_SIGNATURE = inspect.signature(keras.Model.evaluate)
