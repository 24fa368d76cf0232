"""Joint POS + NER: Δm of every loss weighting and gradient balancer, one table.

Trains the zoo's `pos_ner_bilstm_crf` on UD English-EWT + Universal NER
(`../shared/data/ud_ewt_uner`) once per method named in `--methods` (each a
`--weighting` spelling: `equal`, `uncertainty`, `pcgrad`,
`"static:weights={'pos': 1.0, 'ner': 2.0}"`, ...), and the single-task POS
and NER models once, all with the recipe's model, data pipeline and
optimizer (a cosine decay over `--epochs`), the same seed and budget. Each
model's dev UPOS accuracy and NER entity F1 are recorded after every epoch
(the learning curves), and the table gives, per method, the last epoch's
figures, Δm against the single-task models (Maninis et al. 2019, positive:
the joint model is better) and seconds per epoch.

Missing labels are present, as issue 19 asks: `--drop-ner 0.3` (the
default) removes the NER labels of 30% of the training sentences (all set to
-1, masked), the same sentences for every model and epoch (chosen by a hash
of the sentence's tokens); POS labels are all kept. Dev is untouched.

The last epoch's figures are reported (not the best epoch's), so nothing
is chosen on dev. `--seeds N` repeats every model with seeds 0..N-1 (the
initialisation, shuffle and dropout) and reports the mean and, for N > 1,
the sample standard deviation; with one seed, differences under about one F1
point are within what a second seed moves. Nothing here asserts a wall-clock
number; the load average is printed.

Usage:
    python benchmarks/tagging_methods.py                       # 8 epochs, 7 methods: ~40 min on 2 cores
    python benchmarks/tagging_methods.py --seeds 3             # mean and spread over 3 seeds
    python benchmarks/tagging_methods.py --epochs 4 --methods equal,pcgrad
    python benchmarks/tagging_methods.py --quick               # synthetic corpus, tiny model, seconds
    python benchmarks/tagging_methods.py --json runs.json --resume --methods cagrad
                                           # adds CAGrad to the models runs.json holds
    python benchmarks/tagging_methods.py --report runs.json    # the table of a (stopped) run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "benchmarks")]

from bench_common import (  # noqa: E402
    add_method_arguments,
    chosen_methods,
    limit_threads,
    load_average,
    resumed_runs,
    save_runs,
    spread,
)

import kerasmtl as mtl  # noqa: E402
from kerasmtl import weighting_spec  # noqa: E402
from zoo import registry, training, training_settings  # noqa: E402

DATA = REPO_ROOT.parent / "shared" / "data" / "ud_ewt_uner"
NAME = "pos_ner_bilstm_crf"
METHODS = ["equal", "static:weights={'pos': 1.0, 'ner': 2.0}", "uncertainty", "dwa",
           "famo", "pcgrad", "upgrad"]
METRICS = {"pos": "accuracy", "ner": "entity_f1"}


def drop_ner_labels(dataset, rate: float):
    """`dataset` with the NER labels of about `rate` of its sentences set to -1:
    the sentences whose joined tokens hash below `rate` (the same ones in every
    epoch and run, whatever the batching)."""
    if rate <= 0:
        return dataset
    buckets = 10_000

    def drop(x, y):
        text = tf.strings.reduce_join(x["tokens"], axis=-1, separator=" ")
        dropped = tf.strings.to_hash_bucket_fast(text, buckets) < int(rate * buckets)
        ner = tf.where(dropped[:, None], tf.constant(-1, y["ner"].dtype), y["ner"])
        return x, {**y, "ner": ner}

    return dataset.map(drop)


def count_ner_sentences(dataset) -> tuple[int, int]:
    """(sentences with NER labels, all sentences) in a batched dataset."""
    labelled = total = 0
    for _, y in dataset:
        labelled += int(tf.reduce_sum(tf.cast(tf.reduce_any(y["ner"] >= 0, axis=1), tf.int32)))
        total += int(y["ner"].shape[0])
    return labelled, total


def train_one(data, tasks, weighting, epochs: int, model_kwargs: dict, seed: int = 0) -> dict:
    """Trains one model on `tasks`; returns its dev curves and seconds per epoch."""
    keras.utils.set_random_seed(seed)
    kwargs = dict(model_kwargs, **data.model_kwargs, tasks=list(tasks))
    if weighting is not None and len(tasks) > 1:
        kwargs["weighting"] = weighting()
    model = registry.create_model(NAME, **kwargs)
    settings = training.training_settings(NAME, epochs=epochs)
    steps = training_settings.steps_per_epoch(data.train, settings.batch_size)
    model.compile(optimizer=settings.make_optimizer(steps),
                  train_metrics=settings.train_metrics)
    names = [t.name for t in tasks]
    train = data.train.map(lambda x, y: (x, {n: y[n] for n in names}))
    dev = data.dev.map(lambda x, y: (x, {n: y[n] for n in names}))
    start = time.perf_counter()
    history = model.fit(train, validation_data=dev, epochs=epochs, verbose=0).history
    seconds = (time.perf_counter() - start) / epochs
    return {"curves": {n: [float(v) for v in history[f"val_{n}/{METRICS[n]}"]]
                       for n in names},
            "seconds_per_epoch": seconds}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="synthetic corpus, tiny model: checks that it runs")
    parser.add_argument("--data", default=str(DATA), help="ud_ewt_uner folder")
    parser.add_argument("--epochs", type=int, default=8)
    add_method_arguments(parser)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--drop-ner", type=float, default=0.3,
                        help="share of training sentences whose NER labels are removed")
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 per model")
    parser.add_argument("--json", default=None,
                        help="also write the results here (after every model)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the models already in the --json file (same data, epochs "
                        "and --drop-ner) and train only the missing ones")
    parser.add_argument("--report", default=None, metavar="JSON",
                        help="print the table of a --json file (also of a stopped run)")
    args = parser.parse_args(argv)
    if args.report:
        with open(args.report) as f:
            saved = json.load(f)
        print_table(saved["results"], saved["epochs"])
        return 0
    print(limit_threads(args.threads))
    methods = chosen_methods(args, METHODS)
    factories = {m: weighting_spec.weighting_factory(m) for m in methods}  # checks early

    spec, model_kwargs = str(args.data), dict(registry.get_entry(NAME).recipe["model_kwargs"])
    if args.quick:
        spec, args.epochs = "synthetic", min(args.epochs, 2)
        model_kwargs = {"word_dim": 16, "char_dim": 8, "char_filters": 8, "lstm_units": 16}
    elif not (Path(spec) / "joined").is_dir():
        print(f"skipped: no UD-EWT/UNER data at {spec} (see ../shared/data/README.md)")
        return 0
    data = training.load_training_data(NAME, spec, batch_size=32, seed=0)
    if args.quick:  # the synthetic corpus, scored on part of its dev split
        data.dev = data.dev.take(2)
    data.train = drop_ner_labels(data.train, args.drop_ner)
    labelled, total = count_ner_sentences(data.train)
    seeds = list(range(args.seeds))
    print(f"{data.summary}; {args.epochs} epochs per model, seeds {seeds}; NER labels "
          f"on {labelled} of {total} training sentences (--drop-ner {args.drop_ner:g})")
    by_name = {t.name: t for t in data.tasks}

    settings = {"epochs": args.epochs, "drop_ner": args.drop_ner, "data": spec}
    runs = resumed_runs(args.json, args.resume, settings)  # label -> one result per seed

    def save():  # after every model, so a long run that is stopped keeps its results
        save_runs(args.json, settings, runs)

    for task in ("pos", "ner"):
        label = f"{task} only"
        runs.setdefault(label, [])
        for seed in seeds[len(runs[label]):]:
            runs[label].append(train_one(data, [by_name[task]], None, args.epochs,
                                         model_kwargs, seed))
            save()
        print(f"  {task} only: " + ", ".join(
            f"{r['curves'][task][-1]:.4f}" for r in runs[label]), flush=True)
    for method in methods:
        runs.setdefault(method, [])
        for seed in seeds[len(runs[method]):]:
            result = train_one(data, data.tasks, factories[method], args.epochs,
                               model_kwargs, seed)
            # Against the single-task models of the same seed.
            single = {t: runs[f"{t} only"][seed]["curves"][t][-1] for t in ("pos", "ner")}
            last = {t: result["curves"][t][-1] for t in ("pos", "ner")}
            try:
                result["delta_m"] = mtl.evaluation.delta_m(last, single,
                                                           {"pos": True, "ner": True})
            except ValueError as error:  # a single-task figure of 0: no relative change
                print(f"  {method}: no Δm ({error})")
                result["delta_m"] = None
            runs[method].append(result)
            save()
            print(f"  {method} (seed {seed}): UPOS {last['pos']:.4f}, NER F1 "
                  f"{last['ner']:.4f}", flush=True)
    print_table(runs, args.epochs)
    print(f"load average at the end: {load_average()}")
    return 0


def print_table(runs: dict, epochs: int) -> None:
    """The Δm table and the learning curves of `runs` (label -> one result per seed)."""
    num_seeds = max(len(r) for r in runs.values())
    print(f"\ndev, after epoch {epochs} (UPOS accuracy / NER entity F1 in %; Δm "
          "against the single-task models of the same seed"
          + (f"; mean ± sample std over up to {num_seeds} seeds" if num_seeds > 1 else "")
          + "):\n")
    print("| model | seeds | UPOS | NER F1 | Δm | s/epoch |")
    print("|---|---|---|---|---|---|")
    for label, results in runs.items():
        pos = spread([100 * r["curves"]["pos"][-1] for r in results if "pos" in r["curves"]])
        ner = spread([100 * r["curves"]["ner"][-1] for r in results if "ner" in r["curves"]])
        deltas = [r.get("delta_m", "–") for r in results]
        dm = ("–" if "–" in deltas else "n/a" if None in deltas
              else spread([100 * d for d in deltas], signed=True) + "%")
        seconds = np.mean([r["seconds_per_epoch"] for r in results])
        print(f"| {label} | {len(results)} | {pos} | {ner} | {dm} | {seconds:.0f} |")
    print("\nlearning curves (dev, per epoch):")
    for label, results in runs.items():
        for seed, result in enumerate(results):
            for task, curve in result["curves"].items():
                print(f"  {label:45s} seed {seed} {task}: "
                      + " ".join(f"{100 * v:.1f}" for v in curve))


if __name__ == "__main__":
    raise SystemExit(main())
