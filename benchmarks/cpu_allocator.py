"""TensorFlow's CPU allocator: the nuclei recipe's train step with the BFC
pool (`TF_CPU_ALLOCATOR_USE_BFC=true`, what `kerasmtl train` sets) against
the default (one `malloc` per tensor).

The variable is read once, when TensorFlow makes its CPU allocator, so each
configuration runs in a fresh process: this script starts itself as a
worker `--repeats` times per allocator, alternating (default, BFC, default,
BFC, ...), so that a change of load hits both. Each worker builds two models
of `det_seg_resnet_fpn` on the nuclei recipe's data (batches of 16 256x256
crops): the recipe's (stride-2 segmentation, DB-MTL as the recipe compiles
it) and the model first measured for the nuclei issue (stride-4
segmentation, Equal weighting); takes `--steps` training batches into
memory, and times `fit` of each over them after a warm-up epoch (tracing),
then `fit` on the recipe's own tf.data pipeline for as many steps. It
reports seconds per step and the process's peak resident memory. Ratios are within one run; nothing is asserted.

Usage:
    python benchmarks/cpu_allocator.py            # ~15 minutes on 2 cores
    python benchmarks/cpu_allocator.py --quick    # synthetic shapes, tiny model
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
VARIABLE = "TF_CPU_ALLOCATOR_USE_BFC"
CONFIGS = {"default (malloc per tensor)": "false", "BFC pool (kerasmtl train)": "true"}
RECIPE = "recipe (seg_stride=2, DB-MTL)"
FIRST = "first measured (seg_stride=4, Equal)"


def _load_average() -> str:
    # Not bench_common.load_average: importing bench_common starts
    # TensorFlow, and this parent process must not (only its workers do,
    # each under its own allocator).
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def worker(args) -> dict:
    """Both models in this process (one allocator): seconds per step of each,
    and the process's peak RSS."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "benchmarks")]
    import tensorflow as tf
    from bench_common import limit_threads
    from nuclei_speed import build, recipe_setup

    limit_threads(args.threads)
    data, kwargs, stride4 = recipe_setup(args.root, args.quick)
    steps = int(data.train.cardinality())
    # The first measured model reads stride-4 segmentation labels: the same
    # batches serve both (the masks are at full size either way).
    models = {RECIPE: build(kwargs, steps),
              FIRST: build(stride4, steps, weighting="equal")}
    batches = list(data.train.take(args.steps))
    memory = tf.data.Dataset.from_generator(lambda: iter(batches),
                                            output_signature=data.train.element_spec)
    result = {}
    for label, model in models.items():
        model.fit(memory, epochs=1, verbose=0)  # tracing
        start = time.perf_counter()
        model.fit(memory, epochs=1, verbose=0)
        in_memory = (time.perf_counter() - start) / len(batches)
        start = time.perf_counter()
        model.fit(data.train.take(len(batches)), epochs=1, verbose=0)
        pipeline = (time.perf_counter() - start) / len(batches)
        result[label] = {"in_memory": in_memory, "pipeline": pipeline}
    result["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=None, help="DSB-2018 nuclei folder")
    parser.add_argument("--steps", type=int, default=12, help="timed steps per fit")
    parser.add_argument("--repeats", type=int, default=2, help="workers per allocator")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true",
                        help="synthetic shapes, tiny model: checks that it runs")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    from nuclei import DEFAULT_ROOT, missing_data

    if args.root is None:
        args.root = str(DEFAULT_ROOT)
    if args.quick:
        args.steps, args.repeats = 2, 1
    elif missing_data(args.root):
        return 0
    print(f"python {sys.version.split()[0]}, CPUs: {os.cpu_count()}, TF threads: "
          f"{args.threads}, load average at start: "
          f"{_load_average()}")
    results = {label: [] for label in CONFIGS}
    for repeat in range(args.repeats):
        for label, value in CONFIGS.items():
            command = [sys.executable, __file__, "--worker", "--steps", str(args.steps),
                       "--threads", str(args.threads), "--root", args.root,
                       *(["--quick"] if args.quick else [])]
            env = {**os.environ, VARIABLE: value}
            done = subprocess.run(command, env=env, capture_output=True, text=True,
                                  check=False)
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                return done.returncode
            results[label].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"  {label}, run {repeat + 1}: {results[label][-1]}", flush=True)
    print(f"\nnuclei train step ({'quick, ' if args.quick else ''}{args.steps} steps per "
          f"fit, median of {args.repeats} processes per allocator; s/step with the "
          "batches in memory / with the recipe's tf.data pipeline):\n")
    print(f"| CPU allocator | {RECIPE} | {FIRST} | peak RSS MiB (both models) |")
    print("|---|---|---|---|")
    median = {}
    for label, runs in results.items():
        median[label] = {
            model: {k: float(np.median([r[model][k] for r in runs])) for k in runs[0][model]}
            for model in (RECIPE, FIRST)
        }
        peak = float(np.median([r["peak_mib"] for r in runs]))
        cells = [f"{median[label][m]['in_memory']:.2f} / {median[label][m]['pipeline']:.2f}"
                 for m in (RECIPE, FIRST)]
        print(f"| {label} | {cells[0]} | {cells[1]} | {peak:.0f} |")
    default, bfc = (median[label] for label in CONFIGS)
    for model in (RECIPE, FIRST):
        print(f"\n{model}: BFC speed-up "
              f"{default[model]['in_memory'] / bfc[model]['in_memory']:.2f}x in memory, "
              f"{default[model]['pipeline'] / bfc[model]['pipeline']:.2f}x with the pipeline")
    print(f"\nrecipe under BFC against the first measured model under the default "
          f"allocator (with the pipeline): "
          f"{default[FIRST]['pipeline'] / bfc[RECIPE]['pipeline']:.2f}x the images/s; load "
          f"average at the end: {_load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
