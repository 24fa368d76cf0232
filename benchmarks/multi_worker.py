"""Scaling of `MultiTaskModel.fit` from 1 to 2 workers of
`tf.distribute.MultiWorkerMirroredStrategy` on this machine (issue 21).

Runs the same training three ways, each in fresh processes:

- `1 process`: no strategy, `--threads` TensorFlow threads;
- `1 worker`: a one-worker `MultiWorkerMirroredStrategy` (the strategy's own
  overhead, no communication), same threads;
- `2 workers`: two local worker processes (TF_CONFIG on 127.0.0.1, collective
  all-reduce over the loopback), each with `--threads` // 2 threads, so that
  both runs use the same cores.

Every run trains a hard-sharing MLP on synthetic tabular data with the
same global batch, and reports the median steps/s over timed epochs (the
first epoch, which traces, is left out). In the two-worker runs each worker
also times `--allreduce-rounds` all-reduces of one float32 tensor the size
of the model's trainable weights: the per-step communication cost of the
gradient all-reduce. Loss weightings need one such all-reduce per step;
gradient balancers one per task (the task gradients), plus the Gram matrix.

    python benchmarks/multi_worker.py                  # Equal, ~3 minutes
    python benchmarks/multi_worker.py --weighting pcgrad --hidden 512
    python benchmarks/multi_worker.py --quick          # seconds: checks that it runs

On 2 cores, two workers cannot be faster than one process: they share the
same cores and add the all-reduce. The numbers say what the strategy and
the communication cost; on real hosts each worker has its own cores, so
the step time is the one-worker compute on half the batch plus the
all-reduce (bounded by the network: bytes / bandwidth, times 2 (W-1)/W for a
ring all-reduce of W workers).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from kerasmtl.multi_worker import local_worker_configs

WORKER = r'''
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf

args = json.loads(sys.argv[1])
tf.config.threading.set_intra_op_parallelism_threads(args["threads"])
tf.config.threading.set_inter_op_parallelism_threads(args["threads"])
if args["mode"] == "process":
    strategy = tf.distribute.get_strategy()
else:
    options = tf.distribute.experimental.CommunicationOptions(
        bytes_per_pack=args["bytes_per_pack"])
    strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
import keras, numpy as np
import kerasmtl as mtl
from kerasmtl.data import synthetic_tabular
from kerasmtl.weighting_spec import weighting_factory

keras.utils.set_random_seed(0)
x, y = synthetic_tabular(args["examples"], missing_rate=0.3, seed=0)
with strategy.scope():
    inputs = keras.Input((x.shape[1],))
    h = inputs
    for _ in range(args["layers"]):
        h = keras.layers.Dense(args["hidden"], activation="relu")(h)
    model = mtl.sharing.hard_sharing(
        inputs, h, mtl.tasks.synthetic_tabular_tasks(),
        weighting=weighting_factory(args["weighting"])())
    model.compile(optimizer="adam")


class EpochTimes(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        times.append(time.perf_counter() - self.start)


times = []
model.fit(x, y, batch_size=args["batch_size"], epochs=args["epochs"], verbose=0,
          callbacks=[EpochTimes()])
size = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
result = {"epoch_seconds": times, "steps_per_epoch": -(-len(x) // args["batch_size"]),
          "parameters": size, "replicas": strategy.num_replicas_in_sync}
if strategy.num_replicas_in_sync > 1:
    value = tf.ones([size])

    @tf.function
    def all_reduce():
        return strategy.run(lambda: tf.distribute.get_replica_context().all_reduce(
            tf.distribute.ReduceOp.SUM, value))

    all_reduce()
    start = time.perf_counter()
    for _ in range(args["allreduce_rounds"]):
        all_reduce()
    result["allreduce_ms"] = 1e3 * (time.perf_counter() - start) / args["allreduce_rounds"]
with open(args["out"], "w") as f:
    json.dump(result, f)
'''


def run(mode: str, workers: int, threads: int, settings: dict, tmp: str,
        timeout: float) -> list[dict]:
    """Starts `workers` processes of `mode` running `tmp/worker.py`; returns
    their results."""
    script = os.path.join(tmp, "worker.py")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("TF_CONFIG", None)
    configs = local_worker_configs(workers)
    procs, outs = [], []
    for index in range(workers):
        out = os.path.join(tmp, f"{mode}-{workers}-{index}.json")
        worker_env = dict(env)
        if mode != "process":
            worker_env["TF_CONFIG"] = configs[index]
        arguments = json.dumps({**settings, "mode": mode, "threads": threads, "out": out})
        procs.append(subprocess.Popen([sys.executable, script, arguments], env=worker_env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
        outs.append(out)
    deadline = time.monotonic() + timeout
    try:
        for proc in procs:
            output = proc.communicate(timeout=max(deadline - time.monotonic(), 1.0))[0]
            if proc.returncode != 0:
                raise RuntimeError(f"{mode} x{workers} failed:\n{output[-3000:]}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    results = []
    for out in outs:
        with open(out) as f:
            results.append(json.load(f))
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weighting", default="equal")
    parser.add_argument("--examples", type=int, default=8192)
    parser.add_argument("--batch-size", type=int, default=256, help="global batch")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4, help="the first is not timed")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--allreduce-rounds", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--bytes-per-pack", type=int, default=0,
                        help="MultiWorkerMirroredStrategy's CommunicationOptions: "
                        "gradients packed into all-reduces of this many bytes "
                        "(0: TensorFlow's default)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny run (1,024 examples, 2 epochs): checks that it runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.examples, args.epochs, args.hidden, args.allreduce_rounds = 1024, 2, 32, 10
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch is not timed)")
    settings = {key: getattr(args, key) for key in
                ("weighting", "examples", "batch_size", "hidden", "layers", "epochs",
                 "allreduce_rounds", "bytes_per_pack")}
    try:
        load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        load = "n/a"
    print(f"CPUs: {os.cpu_count()}, load average at start: {load}; weighting "
          f"{args.weighting}, global batch {args.batch_size}, {args.layers} x "
          f"{args.hidden} hidden units, {args.examples} examples, "
          f"{args.epochs - 1} timed epochs")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "worker.py"), "w") as f:
            f.write(WORKER)
        for label, mode, workers, threads in (
            ("1 process", "process", 1, args.threads),
            ("1 worker (strategy)", "worker", 1, args.threads),
            ("2 workers", "worker", 2, max(args.threads // 2, 1)),
        ):
            results = run(mode, workers, threads, settings, tmp, args.timeout)
            first = results[0]
            seconds = statistics.median([max(r["epoch_seconds"][i] for r in results)
                              for i in range(1, args.epochs)])
            steps = first["steps_per_epoch"] / seconds
            allreduce = [r["allreduce_ms"] for r in results if "allreduce_ms" in r]
            rows.append((label, threads, steps, allreduce, first["parameters"]))
    base = rows[0][2]
    print(f"\n{'run':22s} {'threads/proc':>12s} {'steps/s':>8s} {'examples/s':>10s} "
          f"{'vs 1 process':>12s} {'all-reduce ms':>13s}")
    for label, threads, steps, allreduce, _ in rows:
        reduce_text = f"{statistics.median(allreduce):.3f}" if allreduce else "-"
        print(f"{label:22s} {threads:12d} {steps:8.1f} {steps * args.batch_size:10.0f} "
              f"{steps / base:12.2f}x {reduce_text:>13s}")
    parameters = rows[0][4]
    two = rows[2]
    if two[3]:
        share = statistics.median(two[3]) / (1e3 / two[2])
        print(f"\nall-reduce of {parameters} float32 ({4 * parameters / 1e6:.2f} MB), "
              f"loopback: {statistics.median(two[3]):.3f} ms = {100 * share:.1f}% of a 2-worker step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
