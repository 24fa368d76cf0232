"""What a zoo model's training run uses besides the model: the data its
data function returns (`TrainingData`, `load_training_data`) and the
budget (`Settings`, `training_settings`: epochs, batch size, optimizer,
early stopping, filled from the caller, the model's recipe, then the
defaults here). Recipes and data functions import it; `zoo.training` runs
the training.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import tensorflow as tf

from kerasmtl import weighting_spec
from zoo import training_callbacks
from zoo.registry import get_entry

# Used where neither the caller nor the model's recipe says otherwise.
DEFAULT_EPOCHS = 5
DEFAULT_BATCH_SIZE = 32
DEFAULT_OPTIMIZER = "adam"


def cosine_adam(learning_rate: float, *, alpha: float = 0.0,
                clipnorm: float | None = None) -> Callable:
    """A recipe's `optimizer`: `(steps_per_epoch, epochs) -> Adam` on a
    cosine decay from `learning_rate` to `alpha * learning_rate` over the
    run; a constant `learning_rate` when the data's length is unknown."""

    def make(steps_per_epoch: int | None, epochs: int) -> keras.optimizers.Optimizer:
        if not steps_per_epoch:
            return keras.optimizers.Adam(learning_rate, clipnorm=clipnorm)
        schedule = keras.optimizers.schedules.CosineDecay(
            learning_rate, decay_steps=steps_per_epoch * epochs, alpha=alpha)
        return keras.optimizers.Adam(schedule, clipnorm=clipnorm)

    return make


@dataclass
class TrainingData:
    """What a zoo model's data function returns.

    `train` and `dev` are `(x, {task: labels})` tuples or `tf.data.Dataset`s of
    such batches; `tasks` the tasks the data labels (in the model's order);
    `model_kwargs` the factory arguments the data fixes; `summary` one line
    for the log (source, sizes).
    """

    train: object
    dev: object
    tasks: list
    model_kwargs: dict = field(default_factory=dict)
    summary: str = ""


def load_training_data(name: str, spec: str, *, batch_size: int = 32,
                       seed: int = 0, dev_fraction: float | None = None) -> TrainingData:
    """Runs zoo model `name`'s data function on `spec`.

    `dev_fraction` (None: the recipe's default) is passed on to data
    functions that take it; for the others it is an error, not ignored.
    Refuses data with no training or dev example.
    """
    entry = get_entry(name)
    if entry.data is None:
        raise ValueError(
            f"Zoo model '{name}' has no training recipe (no data function is "
            "registered); build it with zoo.create_model and call fit yourself."
        )
    check_positive_int("batch_size", batch_size)
    options = {"batch_size": batch_size, "seed": seed}
    if dev_fraction is not None:
        if "dev_fraction" not in inspect.signature(entry.data).parameters:
            raise ValueError(
                f"Zoo model '{name}' reads its dev set from the data; --dev-fraction "
                f"(dev_fraction={dev_fraction}) does not apply to it. Leave it out."
            )
        options["dev_fraction"] = dev_fraction
    data = entry.data(spec, **options)
    for part in ("train", "dev"):
        if num_examples(getattr(data, part)) == 0:
            raise ValueError(
                f"--data '{spec}' gives zoo model '{name}' no {part} examples "
                f"({data.summary}). Training needs at least one of each."
            )
    return data


def check_positive_int(argument: str, value) -> None:
    # Zero epochs or batches would train nothing and still save and export.
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected an int >= 1. "
            f"Received: {argument}={value!r}"
        )


def num_examples(data) -> int | None:
    """Rows of `(x, y)` arrays, batches of a dataset; None if unknown."""
    if isinstance(data, tf.data.Dataset):
        count = int(data.cardinality())
        return count if count >= 0 else None
    x = data[0] if isinstance(data, tuple) else data
    shape = getattr(tf.nest.flatten(x)[0], "shape", ())
    return int(shape[0]) if len(shape) and shape[0] is not None else None


