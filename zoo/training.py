"""Training recipes of zoo models: `kerasmtl train` and `kerasmtl evaluate`.

A zoo model registers a *data function* beside its factory:
`data_fn(spec, *, batch_size, seed) -> TrainingData`, which turns a data
specification from the command line (`"synthetic"`, a folder, a tfds name)
into training and dev data plus the factory arguments that depend on the data
(a vocabulary, tag lists, an input width). A data function that can hold out
a dev set itself also takes `dev_fraction` (`--dev-fraction`). Both functions here build the model
as `create_model(name, tasks=..., **data.model_kwargs)`, so a factory must
accept `tasks` (a subset of its tasks, for single-task baselines).

Epochs, batch size, optimizer and early stopping not given fall back to the
model's registered recipe (`register_model(recipe=...)`), then to the global
defaults (`zoo.training_settings`, which also holds `TrainingData`); the log
says which was used. Early stopping, TensorBoard
logs and checkpoints (resumable runs) are in `zoo.training_callbacks`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import keras
import tensorflow as tf

import kerasmtl as mtl
from zoo import training_callbacks
from zoo.registry import create_model, get_entry
from zoo.training_settings import (
    TrainingData,
    load_training_data,
    steps_per_epoch,
    training_settings,
)


def train_zoo_model(
    name: str,
    spec: str,
    *,
    epochs: int | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    weighting: Callable[[], mtl.weighting.LossWeighting] | None = None,
    optimizer=None,
    dev_fraction: float | None = None,
    save_path: str | None = None,
    export_dir: str | None = None,
    preset: str | None = None,
    save_preset: str | None = None,
    command: str | None = None,
    early_stopping: int | None = None,
    monitor: str | None = None,
    tensorboard_dir: str | None = None,
    checkpoint_dir: str | None = None,
    resume: bool = False,
    callbacks: list | None = None,
    strategy: tf.distribute.Strategy | None = None,
    print_fn: Callable[[str], None] = print,
) -> dict:
    """Trains zoo model `name` on `spec`, evaluates on dev, saves and exports.

    Args:
        name: str. A registered zoo model with a data function.
        spec: str. The data specification its data function understands.
        epochs, batch_size, seed, optimizer: the training budget; `seed`
            also draws the dev split and the shuffle. None: the model's
            recipe's, else 5 epochs, batches of 32 and Adam. `optimizer` is
            a name, an Optimizer or `(steps_per_epoch, epochs) -> Optimizer`.
        weighting: a zero-argument factory of the loss weighting, or None
            (the recipe's `weighting`, else the model's default).
        dev_fraction: float or None. Share held out for dev when the data has
            no dev split (see `load_training_data`). Defaults to the recipe's.
        save_path: str or None. Where to save the `.keras` model.
        export_dir: str or None. Base path of the SavedModel export.
        preset: str or None. Fine-tune from this preset (name, path or URL):
            the model is built for the data, then every layer whose name and
            weight shapes match the preset's starts from the preset's weights
            (heads of changed label or tag sets are rebuilt).
        save_preset: str or None. Write the trained model as a preset
            directory here, with the dev figures and `command` on its card.
        command: str or None. The command line recorded on the preset's card.
            Defaults to the equivalent `kerasmtl train` line.
        early_stopping: int or None. Stop after this many epochs without a
            lower dev loss (`val_loss`) and restore the best epoch's weights;
            0 turns it off. None: the recipe's, else off.
        monitor: str or None. What early stopping and the best checkpoint
            watch: `"val_loss"`, `"joint"` (the mean of the tasks' primary
            dev metrics, see `zoo.training_callbacks.JointDevMetric`) or any
            value `fit` logs (e.g. `"val_ner/entity_f1"`). None: the
            recipe's, else `"val_loss"`.
        tensorboard_dir: str or None. Write TensorBoard logs here (every
            value `fit` logs, per task, and the learning rate).
        checkpoint_dir: str or None. Back the run up here after each epoch
            (`backup/`) and keep the best dev-loss model (`best.keras`);
            see `zoo.training_callbacks`.
        resume: bool. Continue the run backed up in `checkpoint_dir` (its
            settings must match). Defaults to `False`.
        callbacks: extra Keras callbacks, run after the run's own.
        strategy: a `tf.distribute.Strategy` to build and train under
            (e.g. `MultiWorkerMirroredStrategy`, made before any TensorFlow
            op runs), or None for the current one.
        print_fn: where the log goes.

    Returns:
        `{"model", "report", "history", "export_path", "seconds"}`.
    """
    start = time.perf_counter()
    settings = training_settings(name, epochs=epochs, batch_size=batch_size,
                                 optimizer=optimizer, early_stopping=early_stopping,
                                 monitor=monitor)
    has_backup = training_callbacks.check_checkpoint_dir(checkpoint_dir, resume=resume)
    data = load_training_data(name, spec, batch_size=settings.batch_size, seed=seed,
                              dev_fraction=dev_fraction)
    print_fn(f"{name}: {data.summary}")
    steps = steps_per_epoch(data.train, settings.batch_size)
    print_fn(f"training: {settings.describe(steps)}")
    keras.utils.set_random_seed(seed)
    if weighting is None and settings.weighting is not None:
        print_fn(f"weighting: {settings.weighting} (recipe)")
    with (strategy or tf.distribute.get_strategy()).scope():
        model = _build(name, data, data.tasks, settings.weighting_factory(weighting))
        if preset is not None:
            _start_from_preset(name, preset, model, print_fn)
        model.compile(optimizer=settings.make_optimizer(steps),
                      train_metrics=settings.train_metrics)
    if checkpoint_dir:
        record = training_callbacks.run_record(
            name, spec, model=model, settings=settings, seed=seed,
            dev_fraction=dev_fraction, preset=preset)
        training_callbacks.prepare_checkpoint_dir(
            checkpoint_dir, record, has_backup=has_backup, resume=resume, print_fn=print_fn)
    run_callbacks = training_callbacks.run_callbacks(
        early_stopping=settings.early_stopping, tensorboard_dir=tensorboard_dir,
        checkpoint_dir=checkpoint_dir, monitor=settings.monitor, tasks=model.tasks)
    x, y = _split(data.train)
    history = model.fit(x, y, epochs=settings.epochs,
                        batch_size=None if y is None else settings.batch_size,
                        validation_data=data.dev, verbose=2,
                        callbacks=run_callbacks + list(callbacks or []))
    stopping = training_callbacks.early_stopping_summary(run_callbacks, settings.epochs)
    if stopping:
        print_fn(stopping)
    report = dev_report(name, model, data.dev)
    print_report(report, print_fn)
    if save_path:
        os.makedirs(os.path.dirname(os.path.abspath(save_path)), exist_ok=True)
        model.save(save_path)
        print_fn(f"saved: {save_path}")
    if save_preset:
        from zoo.preset_writer import save_preset as write_preset

        if command is None:
            command = (f"kerasmtl train {name} --data {spec} --epochs {settings.epochs} "
                       f"--batch-size {settings.batch_size} --seed {seed}")
        write_preset(model, save_preset, zoo_model=name, data=f"{spec}: {data.summary}",
                     command=command, dev_figures=report,
                     example_inputs=example_rows(data.dev), print_fn=print_fn)
        print_fn(f"saved preset: {save_preset}")
    export_path = None
    if export_dir:
        export_path = mtl.export.export_saved_model(model, export_dir)
        print_fn(f"exported SavedModel: {export_path}")
    seconds = time.perf_counter() - start
    print_fn(f"done in {seconds:.0f} s")
    return {"model": model, "report": report, "history": history.history,
            "export_path": export_path, "seconds": seconds}


def compare_zoo_model(
    name: str,
    spec: str,
    *,
    epochs: int | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    weighting: Callable[[], mtl.weighting.LossWeighting] | None = None,
    optimizer=None,
    dev_fraction: float | None = None,
    print_fn: Callable[[str], None] = print,
) -> mtl.evaluation.Comparison:
    """Trains zoo model `name` and its single-task baselines (same trunk, data
    and budget), prints the per-task dev report and the Δm table. Each model
    says when its training starts, and Keras prints one line per epoch.
    Settings not given come from the model's recipe (see `train_zoo_model`)."""
    settings = training_settings(name, epochs=epochs, batch_size=batch_size,
                                 optimizer=optimizer)
    epochs, batch_size = settings.epochs, settings.batch_size
    weighting = settings.weighting_factory(weighting)
    data = load_training_data(name, spec, batch_size=batch_size, seed=seed,
                              dev_fraction=dev_fraction)
    print_fn(f"{name}: {data.summary}")
    steps = steps_per_epoch(data.train, batch_size)
    print_fn(f"training: {settings.describe(steps)}")
    built = []

    def build_fn(tasks):
        # compare_with_single_task builds each model just before training it:
        # the multi-task model first, then one baseline per task.
        built.append(tasks)
        names = [t.name for t in tasks]
        which = (f"the multi-task model ({', '.join(names)})" if len(built) == 1
                 else f"the single-task baseline of '{names[0]}'")
        print_fn(f"[{len(built)}/{len(data.tasks) + 1}] training {which} for "
                 f"{epochs} epoch(s)")
        return _build(name, data, tasks, weighting)

    comparison = mtl.evaluation.compare_with_single_task(
        build_fn, data.tasks, data.train, data.dev, epochs=epochs,
        batch_size=batch_size, optimizer=settings.make_optimizer(steps), seed=seed,
        verbose=2)
    print_fn("multi-task model on dev:")
    _add_zoo_metrics(name, comparison.multi_task_model, data.dev, comparison.mtl_report)
    for task_name, metrics in comparison.mtl_report.items():
        values = ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))
        print_fn(f"  {task_name:8s} {values}")
    print_fn("")
    print_fn(f"multi-task vs single-task ({epochs} epochs each):")
    print_fn(comparison.table())
    return comparison


