"""Train-step speed of the joint POS + NER tagger against a stored baseline
configuration, side by side in one run (issue 16's speed target).

Builds the zoo's `pos_ner_bilstm_crf` with its recipe's settings on the UD
English-EWT vocabularies, then a copy with the same weights in the baseline
configuration: what the zoo tagger was before the speed work (`BASELINE`
layer settings switched back in a copy of the model config, Keras's `LSTM`
for the recipe's `HoistedLSTM`, task metrics
computed in every train step, the earlier length buckets
`BASELINE_BUCKETS`). By default both use Equal loss weighting, not the
recipe's weighting: this measures the model and pipeline, not a gradient
balancer's extra backward passes (`benchmarks/balancers.py` does);
`--weighting SPEC` gives the current model that weighting (e.g. the
recipe's, `--weighting recipe`) while the baseline keeps Equal, which
measures the recipe as trained against the earlier configuration as it
was trained. Both train on the same training sentences, each batched
by its own length buckets, in shuffled rounds of one pass each; the script
prints each configuration's median seconds per pass, sentences per second
and the speed-up, and checks that both give the same tags on the dev
sentences (the speed work changes cost, not results).

It also reports the padding share of both bucketings (counted, not timed).

Nothing here asserts a wall-clock number; the load average is printed.

Usage:
    python benchmarks/tagging_speed.py               # about 5 minutes on 2 CPU cores
    python benchmarks/tagging_speed.py --rounds 3    # shorter
    python benchmarks/tagging_speed.py --weighting recipe   # the recipe's weighting on the current side
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
import zoo.tagging  # noqa: E402
from zoo.training import load_training_data, training_settings  # noqa: E402

DATA = REPO_ROOT.parent / "shared" / "data" / "ud_ewt_uner"
NAME = "pos_ner_bilstm_crf"
# Layer settings of the baseline, by layer name: the character CNN over every
# token slot and max_chars character slots (before `compact`).
BASELINE = {"char_cnn": {"compact": False}}
# Length buckets of the baseline's batches (the recipe's are
# zoo.tagging.BUCKET_BOUNDARIES).
BASELINE_BUCKETS = [8, 16, 24, 32, 48, 64]


def baseline_copy(model: mtl.MultiTaskModel) -> mtl.MultiTaskModel:
    """`model` rebuilt with the `BASELINE` layer settings and its weights."""
    config = model.get_config()
    config["weighting"] = None  # the baseline trained with Equal weighting
    for layer in config["layers"]:
        layer["config"].update(BASELINE.get(layer["config"]["name"], {}))
    copy = mtl.MultiTaskModel.from_config(_keras_lstm(config))
    for layer in model.layers:  # layer by layer: a weighting may hold weights too
        copy.get_layer(layer.name).set_weights(layer.get_weights())
    return copy


def _keras_lstm(config):
    """`config` with every `HoistedLSTM` (the recipe's BiLSTM) a Keras `LSTM`
    (same weights and arguments): the baseline's loop projects each step's
    inputs and masks every step."""
    if isinstance(config, list):
        return [_keras_lstm(item) for item in config]
    if not isinstance(config, dict):
        return config
    if config.get("class_name") == "HoistedLSTM":
        return {**config, "module": "keras.layers", "class_name": "LSTM",
                "registered_name": None}
    return {key: _keras_lstm(value) for key, value in config.items()}


def time_passes(models: dict, batches: dict, rounds: int, seed: int = 0) -> dict:
    """Median seconds of one pass of each model's train step over its own
    `batches[label]`, models in shuffled order in each round."""
    for label, model in models.items():
        for x, y in batches[label]:  # traces the step for every bucket shape
            model.train_on_batch(x, y)
    rng = np.random.default_rng(seed)
    times = {label: [] for label in models}
    for _ in range(rounds):
        for label in rng.permutation(list(models)):
            start = time.perf_counter()
            for x, y in batches[label]:
                models[label].train_on_batch(x, y)
            times[label].append(time.perf_counter() - start)
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
    parser.add_argument("--sentences", type=int, default=2000,
                        help="training sentences per pass (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--weighting", default=None, metavar="SPEC",
                        help="the current model's weighting: a --weighting spelling "
                        "or 'recipe' (default: Equal, as the baseline's)")
    args = parser.parse_args(argv)
    print(limit_threads(args.threads))

    spec = "synthetic" if args.quick else args.data
    data = load_training_data(NAME, spec, batch_size=32, seed=0)
    sizes = zoo.registry.get_entry(NAME).recipe["model_kwargs"]
    if args.quick:
        sizes = {"word_dim": 8, "char_dim": 4, "char_filters": 4, "lstm_units": 8}
        args.sentences, args.rounds = min(args.sentences, 96), min(args.rounds, 2)
        train = mtl.data.synthetic_tagged_corpus(500, seed=0)
    else:
        train, _ = mtl.data.load_ud_ewt_uner(args.data)
    spec_ = training_settings(NAME).weighting if args.weighting == "recipe" else args.weighting
    weighting = None if spec_ is None else mtl.weighting_spec.weighting_factory(spec_)()
    print(f"current model's weighting: {spec_ or 'equal'}; baseline's: equal")
    keras.utils.set_random_seed(0)
    model = zoo.create_model(NAME, tasks=data.tasks, weighting=weighting,
                             **{**sizes, **data.model_kwargs})
    baseline = baseline_copy(model)
    models = {"baseline": baseline, "current": model}
    baseline.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  train_metrics=training_settings(NAME).train_metrics)

    order = np.random.default_rng(0).permutation(len(train))[:args.sentences]
    subset = mtl.data.TaggedCorpus([train.tokens[i] for i in order],
                                   {t: [train.tags[t][i] for i in order] for t in ("pos", "ner")})
    tags = {"pos": data.model_kwargs["pos_tags"], "ner": data.model_kwargs["ner_tags"]}
    buckets = {"baseline": BASELINE_BUCKETS, "current": zoo.tagging.BUCKET_BOUNDARIES}
    batches = {label: list(mtl.data.tagging_dataset(subset, tags, 32, shuffle=True, seed=0,
                                                    bucket_boundaries=b))
               for label, b in buckets.items()}

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

    seconds = time_passes(models, batches, args.rounds)
    print(f"\ntrain step, one pass over {len(subset)} training sentences x {args.rounds} "
          "rounds (median):")
    for label, s in seconds.items():
        print(f"  {label:9s} {s:7.2f} s per pass ({len(batches[label])} batches)  "
              f"{len(subset) / s:7.0f} sentences/s")
    print(f"  speed-up current / baseline: {seconds['baseline'] / seconds['current']:.2f}x")

    sentences = list(train.tokens)
    for label, boundaries in buckets.items():
        print(f"padding share, {label} buckets {boundaries[:4]}...{boundaries[-1]}: "
              f"{100 * padding_share(sentences, boundaries):.1f}%")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
