"""The callbacks of a zoo training run: early stopping, TensorBoard, checkpoints.

`zoo.training.train_zoo_model(early_stopping=..., tensorboard_dir=...,
checkpoint_dir=..., resume=...)`, i.e. `kerasmtl train --early-stopping
PATIENCE [--monitor KEY] --tensorboard DIR --checkpoint-dir DIR [--resume]`.
Early stopping and the best checkpoint watch one value of the dev split:
`val_loss` by default (`MONITOR`), or `joint` (`JOINT`, logged as `val_joint`
by `JointDevMetric`: the mean of the tasks' primary dev metrics), or any value
`fit` logs (e.g. `val_ner/entity_f1`); a recipe may set its own `monitor`.

A checkpoint directory holds:

    DIR/backup/      keras.callbacks.BackupAndRestore: weights, optimizer state
                     and the epoch, written after every epoch and removed when
                     the run ends normally (so only an interrupted run leaves one)
    DIR/best.keras   the model of the epoch with the best monitored value so far
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
# The dev split's joint primary metric (see JointDevMetric); `--monitor joint`.
JOINT = "val_joint"
# Logged values where lower is better, besides every `*loss*`.
_LOWER_IS_BETTER = ("mae", "mse", "rmse", "hamming_loss", "coverage", "one_error",
                    "ranking_loss")

BACKUP_DIR = "backup"
BEST_MODEL = "best.keras"
RUN_SETTINGS = "run.json"


def check_early_stopping(value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(
            "Invalid value for argument `early_stopping`. Expected an int >= 0 "
            "(epochs without a better dev value; 0: off). Received: "
            f"early_stopping={value!r}"
        )


def monitor_key(monitor: str) -> str:
    """The logged key a `--monitor` value names (`joint` -> `val_joint`)."""
    if not isinstance(monitor, str) or not monitor:
        raise ValueError(
            "Invalid value for argument `monitor`. Expected 'val_loss', 'joint' or "
            "a value `fit` logs on the dev split (e.g. 'val_ner/entity_f1'). "
            f"Received: monitor={monitor!r}"
        )
    return JOINT if monitor == "joint" else monitor


def monitor_mode(monitor: str) -> str:
    """'min' for losses and error measures, else 'max' (accuracy, F1, IoU,
    mAP, `val_joint`)."""
    metric = monitor_key(monitor).rsplit("/", 1)[-1]
    lower = "loss" in metric or metric in _LOWER_IS_BETTER
    return "min" if lower else "max"


class JointDevMetric(keras.callbacks.Callback):
    """Logs `val_joint`: the mean over tasks of each task's primary dev
    metric (`Task.primary_metric`), negated where lower is better; a task
    whose primary metric is its loss counts as minus its dev loss.

    One number to stop on and to pick the best epoch by when no single task
    should decide (e.g. UPOS accuracy and NER entity F1, both in [0, 1]).
    The primary metrics are averaged as they are, so they should share a
    scale; otherwise monitor one of them (`--monitor val_ner/entity_f1`).
    It must run before the callbacks that read it: `run_callbacks` puts it
    first (Keras passes every callback the same `logs` dict, so History,
    TensorBoard and the progress bar record it too).
    """

    def __init__(self, tasks):
        super().__init__()
        self.tasks = list(tasks)

    def keys(self) -> list[tuple[str, float]]:
        """`(logged key, sign)` of each task's term."""
        terms = []
        for task in self.tasks:
            if task.primary_metric == "loss":
                terms.append((f"val_loss/{task.name}", -1.0))
            else:
                sign = 1.0 if task.higher_is_better else -1.0
                terms.append((f"val_{task.name}/{task.primary_metric}", sign))
        return terms

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        terms = self.keys()
        missing = [key for key, _ in terms if key not in logs]
        if missing:
            if not any(key.startswith("val_") for key in logs):
                return  # no dev pass this epoch (validation_freq)
            raise ValueError(
                f"Cannot compute {JOINT} after epoch {epoch + 1}: the dev logs have no "
                f"{missing} (logged: {sorted(k for k in logs if k.startswith('val_'))}). "
                "Monitor one of the logged values instead (--monitor KEY)."
            )
        logs[JOINT] = sum(sign * float(logs[key]) for key, sign in terms) / len(terms)


class CheckMonitored(keras.callbacks.Callback):
    """Stops a run whose monitored key is not logged (Keras' EarlyStopping
    would only warn, and never stop nor restore)."""

    def __init__(self, monitor: str):
        super().__init__()
        self.monitor = monitor

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        dev = sorted(k for k in logs if k.startswith("val_"))
        if dev and self.monitor not in logs:
            raise ValueError(
                f"--monitor '{self.monitor}' is not among the values logged after epoch "
                f"{epoch + 1}: {dev}. Monitor one of them, 'val_loss' or 'joint'."
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
    (`settings`: the run's `zoo.training_settings.Settings`; `model`: compiled)."""
    weighting = model.weighting
    record = {
        "model": name, "data": spec, "epochs": settings.epochs,
        "batch_size": settings.batch_size,
        "seed": seed, "dev_fraction": dev_fraction, "preset": preset,
        "monitor": settings.monitor,
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
                  checkpoint_dir: str | None = None, monitor: str = MONITOR,
                  tasks=None) -> list:
    """The Keras callbacks of a run, in the order they must run. `tasks`:
    the model's tasks, needed when `monitor` is `joint`."""
    monitor, callbacks = monitor_key(monitor), []
    if monitor == JOINT:
        if tasks is None:
            raise ValueError("monitor='joint' needs the model's tasks (tasks=...).")
        callbacks.append(JointDevMetric(tasks))
    if checkpoint_dir or early_stopping:
        callbacks.append(CheckMonitored(monitor))
    mode = monitor_mode(monitor)
    if checkpoint_dir:
        callbacks.append(keras.callbacks.BackupAndRestore(
            os.path.join(checkpoint_dir, BACKUP_DIR)))
        callbacks.append(keras.callbacks.ModelCheckpoint(
            os.path.join(checkpoint_dir, BEST_MODEL), monitor=monitor, mode=mode,
            save_best_only=True))
    if early_stopping:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=monitor, mode=mode, patience=early_stopping,
            restore_best_weights=True))
    if tensorboard_dir:
        # Keras' TensorBoard writes every value `fit` logs (per-task losses,
        # weights and metrics, train and dev; a balancer's training-only
        # `grad_cos/<a>-<b>`) and adds the optimizer's current learning rate
        # (a schedule's value at this step) itself.
        callbacks.append(keras.callbacks.TensorBoard(log_dir=tensorboard_dir))
    return callbacks


def early_stopping_summary(callbacks: list, epochs: int) -> str | None:
    """One log line on what early stopping did, or None without it."""
    for callback in callbacks:
        if isinstance(callback, keras.callbacks.EarlyStopping):
            best = (f"epoch {callback.best_epoch + 1} "
                    f"({callback.monitor}={float(callback.best):.4f})")
            if callback.stopped_epoch:
                return (f"early stopping: stopped after epoch {callback.stopped_epoch + 1} "
                        f"of {epochs}; weights of the best {best} restored")
            return f"early stopping: ran all {epochs} epochs; weights of the best {best} kept"
    return None
