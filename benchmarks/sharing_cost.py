"""Training cost of hard sharing against one single-task model per task.

For T = 2, 3 and 5 tasks on one trunk, this prints the training step time of
the hard-sharing model divided by the sum of the step times of the T
single-task models (the same trunk architecture plus one task's head each),
all measured side by side in one run on the same fixed batch. Training T
separate models costs the sum; the ratio says what fraction of that one
multi-task model costs. Its floor is about 1/T (the trunk, run once instead of
T times, is almost all the work); per-task work (heads, losses, metrics,
optimizer updates of head weights) pulls it up. The target is at most 0.45 at
T=3.

Models. Tasks cycle through the kinds with distinct names: `species_0`
(3-class classification), `size_1` (regression), `tags_2` (5-label
multi-label), `species_3`, `size_4`. Each task has a one-layer tower of
`--head-units` (64) before its output layer. The trunk is an MLP on
`--features` (128) inputs with Dense+ReLU layers of `--trunk-units`
(512, 512, 256): a "shared-bottom" model of the size used for tabular and
ranking multi-task problems (a few hundred input features after encoding, a
few wide shared layers, small task towers, as in the shared-bottom baselines
of Ma et al., KDD 2018). The ratio depends on how heavy the trunk is relative
to the heads, so the parameter counts of the trunk and of each head are
printed; a lighter trunk moves the ratio towards 1, a heavier one towards 1/T.
The batch (`--batch-size`, 256 rows) comes from
`kerasmtl.data.synthetic_tabular`, with its missing labels (masking is part
of the real cost); a task of each kind reads that kind's label column.

Timing. Every model is compiled with `optimizer="adam"` and the default
metrics of its tasks (`jit_compile` as `--jit-compile`, default "auto", which
Keras resolves to no XLA on a CPU-only machine), then warmed up with one
`train_on_batch` call (it builds the optimizer and traces the step) and a few
more steps. The timed call is, by default (`--driver train_function`),
Keras' compiled train step driven directly: `model.train_function([batch])`
with the batch as pre-made tensors, the same `tf.function` that `fit()` runs
once per step, without an input pipeline, callbacks or per-call metric reset.
`--driver train_on_batch` times `model.train_on_batch` instead, which adds
Keras' per-call Python overhead (metric reset, logs to Python floats), which
grows with the number of metric variables, so with the number of tasks.

A round times `--steps` consecutive steps of every model, in a freshly
shuffled order, so machine noise hits all models alike; `--rounds` short
rounds are run. Each model's step time is its median over rounds. The ratio
is the median over rounds of that round's ratio (hard-sharing time over the
sum of the single-task times), paired so that each ratio compares blocks
timed within about a second of each other: on a busy machine this holds up
far better than the ratio of the per-model medians, which is printed too,
with the interquartile range of the per-round ratios as a noise gauge. A
note is printed when rounds disagree by over 10%. Nothing here asserts a
wall-clock number.

Usage:
    python benchmarks/sharing_cost.py           # full run, 1-2 minutes on 2 CPU cores
    python benchmarks/sharing_cost.py --quick   # tiny configuration, seconds (smoke test)
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import kerasmtl as mtl  # noqa: E402

TARGET_T = 3
TARGET_RATIO = 0.45
# Cycled to make T tasks; each stem is also its label column in synthetic_tabular.
TASK_KINDS = ("species", "size", "tags")
WARMUP_STEPS = 3


@dataclass
class Config:
    num_tasks: tuple[int, ...] = (2, 3, 5)
    features: int = 128
    trunk_units: tuple[int, ...] = (512, 512, 256)
    head_units: int = 64
    batch_size: int = 256
    steps: int = 5
    rounds: int = 41
    driver: str = "train_function"
    jit_compile: str | bool = "auto"
    seed: int = 0
    quick: bool = False


# Tiny: every code path runs, in seconds; its figures mean nothing.
QUICK = dict(
    features=16, trunk_units=(32,), head_units=8, batch_size=32, steps=2, rounds=2
)


def make_task(index: int, head_units: int) -> mtl.tasks.Task:
    """Task `index`, cycling through the kinds; `head_units=0` means no tower."""
    kind = TASK_KINDS[index % len(TASK_KINDS)]
    name = f"{kind}_{index}"
    hidden = [head_units] if head_units else []
    if kind == "species":
        return mtl.tasks.Classification(name, num_classes=3, hidden_layers=hidden)
    if kind == "size":
        return mtl.tasks.Regression(name, hidden_layers=hidden)
    return mtl.tasks.MultiLabel(name, num_labels=5, hidden_layers=hidden)


def label_column(task: mtl.tasks.Task) -> str:
    return task.name.rsplit("_", 1)[0]


def build_model(
    tasks: Sequence[mtl.tasks.Task], config: Config, name: str
) -> mtl.MultiTaskModel:
    """A fresh trunk (new weights) plus one head per task, compiled."""
    inputs = keras.Input((config.features,), name="features")
    x = inputs
    for i, units in enumerate(config.trunk_units):
        x = keras.layers.Dense(units, activation="relu", name=f"trunk_{i}")(x)
    model = mtl.sharing.hard_sharing(inputs, x, tasks, name=name)
    model.compile(optimizer="adam", jit_compile=config.jit_compile)
    return model


def trunk_params(model: keras.Model, config: Config) -> int:
    return sum(
        model.get_layer(f"trunk_{i}").count_params()
        for i in range(len(config.trunk_units))
    )


def head_params(model: keras.Model, task: mtl.tasks.Task) -> int:
    # build_head names a task's layers `<name>` and `<name>_hidden_<i>`.
    return sum(
        layer.count_params()
        for layer in model.layers
        if layer.name == task.name or layer.name.startswith(f"{task.name}_hidden_")
    )


def make_batch(
    model: mtl.MultiTaskModel, x: tf.Tensor, labels: dict[str, tf.Tensor]
) -> tuple:
    y = {t.name: labels[label_column(t)] for t in model.tasks}
    return (x, y, None)


def step_runner(model: keras.Model, batch: tuple, driver: str) -> Callable[[int], None]:
    """Returns `run(n)`: n training steps on `batch`, finished on return."""
    x, y, _ = batch
    if driver == "train_on_batch":

        def run(n: int) -> None:
            for _ in range(n):
                model.train_on_batch(x, y)  # returns Python floats: synced

        return run

    data = [batch]

    def run(n: int) -> None:
        logs = None
        for _ in range(n):
            logs = model.train_function(data)
        # Pulling a value waits for the step, should execution be asynchronous.
        keras.ops.convert_to_numpy(logs["loss"])

    return run


def warm_up(model: keras.Model, batch: tuple, driver: str) -> float:
    start = time.perf_counter()
    x, y, _ = batch
    model.train_on_batch(x, y)  # builds the optimizer, makes and traces the step
    step_runner(model, batch, driver)(WARMUP_STEPS)
    return time.perf_counter() - start


def measure(
    runners: dict[str, Callable[[int], None]], steps: int, rounds: int, seed: int,
    prepare: dict[str, Callable[[], None]] | None = None,
) -> dict[str, list[float]]:
    """Milliseconds per step of each model, one value per round.

    `prepare[name]()`, where given, runs untimed before each of `name`'s
    blocks (e.g. a fresh input iterator and its start-up).
    """
    order = list(runners)
    shuffler = random.Random(seed)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        shuffler.shuffle(order)
        for name in order:
            if prepare and name in prepare:
                prepare[name]()
            gc.disable()  # a collection pause lands in no one model's block
            start = time.perf_counter()
            runners[name](steps)
            elapsed = time.perf_counter() - start
            gc.enable()
            times[name].append(1e3 * elapsed / steps)
    return times


def environment_lines() -> list[str]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    devices = ", ".join(d.device_type for d in tf.config.list_physical_devices())
    return [
        f"python {platform.python_version()}, tensorflow {tf.__version__}, "
        f"keras {keras.__version__} ({keras.backend.backend()}), numpy {np.__version__}",
        f"CPUs: {os.cpu_count()} (usable {usable}), {platform.machine()}, "
        f"devices: {devices}",
        f"TF threads: intra-op {tf.config.threading.get_intra_op_parallelism_threads()}"
        f", inter-op {tf.config.threading.get_inter_op_parallelism_threads()}"
        " (0 = TF default)",
    ]


def parse_args(argv: Sequence[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(
        description="Step time of a hard-sharing model over the sum of its "
        "single-task models' step times, for several numbers of tasks."
    )
    default = Config()
    parser.add_argument(
        "--quick", action="store_true", help="tiny configuration for a smoke test"
    )
    parser.add_argument(
        "--num-tasks", type=int, nargs="+", default=list(default.num_tasks)
    )
    parser.add_argument("--features", type=int, help=f"default {default.features}")
    parser.add_argument(
        "--trunk-units",
        type=int,
        nargs="+",
        help=f"default {' '.join(map(str, default.trunk_units))}",
    )
    parser.add_argument(
        "--head-units",
        type=int,
        help=f"task tower width, 0 for none; default {default.head_units}",
    )
    parser.add_argument("--batch-size", type=int, help=f"default {default.batch_size}")
    parser.add_argument(
        "--steps", type=int, help=f"steps per model per round; default {default.steps}"
    )
    parser.add_argument("--rounds", type=int, help=f"default {default.rounds}")
    parser.add_argument(
        "--driver",
        choices=("train_function", "train_on_batch"),
        default=default.driver,
        help="what one timed step calls (see the module docstring)",
    )
    parser.add_argument(
        "--jit-compile", choices=("auto", "true", "false"), default="auto"
    )
    parser.add_argument("--seed", type=int, default=default.seed)
    args = parser.parse_args(argv)

    values = dict(QUICK) if args.quick else {}
    for field in ("features", "head_units", "batch_size", "steps", "rounds"):
        if getattr(args, field) is not None:
            values[field] = getattr(args, field)
    if args.trunk_units is not None:
        values["trunk_units"] = tuple(args.trunk_units)
    config = Config(
        num_tasks=tuple(sorted(set(args.num_tasks))),
        driver=args.driver,
        jit_compile={"auto": "auto", "true": True, "false": False}[args.jit_compile],
        seed=args.seed,
        quick=args.quick,
        **values,
    )
    if min(config.num_tasks) < 1 or config.steps < 1 or config.rounds < 1:
        parser.error("--num-tasks, --steps and --rounds must be >= 1")
    return config


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    keras.utils.set_random_seed(config.seed)

    print("== kerasmtl sharing cost: hard sharing vs one model per task ==")
    for line in environment_lines():
        print(line)
    print(
        f"config: batch {config.batch_size}, {config.features} features, trunk "
        f"Dense{list(config.trunk_units)}, task tower {config.head_units or 'none'}, "
        f"optimizer adam, driver {config.driver}, {config.steps} steps x "
        f"{config.rounds} rounds (shuffled round-robin, medians)"
        + ("  [--quick: tiny models, figures mean nothing]" if config.quick else "")
    )

    x, labels = mtl.data.synthetic_tabular(
        config.batch_size, config.features, seed=config.seed
    )
    x = tf.constant(x)
    labels = {k: tf.constant(v) for k, v in labels.items()}

    max_tasks = max(config.num_tasks)
    # Task objects are specs: each model builds fresh layers from them.
    tasks = [make_task(i, config.head_units) for i in range(max_tasks)]
    models: dict[str, mtl.MultiTaskModel] = {}
    for t in config.num_tasks:
        models[f"hard_T{t}"] = build_model(tasks[:t], config, f"hard_T{t}")
    for task in tasks:
        models[f"single_{task.name}"] = build_model(
            [task], config, f"single_{task.name}"
        )
    print(f"jit_compile resolved to {models[f'hard_T{max_tasks}'].jit_compile}")

    reference = models[f"single_{tasks[0].name}"]
    print(
        f"parameters: trunk {trunk_params(reference, config):,}; heads "
        + ", ".join(
            f"{task.name} {head_params(models[f'single_{task.name}'], task):,}"
            for task in tasks
        )
    )

    batches = {name: make_batch(m, x, labels) for name, m in models.items()}
    warm = {
        name: warm_up(m, batches[name], config.driver) for name, m in models.items()
    }
    print(
        "warm-up (build + trace + steps), s: "
        + ", ".join(f"{name} {s:.1f}" for name, s in warm.items())
    )

    runners = {
        name: step_runner(m, batches[name], config.driver) for name, m in models.items()
    }
    start = time.perf_counter()
    times = measure(runners, config.steps, config.rounds, config.seed)
    print(f"timed {time.perf_counter() - start:.1f} s; step times in ms (median):")
    median = {name: float(np.median(v)) for name, v in times.items()}

    ratios = {}
    noisy = []
    for t in config.num_tasks:
        hard = f"hard_T{t}"
        singles = [f"single_{task.name}" for task in tasks[:t]]
        total = sum(median[s] for s in singles)
        # Paired: each round's ratio is of blocks timed within about a second.
        per_round = np.array(times[hard]) / np.sum([times[s] for s in singles], 0)
        q1, ratio, q3 = np.percentile(per_round, [25, 50, 75])
        ratios[t] = ratio
        if q3 - q1 > 0.1 * ratio or ratio < 1 / t:
            noisy.append(t)
        print(
            f"T={t}: hard sharing {median[hard]:.2f} ms | single-task "
            + " + ".join(f"{median[s]:.2f}" for s in singles)
            + f" = {total:.2f} ms | ratio {ratio:.3f} (per-round IQR "
            f"{q1:.3f}-{q3:.3f}; of medians {median[hard] / total:.3f}; "
            f"ideal 1/T = {1 / t:.3f})"
        )
    if noisy and not config.quick:
        print(
            f"note: noisy for T={noisy} (rounds disagree by over 10%, or a ratio "
            "below 1/T): the machine was busy; rerun for a firmer figure."
        )

    if TARGET_T in ratios:
        ratio = ratios[TARGET_T]
        verdict = "MET" if ratio <= TARGET_RATIO else "NOT MET"
        print(
            f"verdict: T={TARGET_T} ratio {ratio:.3f} vs target <= {TARGET_RATIO}: "
            f"{verdict}" + (" (--quick: not a measurement)" if config.quick else "")
        )
    else:
        print(f"verdict: T={TARGET_T} not measured (--num-tasks)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
