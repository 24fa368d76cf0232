"""Cost and quality of the gradient balancers against equal weighting.

Cost. For T = 2, 3 and 5 tasks on one trunk (the shared-bottom MLP of
`sharing_cost.py`: 128 features, Dense 512-512-256, a 64-unit tower per
task, batch 256, adam), each balancer's training step time divided by the
equal-weighting step time of the same model, in parameter mode and (where
the method allows it) `rep_grad` mode, all in one run. Steps are timed as in
`sharing_cost.py` (Keras' compiled `train_function` on a fixed batch, short
rounds in shuffled order, paired per-round ratios, medians). Targets at T=3:
rep-grad mode <= 1.3x; parameter mode <= 1 + 0.8 (T - 1) = 2.6x.

Quality. A synthetic problem with conflicting tasks: three regression
targets on the same 16 inputs, `y_t = tanh(x w_t) + noise` with `w_2 = -w_1
+ small` (opposed to task 1) and `w_3` independent and 10x larger in scale.
Each method trains a small trunk for a fixed budget; Δm (`kerasmtl.evaluation
.delta_m`, MAE, positive is better) is against single-task models of the
same architecture and budget.

Every registered weighting that needs no argument is measured: the gradient
balancers (targets apply to them) and the loss weightings (one backward pass;
listed for comparison). `--methods pcgrad,famo` picks a subset.

Usage:
    python benchmarks/balancers.py           # full run, about 20-30 minutes on 2 CPU cores
    python benchmarks/balancers.py --quick   # tiny configuration (smoke test)
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from sharing_cost import (  # noqa: E402
    Config,
    environment_lines,
    make_batch,
    make_task,
    measure,
    step_runner,
    warm_up,
)

import kerasmtl as mtl  # noqa: E402
from kerasmtl import weighting_spec  # noqa: E402

W = mtl.weighting
# Every registered weighting that needs no argument (Static needs weights;
# Equal is the baseline), by its --weighting name: the gradient balancers
# first, then the loss weightings (whose cost is one backward pass too).
METHODS = {
    (w.alias or w.class_name.lower()): getattr(W, w.class_name)
    for level in ("gradient", "loss")
    for w in weighting_spec.registered_weightings()
    if w.level == level and not w.required and w.class_name != "Equal"
}
GRADIENT_LEVEL = {(w.alias or w.class_name.lower())
                  for w in weighting_spec.registered_weightings() if w.level == "gradient"}
TARGET_T = 3


def build(tasks, config, weighting, name):
    inputs = keras.Input((config.features,), name="features")
    x = inputs
    for i, units in enumerate(config.trunk_units):
        x = keras.layers.Dense(units, activation="relu", name=f"trunk_{i}")(x)
    model = mtl.sharing.hard_sharing(inputs, x, tasks, weighting=weighting, name=name)
    model.compile(optimizer="adam")
    return model


SELECTED = list(METHODS)  # --methods


def variants():
    yield "equal", lambda: W.Equal()
    for name in SELECTED:
        cls = METHODS[name]
        yield name, cls
        if getattr(cls, "supports_rep_grad", False):
            yield f"{name}_rep", lambda cls=cls: cls(rep_grad=True)


def cost(config, num_tasks):
    x, labels = mtl.data.synthetic_tabular(
        config.batch_size, config.features, seed=config.seed
    )
    x = tf.constant(x)
    labels = {k: tf.constant(v) for k, v in labels.items()}
    table = {}
    for t in num_tasks:
        tasks = [make_task(i, config.head_units) for i in range(t)]
        models = {n: build(tasks, config, make(), f"{n}_T{t}") for n, make in variants()}
        batches = {n: make_batch(m, x, labels) for n, m in models.items()}
        for n, m in models.items():
            warm_up(m, batches[n], config.driver)
        runners = {n: step_runner(m, batches[n], config.driver) for n, m in models.items()}
        times = measure(runners, config.steps, config.rounds, config.seed)
        equal = np.array(times["equal"])
        table[t] = {
            n: float(np.median(np.array(v) / equal)) for n, v in times.items() if n != "equal"
        }
        table[t]["equal_ms"] = float(np.median(equal))
    return table


def conflicting_tasks(seed=0, n=1024, d=16):
    """The quality problem: `(x, {t0, t1, t2: targets}, split)`, three
    regression targets on the same inputs, t1 opposed to t0, t2 independent
    and 10x larger; rows before `split` train, the others test."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype("float32")
    w1 = rng.normal(size=d)
    ws = [w1, -w1 + 0.3 * rng.normal(size=d), rng.normal(size=d)]
    scales = [1.0, 1.0, 10.0]
    y = {
        f"t{i}": (s * np.tanh(x @ w / 4) + 0.1 * rng.normal(size=n))[:, None].astype("float32")
        for i, (w, s) in enumerate(zip(ws, scales))
    }
    return x, y, 768