@dataclass
class Settings:
    """The effective training budget of a run, and where each value came
    from (`"given"`, `"recipe"` or `"default"`)."""

    epochs: int
    batch_size: int
    optimizer: object  # a name, an Optimizer, or `(steps_per_epoch, epochs) -> Optimizer`
    sources: dict
    # Patience in epochs on the dev loss (0: off), and where it came from.
    early_stopping: int = 0
    early_stopping_source: str = "default"
    # What early stopping and the best checkpoint watch (a logged key).
    monitor: str = training_callbacks.MONITOR
    monitor_source: str = "default"
    # The recipe's weighting (a --weighting spelling), None: the model's own.
    weighting: str | None = None
    # Task metrics in training steps too (MultiTaskModel.compile).
    train_metrics: bool = True

    def weighting_factory(self, given: Callable | None = None) -> Callable | None:
        """The weighting factory `given`, else the recipe's, else None."""
        if given is not None or self.weighting is None:
            return given
        return weighting_spec.weighting_factory(self.weighting)

    def make_optimizer(self, steps_per_epoch: int | None) -> keras.optimizers.Optimizer:
        """A fresh optimizer for a run of `steps_per_epoch` steps per epoch."""
        if isinstance(self.optimizer, keras.optimizers.Optimizer):
            return self.optimizer
        if callable(self.optimizer):
            optimizer = self.optimizer(steps_per_epoch, self.epochs)
            if not isinstance(optimizer, keras.optimizers.Optimizer):
                raise ValueError(
                    f"The recipe's optimizer function returned {optimizer!r}. It must "
                    "return a keras.optimizers.Optimizer."
                )
            return optimizer
        return keras.optimizers.get(self.optimizer)

    def describe(self, steps_per_epoch: int | None = None) -> str:
        optimizer = self.make_optimizer(steps_per_epoch)
        rate = optimizer.get_config().get("learning_rate")
        if isinstance(rate, dict):  # a schedule: name it, not its whole config
            rate = rate.get("class_name", "schedule")
        elif isinstance(rate, float):
            rate = f"{rate:g}"
        return (f"epochs={self.epochs} ({self.sources['epochs']}), "
                f"batch_size={self.batch_size} ({self.sources['batch_size']}), "
                f"optimizer={type(optimizer).__name__}(learning_rate={rate}) "
                f"({self.sources['optimizer']})"
                + (f", early_stopping={self.early_stopping} on "
                   f"{self.monitor} ({self.early_stopping_source})"
                   if self.early_stopping else ""))


def training_settings(name: str, *, epochs: int | None = None,
                      batch_size: int | None = None, optimizer=None,
                      early_stopping: int | None = None,
                      monitor: str | None = None) -> Settings:
    """Fills the settings not given (None) from zoo model `name`'s recipe,
    then from the global defaults (early stopping: off), and checks them."""
    recipe = get_entry(name).recipe
    values, sources = {}, {}
    for key, given, default in (("epochs", epochs, DEFAULT_EPOCHS),
                                ("batch_size", batch_size, DEFAULT_BATCH_SIZE),
                                ("optimizer", optimizer, DEFAULT_OPTIMIZER)):
        if given is not None:
            values[key], sources[key] = given, "given"
        elif key in recipe:
            values[key], sources[key] = recipe[key], "recipe"
        else:
            values[key], sources[key] = default, "default"
    check_positive_int("epochs", values["epochs"])
    check_positive_int("batch_size", values["batch_size"])
    if early_stopping is not None:
        patience, patience_source = early_stopping, "given"
    elif "early_stopping" in recipe:
        patience, patience_source = recipe["early_stopping"], "recipe"
    else:
        patience, patience_source = 0, "default"
    training_callbacks.check_early_stopping(patience)
    if monitor is not None:
        watched, watched_source = monitor, "given"
    else:
        watched = recipe.get("monitor", training_callbacks.MONITOR)
        watched_source = "recipe" if "monitor" in recipe else "default"
    return Settings(sources=sources, early_stopping=patience,
                    early_stopping_source=patience_source,
                    monitor=training_callbacks.monitor_key(watched),
                    monitor_source=watched_source, weighting=recipe.get("weighting"),
                    train_metrics=recipe.get("train_metrics", True), **values)


def steps_per_epoch(train, batch_size: int) -> int | None:
    count = num_examples(train)
    if count is None or isinstance(train, tf.data.Dataset):
        return count  # a dataset's batches are its steps
    return math.ceil(count / batch_size)
