"""Quality of the sharing architectures on conflicting tasks, against
single-task models.

The problem of `balancers.py`'s quality table: three regression targets on
the same 16 inputs, the second opposed to the first and the third 10x larger
in scale. Every architecture trains with equal weighting and the same budget
(epochs, batch 64, Adam 3e-3) from `--seeds` seeds; Δm (`kerasmtl.evaluation
.delta_m` on test MAE, positive is better) is against single-task models of
the hard-sharing trunk (Dense 32 -> 16) with the same seed and budget. The
architectures, at about that trunk's size per path:

- hard sharing: the trunk, shared;
- cross-stitch: one Dense 32 -> 16 tower per task, stitched after each layer;
- MMoE: Dense 32 shared, then 4 Dense 16 experts mixed by a gate per task;
- DSelect-k MMoE: the same with k = 2 of the 4 experts selected;
- learning to branch: Dense 32 for everyone, then 3 Dense 16 nodes of which
  each task picks one (`BranchTemperature` from 5 to 0.1 over the run).

It prints each one's parameter count, per-task test MAE and Δm (mean ± sample
std over the seeds). Nothing is asserted.

Usage:
    python benchmarks/architectures.py             # 3 seeds, 30 epochs: a few minutes on 2 cores
    python benchmarks/architectures.py --quick     # 1 seed, 2 epochs: checks that it runs
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from balancers import conflicting_tasks  # noqa: E402
from sharing_cost import environment_lines  # noqa: E402

import kerasmtl as mtl  # noqa: E402


def dense(units):
    return lambda: keras.layers.Dense(units, activation="relu")


def build(architecture: str, names, d: int, epochs: int):
    """`(model, callbacks)` of one architecture for tasks `names`."""
    tasks = [mtl.tasks.Regression(name) for name in names]
    inputs = keras.Input((d,))
    callbacks = []
    if architecture == "hard sharing":
        h = dense(16)()(dense(32)()(inputs))
        model = mtl.sharing.hard_sharing(inputs, h, tasks)
    elif architecture == "cross-stitch":
        model = mtl.sharing.cross_stitch(inputs, lambda: [dense(32)(), dense(16)()], tasks)
    elif architecture == "MMoE":
        model = mtl.sharing.mmoe(inputs, dense(16), tasks, num_experts=4,
                                 features=dense(32)()(inputs))
    elif architecture == "DSelect-k MMoE":
        model = mtl.sharing.dselect_k_mmoe(inputs, dense(16), tasks, k=2, num_experts=4,
                                           features=dense(32)()(inputs))
    elif architecture == "learning to branch":
        model = mtl.sharing.learning_to_branch(inputs, [dense(32), dense(16)], tasks,
                                               branches=(1, 3), seed=0)
        callbacks.append(mtl.sharing.BranchTemperature(epochs, start=5.0, end=0.1))
    else:
        raise ValueError(architecture)
    return model, callbacks


ARCHITECTURES = ["hard sharing", "cross-stitch", "MMoE", "DSelect-k MMoE",
                 "learning to branch"]


def run(architecture, names, data, seed, epochs):
    x, y, split = data
    keras.utils.set_random_seed(seed)
    model, callbacks = build(architecture, names, x.shape[1], epochs)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(x[:split], {k: y[k][:split] for k in names}, epochs=epochs, batch_size=64,
              callbacks=callbacks, verbose=0)
    pred = model.predict(x[split:], verbose=0)
    mae = {k: float(np.mean(np.abs(pred[k] - y[k][split:]))) for k in names}
    extra = ""
    if architecture == "learning to branch":
        extra = f"tree {mtl.sharing.branching_tree(model)}"
    return mae, model.count_params(), extra


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs = 1, 2
    print("== kerasmtl sharing architectures: conflicting synthetic tasks, Δm vs "
          "single-task ==")
    for line in environment_lines():
        print(line)
    print(f"{args.epochs} epochs, batch 64, Adam 3e-3, equal weighting, seeds "
          f"0..{args.seeds - 1}" + ("  [--quick: figures mean nothing]" if args.quick else ""))
    results = {a: [] for a in ARCHITECTURES}
    for seed in range(args.seeds):
        data = conflicting_tasks(seed)
        names = list(data[1])
        single = {}
        for name in names:
            single.update(run("hard sharing", [name], data, seed, args.epochs)[0])
        print(f"seed {seed} single-task  " + "  ".join(f"{k} {v:.3f}" for k, v in single.items()))
        for architecture in ARCHITECTURES:
            mae, params, extra = run(architecture, names, data, seed, args.epochs)
            delta = mtl.evaluation.delta_m(mae, single, {k: False for k in names})
            results[architecture].append((mae, delta, params))
            print(f"seed {seed} {architecture:<19} {params:>6} params  "
                  + "  ".join(f"{k} {v:.3f}" for k, v in mae.items())
                  + f"  Δm {100 * delta:+.1f}%  {extra}")
    print("\narchitecture         params  Δm (%, mean ± std over seeds)")
    for architecture, rows in results.items():
        deltas = np.array([100 * r[1] for r in rows])
        spread = f" ± {deltas.std(ddof=1):.1f}" if len(deltas) > 1 else ""
        print(f"{architecture:<19} {rows[0][2]:>7}  {deltas.mean():+.1f}{spread}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
