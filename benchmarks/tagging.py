"""Joint POS + NER on UD English-EWT + Universal NER: multi-task vs single-task.

Trains the zoo's `pos_ner_bilstm_crf` (words + character CNN, BiLSTM trunk,
softmax UPOS head, CRF NER head) on the train split of
`../shared/data/ud_ewt_uner`, then a single-task POS model and a single-task
NER model with the same trunk, data pipeline, optimizer and number of epochs,
and reports on dev, in one run:

- UPOS accuracy and NER entity F1 (conlleval: type and both boundaries) of
  each model, and Δm of the multi-task model against the single-task ones;
- training throughput (sentences per second over the whole fit, including
  the input pipeline), per model;
- the step time of the multi-task model divided by the sum of the two
  single-task step times (medians of the compiled train step on the same
  fixed batch of 32 sentences, timed in shuffled rounds, as
  `sharing_cost.py`).

No pretrained embeddings: the word vocabulary is the lowercased training
words seen at least twice (the others train the OOV embedding), the character
CNN covers spelling. Nothing here asserts a wall-clock number.

Usage:
    python benchmarks/tagging.py                 # full run (about 10-15 minutes on 2 CPU cores)
    python benchmarks/tagging.py --epochs 4      # shorter
    python benchmarks/tagging.py --quick         # synthetic corpus, tiny model, seconds
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "benchmarks")]

from bench_common import median_step_seconds, percent  # noqa: E402

import kerasmtl as mtl  # noqa: E402
import zoo  # noqa: E402
from kerasmtl.data import text as tagging_data  # noqa: E402

DATA = REPO_ROOT.parent / "shared" / "data" / "ud_ewt_uner"
BOUNDARIES = [8, 16, 24, 32, 48, 64]
TARGETS = {"pos": 0.95, "ner": 0.78}  # UPOS accuracy, NER entity F1 (issue 3)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="synthetic corpus, tiny model: checks that it runs")
    parser.add_argument("--data", default=str(DATA), help="ud_ewt_uner folder")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lstm-units", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"python {platform.python_version()}, tensorflow {tf.__version__}, keras "
          f"{keras.__version__}, CPUs: {os.cpu_count()}")

    if args.quick:
        train = mtl.data.synthetic_tagged_corpus(300, seed=args.seed, missing_ner_rate=0.3)
        dev = mtl.data.synthetic_tagged_corpus(100, seed=args.seed + 1)
        source = "synthetic corpus (--quick)"
        sizes = {"word_dim": 8, "char_filters": 8, "lstm_units": 8}
        args.epochs = 2
    else:
        if not (Path(args.data) / "joined").is_dir():
            print(f"skipped: no UD-EWT/UNER data at {args.data} (see ../shared/data/README.md)")
            return 0
        train, dev = mtl.data.load_ud_ewt_uner(args.data)
        source = f"UD English-EWT r2.9 UPOS + UNER ({args.data})"
        sizes = {"lstm_units": args.lstm_units}
    tags = tagging_data.tag_vocabularies([train, dev], tasks=["pos", "ner"])
    kwargs = {
        "vocabulary": tagging_data.build_vocabulary(train, min_count=2, lowercase=True),
        "char_vocabulary": tagging_data.build_char_vocabulary(train, min_count=2),
        "pos_tags": tags["pos"], "ner_tags": tags["ner"], **sizes,
    }
    train_ds = tagging_data.tagging_dataset(
        train, tags, args.batch_size, shuffle=True, seed=args.seed,
        bucket_boundaries=BOUNDARIES).prefetch(2)
    dev_ds = tagging_data.tagging_dataset(dev, tags, 256, bucket_boundaries=BOUNDARIES)
    print(f"data: {source}: {len(train)} train / {len(dev)} dev sentences, "
          f"{len(kwargs['vocabulary'])} words in the vocabulary, "
          f"{len(tags['pos'])} POS tags, {len(tags['ner'])} NER tags")
    print(f"budget: {args.epochs} epochs, batch {args.batch_size}, Adam, seed {args.seed}, "
          f"BiLSTM {kwargs.get('lstm_units', 64)} units per direction")

    tasks = zoo.create_model("pos_ner_bilstm_crf", **kwargs).tasks
    variants = {"multi-task": tasks, "POS only": [tasks[0]], "NER only": [tasks[1]]}
    results, models = {}, {}
    for label, model_tasks in variants.items():
        keras.utils.set_random_seed(args.seed)
        model = zoo.create_model("pos_ner_bilstm_crf", tasks=model_tasks, **kwargs)
        model.compile(optimizer="adam")
        names = [t.name for t in model_tasks]
        ds = train_ds.map(lambda x, y, names=names: (x, {n: y[n] for n in names}))
        start = time.perf_counter()
        model.fit(ds, epochs=args.epochs, verbose=0)
        seconds = time.perf_counter() - start
        report = mtl.evaluation.task_report(
            model, dev_ds.map(lambda x, y, names=names: (x, {n: y[n] for n in names})))
        results[label] = {"report": report, "seconds": seconds,
                          "sentences_per_second": len(train) * args.epochs / seconds}
        models[label] = model
        print(f"trained {label}: {seconds:.0f} s, "
              f"{results[label]['sentences_per_second']:.0f} sentences/s; " + ", ".join(
                  f"{n} {k}={v:.4f}" for n, r in report.items() for k, v in r.items()
                  if k in ("accuracy", "entity_f1")), flush=True)

    mtl_values = {"pos": results["multi-task"]["report"]["pos"]["accuracy"],
                  "ner": results["multi-task"]["report"]["ner"]["entity_f1"]}
    stl_values = {"pos": results["POS only"]["report"]["pos"]["accuracy"],
                  "ner": results["NER only"]["report"]["ner"]["entity_f1"]}
    if min(stl_values.values()) > 0:
        delta = mtl.evaluation.delta_m(mtl_values, stl_values, {"pos": True, "ner": True})
    else:  # e.g. --quick: too little training for any correct entity
        delta = float("nan")
    x, y = next(iter(train_ds.unbatch().batch(32).take(1)))
    step = median_step_seconds(models, x, y, rounds=3 if args.quick else 7,
                               seed=args.seed)

    print()
    print(f"{'model':12s} {'UPOS acc':>9s} {'NER F1':>8s} {'train s':>8s} {'sent/s':>7s} "
          f"{'step ms':>8s}")
    for label in variants:
        report = results[label]["report"]
        pos = report.get("pos", {}).get("accuracy")
        ner = report.get("ner", {}).get("entity_f1")
        print(f"{label:12s} {percent(pos):>9s} {percent(ner):>8s} "
              f"{results[label]['seconds']:8.0f} "
              f"{results[label]['sentences_per_second']:7.0f} {1000 * step[label]:8.1f}")
    ratio = step["multi-task"] / (step["POS only"] + step["NER only"])
    print(f"Δm (multi-task vs single-task, UPOS accuracy and NER F1) = {100 * delta:+.2f}%")
    print(f"step time ratio multi-task / (POS + NER single-task) = {ratio:.2f}")
    print(f"verdict: UPOS {100 * mtl_values['pos']:.2f}% vs target >= 95; NER F1 "
          f"{100 * mtl_values['ner']:.2f} vs target >= 78; Δm {100 * delta:+.2f}% vs "
          "target > 0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
