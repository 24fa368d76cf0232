"""Train-step speed of the joint POS + NER tagger against a stored baseline
configuration, side by side in one run (issue 16's speed target).

Builds the zoo's `pos_ner_bilstm_crf` with its recipe's settings on the UD
English-EWT vocabularies, then a copy with the same weights in the baseline
configuration (`BASELINE`: what the zoo model was before the speed work; a
copy of the model config with those settings switched back). Both run the
compiled train step on the same real, bucketed training batches, in shuffled
rounds; the script prints each configuration's median seconds per batch and
the speed-up, and checks that both give the same tags on the dev sentences.

It also reports the padding share of the recipe's length buckets against
finer ones (counted, not timed).

Nothing here asserts a wall-clock number; the load average is printed.

Usage:
    python benchmarks/tagging_speed.py               # about 3 minutes on 2 CPU cores
    python benchmarks/tagging_speed.py --rounds 3    # shorter
    python benchmarks/tagging_speed.py --quick       # synthetic corpus, tiny model, seconds
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "benchmarks")]

from bench_common import limit_threads  # noqa: E402

import kerasmtl as mtl  # noqa: E402
import zoo  # noqa: E402
from zoo.training import load_training_data  # noqa: E402

DATA = REPO_ROOT.parent / "shared" / "data" / "ud_ewt_uner"
NAME = "pos_ner_bilstm_crf"
# Layer settings of the baseline, by layer name: the character CNN over every
# token slot and max_chars character slots (before `compact`).
BASELINE = {"char_cnn": {"compact": False}}


def baseline_copy(model: mtl.MultiTaskModel) -> mtl.MultiTaskModel:
    """`model` rebuilt with the `BASELINE` layer settings and its weights."""
    config = model.get_config()
    for layer in config["layers"]:
        layer["config"].update(BASELINE.get(layer["config"]["name"], {}))
    copy = mtl.MultiTaskModel.from_config(config)
    copy.set_weights(model.get_weights())
    return copy


def time_steps(models: dict, batches: list, rounds: int, seed: int = 0) -> dict:
    """Median seconds per train step of each model over `batches`, one pass
    over all batches per model per round, models in shuffled order."""
    for model in models.values():
        for x, y in batches[:3]:  # traces the step for the bucket shapes seen
            model.train_on_batch(x, y)
        for x, y in batches:
            model.train_on_batch(x, y)
    rng = np.random.default_rng(seed)
    times = {label: [] for label in models}
    for _ in range(rounds):
        for label in rng.permutation(list(models)):
            start = time.perf_counter()
            for x, y in batches:
                models[label].train_on_batch(x, y)
            times[label].append((time.perf_counter() - start) / len(batches))
    return {label: float(np.median(t)) for label, t in times.items()}


def padding_share(sentences, boundaries) -> float:
    """Share of padded token slots when each batch pads to its bucket's end."""
    lengths = np.array([len(s) for s in sentences])
    edges = np.array([*boundaries, max(lengths.max(), boundaries[-1]) + 1])
    padded = edges[np.searchsorted(edges, lengths, side="right")] - 1
    return float(1 - lengths.sum() / padded.sum())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="synthetic corpus, tiny model: checks that it runs")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--batches", type=int, default=40,
                        help="training batches timed per round (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    print(limit_threads(args.threads))

    spec = "synthetic" if args.quick else args.data
    data = load_training_data(NAME, spec, batch_size=32, seed=0)
    sizes = zoo.registry.get_entry(NAME).recipe["model_kwargs"]
    if args.quick:
        sizes = {"word_dim": 8, "char_dim": 4, "char_filters": 4, "lstm_units": 8}
        args.batches, args.rounds = min(args.batches, 3), min(args.rounds, 2)
    keras.utils.set_random_seed(0)
    model = zoo.create_model(NAME, tasks=data.tasks, **{**sizes, **data.model_kwargs})
    baseline = baseline_copy(model)
    models = {"baseline": baseline, "current": model}
    for m in models.values():
        m.compile(optimizer=keras.optimizers.Adam(1e-3))
    batches = list(data.train.take(args.batches))

    # Same tags on the dev sentences (the exported signature runs the same
    # layers; tests/test_tagging_zoo.py checks the layer-level equality).
    dev = list(data.dev.take(4))
    same = all(
        np.array_equal(np.asarray(a), np.asarray(b))
        for x, _ in dev
        for a, b in zip(
            (v for k, v in sorted(baseline.postprocess(baseline(x)).items())),
            (v for k, v in sorted(model.postprocess(model(x)).items())))
    )
    print(f"same tags on {sum(int(x['tokens'].shape[0]) for x, _ in dev)} dev sentences: {same}")

    seconds = time_steps(models, batches, args.rounds)
    sentences = np.mean([int(x["tokens"].shape[0]) for x, _ in batches])
    print(f"\ntrain step, {args.batches} real bucketed batches x {args.rounds} rounds "
          f"(median seconds per batch of ~{sentences:.0f} sentences):")
    for label, s in seconds.items():
        print(f"  {label:9s} {s * 1e3:8.1f} ms   {sentences / s:7.0f} sentences/s")
    print(f"  speed-up current / baseline: {seconds['baseline'] / seconds['current']:.2f}x")

    if args.quick:
        train = mtl.data.synthetic_tagged_corpus(500, seed=0)
    else:
        train, _ = mtl.data.load_ud_ewt_uner(args.data)
    sentences = list(train.tokens)
    for boundaries in ([8, 16, 24, 32, 48, 64], list(range(4, 68, 4))):
        print(f"padding share with buckets {boundaries[:4]}...{boundaries[-1]}: "
              f"{100 * padding_share(sentences, boundaries):.1f}%")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