def quality(epochs, seed=0):
    x, y, split = conflicting_tasks(seed)
    d = x.shape[1]

    def run(names, weighting):
        keras.utils.set_random_seed(seed)
        tasks = [mtl.tasks.Regression(name) for name in names]
        inputs = keras.Input((d,))
        h = keras.layers.Dense(32, activation="relu")(inputs)
        h = keras.layers.Dense(16, activation="relu")(h)
        model = mtl.sharing.hard_sharing(inputs, h, tasks, weighting=weighting)
        model.compile(optimizer=keras.optimizers.Adam(3e-3))
        model.fit(x[:split], {k: y[k][:split] for k in names}, epochs=epochs,
                  batch_size=64, verbose=0)
        pred = model.predict(x[split:], verbose=0)
        return {k: float(np.mean(np.abs(pred[k] - y[k][split:]))) for k in names}

    names = list(y)
    single = {}
    for name in names:
        single.update(run([name], W.Equal()))
    rows = {}
    for label, make in variants():
        mae = run(names, make())
        rows[label] = (mae, mtl.evaluation.delta_m(mae, single, {k: False for k in names}))
    return single, rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--num-tasks", type=int, nargs="+", default=[2, 3, 5])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30, help="quality table budget (0: no quality table)")
    parser.add_argument("--methods", default=None,
                        help=f"comma-separated subset of {','.join(METHODS)} (default: all; "
                        "--quick: pcgrad,famo)")
    args = parser.parse_args(argv)
    chosen = args.methods.split(",") if args.methods else (
        ["pcgrad", "famo"] if args.quick else list(METHODS))
    unknown = sorted(set(chosen) - set(METHODS))
    if unknown:
        parser.error(f"unknown --methods {unknown}; choose from {','.join(METHODS)}")
    SELECTED[:] = chosen
    config = Config(steps=args.steps, rounds=args.rounds)
    if args.quick:
        config = Config(features=16, trunk_units=(32,), head_units=8, batch_size=32,
                        steps=1, rounds=1)
        args.num_tasks, args.epochs = [2], 1
    print("== kerasmtl gradient balancers: step time / equal weighting ==")
    for line in environment_lines():
        print(line)
    print(f"config: batch {config.batch_size}, trunk Dense{list(config.trunk_units)}, "
          f"tower {config.head_units}, {config.steps} steps x {config.rounds} rounds")
    start = time.perf_counter()
    table = cost(config, args.num_tasks)
    print(f"(timed in {time.perf_counter() - start:.0f} s)")
    names = [n for n, _ in variants() if n != "equal"]
    print("method        " + "".join(f"   T={t:<4d}" for t in args.num_tasks))
    print("equal (ms)    " + "".join(f"{table[t]['equal_ms']:9.2f}" for t in args.num_tasks))
    for n in names:
        print(f"{n:<14s}" + "".join(f"{table[t][n]:9.2f}" for t in args.num_tasks))
    if TARGET_T in table:
        limit = 1 + 0.8 * (TARGET_T - 1)
        for n in names:
            if n.removesuffix("_rep") not in GRADIENT_LEVEL:
                continue  # a loss weighting: one backward pass, no target
            target = 1.3 if n.endswith("_rep") else limit
            ok = "ok" if table[TARGET_T][n] <= target else "OVER"
            print(f"  T={TARGET_T} {n}: {table[TARGET_T][n]:.2f} (target <= {target:.1f}) {ok}")

    if args.epochs < 1:
        return 0
    single, rows = quality(args.epochs)
    print("\n== quality: conflicting synthetic tasks, test MAE, Δm vs single-task ==")
    print("single-task    " + "  ".join(f"{k} {v:.3f}" for k, v in single.items()))
    for label, (mae, dm) in rows.items():
        print(f"{label:<15s}" + "  ".join(f"{k} {v:.3f}" for k, v in mae.items())
              + f"   Δm {100 * dm:+.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