def _start_from_preset(name: str, preset: str, model, print_fn) -> None:
    from zoo.fine_tuning import transfer_weights
    from zoo.preset_loader import get_preset_of

    found = get_preset_of(name, preset, given_as="--preset")
    print_fn(f"fine-tuning from preset '{found.name}' ({found.model_path})")
    transfer_weights(found.load(), model, print_fn=print_fn)


def example_rows(dev, rows: int = 2):
    """A few dev inputs, kept on a preset's card as its example."""
    x = _split(dev)[0]
    if isinstance(x, tf.data.Dataset):
        x = next(iter(x))
        x = x[0] if isinstance(x, tuple) else x
    return tf.nest.map_structure(lambda a: keras.ops.convert_to_numpy(a)[:rows], x)


def dev_report(name: str, model, dev) -> dict:
    """`{task: {metric: value}}` of `model` on `dev`: the tasks' own metrics
    and the zoo entry's data-set metrics (e.g. box mAP)."""
    report = mtl.evaluation.task_report(model, *_split(dev))
    return _add_zoo_metrics(name, model, dev, report)


def print_report(report: dict, print_fn=print) -> None:
    """Prints a `dev_report`, a line per task."""
    print_fn("dev set:")
    for task_name, metrics in report.items():
        values = ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))
        print_fn(f"  {task_name:8s} {values}")


def _add_zoo_metrics(name: str, model, dev, report: dict) -> dict:
    """Adds the zoo entry's data-set metrics (e.g. box mAP) to `report`."""
    evaluate = get_entry(name).evaluate
    if evaluate is not None and model is not None:
        for task_name, values in evaluate(model, dev).items():
            report.setdefault(task_name, {}).update(values)
    return report


def _build(name: str, data: TrainingData, tasks, weighting):
    """The zoo model on `data`'s factory arguments; a weighting only with
    several tasks (for one task it would only rescale the learning rate)."""
    kwargs = dict(get_entry(name).recipe.get("model_kwargs", {}), **data.model_kwargs,
                  tasks=list(tasks))
    if weighting is not None and len(tasks) > 1:
        kwargs["weighting"] = weighting()
    return create_model(name, **kwargs)


def _split(data):
    if isinstance(data, tuple):
        return data
    return data, None
