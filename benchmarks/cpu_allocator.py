"""TensorFlow's CPU allocator: the nuclei recipe's train step with the BFC
pool (`TF_CPU_ALLOCATOR_USE_BFC=true`, what `kerasmtl train` sets) against
the default (one `malloc` per tensor).

The variable is read once, when TensorFlow makes its CPU allocator, so each
configuration runs in a fresh process: this script starts itself as a
worker `--repeats` times per allocator, alternating (default, BFC, default,
BFC, ...), so that a change of load hits both. Each worker builds the
recipe's model (`det_seg_resnet_fpn`, the nuclei recipe's data function,
batches of 16 256x256 crops, DB-MTL as the recipe compiles it), takes
`--steps` training batches into memory, and times `fit` over them after a
warm-up epoch (tracing), then `fit` on the recipe's own tf.data pipeline for
as many steps. It reports seconds per step and the process's peak resident
memory. Ratios are within one run; nothing is asserted.

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


def worker(args) -> dict:
    """One configuration, in this process: seconds per step and peak RSS."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "benchmarks")]
    import tensorflow as tf
    from bench_common import limit_threads
    from nuclei_speed import NAME, build

    from zoo import registry
    from zoo.vision import vision_data

    limit_threads(args.threads)
    if args.quick:
        spec, batch_size = "shapes", 4
        sizes = {"widths": (4, 4, 8, 8), "fpn_channels": 8, "head_channels": 8}
    else:
        spec, batch_size, sizes = args.root, 16, {}
    data = vision_data(spec, batch_size=batch_size, seg_stride=2)
    kwargs = {**registry.get_entry(NAME).recipe.get("model_kwargs", {}),
              **data.model_kwargs, "test_time_flips": 1, **sizes}
    model = build(kwargs, int(data.train.cardinality()))
    batches = list(data.train.take(args.steps))
    memory = tf.data.Dataset.from_generator(lambda: iter(batches),
                                            output_signature=data.train.element_spec)
    model.fit(memory, epochs=1, verbose=0)  # tracing
    start = time.perf_counter()
    model.fit(memory, epochs=1, verbose=0)
    in_memory = (time.perf_counter() - start) / len(batches)
    start = time.perf_counter()
    model.fit(data.train.take(len(batches)), epochs=1, verbose=0)
    pipeline = (time.perf_counter() - start) / len(batches)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB
    return {"in_memory": in_memory, "pipeline": pipeline, "peak_mib": peak}


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
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
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
    print(f"\nnuclei recipe train step ({'quick, ' if args.quick else ''}{args.steps} "
          f"steps per fit, median of {args.repeats} processes per allocator):\n")
    print("| CPU allocator | s/step, batches in memory | s/step, recipe pipeline | "
          "peak RSS MiB |")
    print("|---|---|---|---|")
    median = {}
    for label, runs in results.items():
        median[label] = {k: float(np.median([r[k] for r in runs])) for k in runs[0]}
        m = median[label]
        print(f"| {label} | {m['in_memory']:.2f} | {m['pipeline']:.2f} | "
              f"{m['peak_mib']:.0f} |")
    default, bfc = (median[label] for label in CONFIGS)
    print(f"\nBFC speed-up: {default['in_memory'] / bfc['in_memory']:.2f}x in memory, "
          f"{default['pipeline'] / bfc['pipeline']:.2f}x with the pipeline; load "
          f"average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
