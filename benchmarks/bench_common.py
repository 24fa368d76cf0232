"""Helpers shared by the multi-task vs single-task benchmarks (`tagging.py`,
`vision.py`, `nuclei.py`, the `*_methods.py` tables): the step-time
comparison, the environment line, the methods' flags and the tables' number
formats. Steps are timed as in `sharing_cost.py`."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from sharing_cost import measure, step_runner, warm_up

STEPS_PER_BLOCK = 5  # train steps timed together, per model and round


def median_step_seconds(models: dict, x, y: dict, rounds: int, seed: int = 0) -> dict:
    """Median compiled train-step time (seconds) of each model on one fixed
    batch `(x, y)`, its labels cut to the model's tasks: warm-up steps, then
    blocks of `STEPS_PER_BLOCK` `train_on_batch` steps in shuffled rounds."""
    runners = {}
    for label, model in models.items():
        batch = (x, {n: y[n] for n in model.task_names}, None)
        warm_up(model, batch, "train_on_batch")  # traces the step for this batch
        runners[label] = step_runner(model, batch, "train_on_batch")
    times = measure(runners, STEPS_PER_BLOCK, rounds, seed)
    return {label: float(np.median(ms)) / 1e3 for label, ms in times.items()}


def add_method_arguments(parser) -> None:
    """`--methods` and `--method` of the Δm-per-method benchmarks."""
    parser.add_argument("--methods", default=None,
                        help="comma-separated --weighting spellings; a spelling "
                        "holding commas goes in a separate --method")
    parser.add_argument("--method", action="append", default=[],
                        help="one more method (repeatable)")


def chosen_methods(args, defaults) -> list[str]:
    """The methods `add_method_arguments`' flags name, else `defaults`."""
    listed = args.methods.split(",") if args.methods else []
    return (listed or ([] if args.method else list(defaults))) + args.method


def resumed_runs(path, resume: bool, settings: dict, defaults: dict | None = None) -> dict:
    """The runs a `--json` file at `path` holds, with `--resume`, else `{}`.

    `settings` are this run's (epochs, drop rate, ...): the file's must be the
    same, or a `ValueError` says which differ. A setting the file does not
    record (written before it was saved) takes `defaults`' value if there is
    one, else it is not checked (and the run says so).
    """
    if not (resume and path and Path(path).is_file()):
        return {}
    with open(path) as f:
        saved = json.load(f)
    kept = {k: saved.get(k, (defaults or {}).get(k)) for k in settings}
    unrecorded = [k for k, v in kept.items() if v is None]
    if unrecorded:
        print(f"--resume: {path} does not record {', '.join(unrecorded)}: not checked")
    differ = [f"{k} {v!r} (asked: {settings[k]!r})" for k, v in kept.items()
              if v is not None and v != settings[k]]
    if differ:
        raise ValueError(
            f"--resume: {path} holds runs of other settings: {'; '.join(differ)}. "
            "Pass the same settings, or another --json file.")
    print(f"resumed: {', '.join(f'{k} x{len(v)}' for k, v in saved['results'].items())}")
    return saved["results"]


def save_runs(path, settings: dict, runs: dict, **extra) -> None:
    """Writes `settings`, `extra` and `runs` (label -> one result per seed) as
    the JSON file `resumed_runs` reads; nothing when `path` is None."""
    if path:
        seeds = list(range(max((len(r) for r in runs.values()), default=0)))
        with open(path, "w") as f:
            json.dump({**settings, "seeds": seeds, **extra, "results": runs}, f, indent=1)


def limit_threads(threads: int) -> str:
    """Limits TensorFlow to `threads` intra- and inter-op threads; returns the
    environment line to print (versions, CPUs, threads, load average)."""
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    return (f"python {platform.python_version()}, tensorflow {tf.__version__}, keras "
            f"{keras.__version__}, CPUs: {os.cpu_count()}, TF threads: {threads}, "
            f"load average at start: {load_average()}")


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages ("n/a" where the OS has none)."""
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def percent(value) -> str:
    """A score in [0, 1] as a percentage with 2 decimals; "-" for None."""
    return "-" if value is None else f"{100 * value:.2f}"


def spread(values, signed: bool = False) -> str:
    """Mean (signed with a + or -) and, for several values, ± the sample std."""
    if not values:
        return "–"
    text = f"{np.mean(values):+.2f}" if signed else f"{np.mean(values):.2f}"
    return text + (f" ± {np.std(values, ddof=1):.2f}" if len(values) > 1 else "")
