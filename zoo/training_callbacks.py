"""The callbacks of a zoo training run: early stopping, TensorBoard, checkpoints.

`zoo.training.train_zoo_model(early_stopping=..., tensorboard_dir=...,
checkpoint_dir=..., resume=...)`, i.e. `kerasmtl train --early-stopping
PATIENCE --tensorboard DIR --checkpoint-dir DIR [--resume]`. All of them
watch the dev split's `val_loss` (`MONITOR`).

A checkpoint directory holds:

    DIR/backup/      keras.callbacks.BackupAndRestore: weights, optimizer state
                     and the epoch, written after every epoch and removed when
                     the run ends normally (so only an interrupted run leaves one)
    DIR/best.keras   the model of the epoch with the lowest val_loss so far
    DIR/run.json     the run's settings, compared on `resume` so that a backup
                     is not continued with another model, data or budget

What a resumed run restores is what `model.save_weights` holds: every weight
(the weighting's learned ones too, e.g. Uncertainty's log-variances) and the
optimizer's variables and step. Early stopping's patience count and state kept
outside weights (a random generator's position) start again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import keras

# The dev split's total loss (every task's weighted loss): every run has it,
# whatever its tasks and metrics, and lower is better for all of them.
MONITOR = "val_loss"

BACKUP_DIR = "backup"
BEST_MODEL = "best.keras"
RUN_SETTINGS = "run.json"


def check_early_stopping(value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(
            "Invalid value for argument `early_stopping`. Expected an int >= 0 "
            f"(epochs without a better {MONITOR}; 0: off). Received: "
            f"early_stopping={value!r}"
        )


def check_checkpoint_dir(checkpoint_dir: str | None, *, resume: bool) -> bool:
    """Checks the checkpoint options before any work; returns whether a
    backup is there to continue from."""
    if resume and not checkpoint_dir:
        raise ValueError(
            "--resume (resume=True) continues the run backed up in a checkpoint "
            "directory; give it with --checkpoint-dir DIR (checkpoint_dir=DIR)."
        )
    if not checkpoint_dir:
        return False
    backup = os.path.join(checkpoint_dir, BACKUP_DIR)
    has_backup = os.path.isdir(backup) and bool(os.listdir(backup))
    if has_backup and not resume:
        raise ValueError(
            f"--checkpoint-dir '{checkpoint_dir}' holds the backup of an unfinished "
            f"run ({backup}). Pass --resume to continue it, or remove {backup} (or "
            "choose another --checkpoint-dir) to start over."
        )
    return has_backup


def run_record(name: str, spec: str, *, model, settings, seed: int, dev_fraction,
               preset) -> dict:
    """The settings a backup may only be continued with, as JSON values
    (`settings`: the run's `zoo.training.Settings`; `model`: compiled)."""
    weighting = model.weighting
    record = {
        "model": name, "data": spec, "epochs": settings.epochs,
        "batch_size": settings.batch_size,
        "seed": seed, "dev_fraction": dev_fraction, "preset": preset,
        "optimizer": {"class": type(model.optimizer).__name__,
                      **_without_name(model.optimizer.get_config())},
        "weighting": {"class": type(weighting).__name__,
                      **_without_name(weighting.get_config())},
    }
    return json.loads(json.dumps(record, default=repr, sort_keys=True))


def _without_name(config: dict) -> dict:
    # Names are numbered per process (`adam_3`): not a setting.
    return {k: v for k, v in config.items() if k not in ("name", "dtype", "trainable")}


def prepare_checkpoint_dir(checkpoint_dir: str, record: dict, *, has_backup: bool,
                           resume: bool, print_fn: Callable[[str], None]) -> None:
    """On resume, refuses a backup made with other settings; then writes
    this run's settings and says whether it resumes."""
    path = os.path.join(checkpoint_dir, RUN_SETTINGS)
    if has_backup and os.path.isfile(path):
        with open(path) as f:
            stored = json.load(f)
        changed = sorted(k for k in set(stored) | set(record)
                         if stored.get(k) != record.get(k))
        if changed:
            details = "; ".join(f"{k}: backup {stored.get(k)!r}, now {record.get(k)!r}"
                                for k in changed)
            raise ValueError(
                f"Cannot resume the run in '{checkpoint_dir}': it was made with other "
                f"settings ({details}). Resume with the settings of that run, or "
                "choose another --checkpoint-dir to start a new one."
            )
    os.makedirs(checkpoint_dir, exist_ok=True)
    with open(path, "w") as f:
        json.dump(record, f, indent=2, sort_keys=True)
    if has_backup:
        print_fn(f"resuming the run backed up in {checkpoint_dir}")
    else:
        print_fn(f"checkpoints: {checkpoint_dir}" + (
            " (no backup to resume there: starting at epoch 1)" if resume else ""))


def run_callbacks(*, early_stopping: int = 0, tensorboard_dir: str | None = None,
                  checkpoint_dir: str | None = None) -> list:
    """The Keras callbacks of a run, in the order they must run."""
    callbacks = []
    if checkpoint_dir:
        callbacks.append(keras.callbacks.BackupAndRestore(
            os.path.join(checkpoint_dir, BACKUP_DIR)))
        callbacks.append(keras.callbacks.ModelCheckpoint(
            os.path.join(checkpoint_dir, BEST_MODEL), monitor=MONITOR,
            save_best_only=True))
    if early_stopping:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=MONITOR, patience=early_stopping, restore_best_weights=True))
    if tensorboard_dir:
        # Keras' TensorBoard writes every value `fit` logs (per-task losses,
        # weights and metrics, train and dev) and adds the optimizer's
        # current learning rate (a schedule's value at this step) itself.
        callbacks.append(keras.callbacks.TensorBoard(log_dir=tensorboard_dir))
    return callbacks


def early_stopping_summary(callbacks: list, epochs: int) -> str | None:
    """One log line on what early stopping did, or None without it."""
    for callback in callbacks:
        if isinstance(callback, keras.callbacks.EarlyStopping):
            best = f"epoch {callback.best_epoch + 1} ({MONITOR}={float(callback.best):.4f})"
            if callback.stopped_epoch:
                return (f"early stopping: stopped after epoch {callback.stopped_epoch + 1} "
                        f"of {epochs}; weights of the best {best} restored")
            return f"early stopping: ran all {epochs} epochs; weights of the best {best} kept"
    return None
