"""Nuclei detection + segmentation: Δm of loss weightings and gradient balancers.

The vision half of issue 19's table (`tagging_methods.py` is the tagging
half). Trains the zoo's `det_seg_resnet_fpn` with its nuclei recipe
(`zoo.vision.vision_data` on the DSB-2018 folder: the same 80/20 split,
seed, augmentation, per-image standardisation, stride-2 segmentation and
optimizer as the preset, a cosine over `--epochs`) once per method named in
`--methods` (each a `--weighting` spelling: `equal`, `uncertainty`, `famo`,
`pcgrad`, `upgrad`, ...), and the detection-only and segmentation-only
models with the same trunk, data and number of steps.

Missing labels are present: `--drop-masks 0.3` (the default) removes the
segmentation masks of 30% of the training images (chosen once with the
seed, the same images in every epoch and for every model; their pixels are
all -1, masked); every image keeps its boxes. Dev is untouched.

Each model is exported and its serving signature run once (one pass, no
test-time flips: `test_time_flips=1`, so the table compares training
methods, not test-time averaging) on every full dev image; the table gives
box mAP@.50 and mAP@[.50:.95] (COCO), foreground IoU (nucleus pixels, pooled
over dev), the DSB-2018 instance score (the instance rule of
`benchmarks/nuclei.py`), Δm over (box mAP@.50, foreground
IoU) against the single-task models of the same seed (Maninis et al. 2019;
positive: the joint model is better) and seconds per epoch. The last epoch's
model is scored, so nothing is chosen on dev. `--seeds N` repeats every model
with seeds 0..N-1 (initialisation, shuffle, crops and augmentation; the
dev split stays the recipe's, seed 0) and reports mean ± sample std.

Training batches' box rows are cut to `nuclei.CROP_BOXES` when every crop
of the batch fits (`nuclei.trim_boxes`, never a silent drop): the CenterNet
targets cost 2.5x less, for every model alike.

Usage:
    python benchmarks/nuclei_methods.py                       # 6 methods, 8 epochs
    python benchmarks/nuclei_methods.py --seeds 2 --methods equal,uncertainty
    python benchmarks/nuclei_methods.py --quick               # 12 small images, tiny model
    python benchmarks/nuclei_methods.py --report results.json # the table of a --json file
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402

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
from nuclei import (  # noqa: E402
    DEFAULT_ROOT,
    INSTANCE_GROW,
    INSTANCE_OVERLAP,
    evaluate_export,
    missing_data,
    smallest_images,
    trim_boxes,
)

import kerasmtl as mtl  # noqa: E402
from kerasmtl import weighting_spec  # noqa: E402
from kerasmtl.data.vision.nuclei import read_instance_mask_folder  # noqa: E402
from kerasmtl.data.vision.pipeline import vision_dataset  # noqa: E402
from zoo import registry, training  # noqa: E402
from zoo.vision import DETECTION, NUCLEI_AUGMENT, SEGMENTATION, vision_data  # noqa: E402

NAME = "det_seg_resnet_fpn"
METHODS = ["equal", "uncertainty", "dwa", "famo", "pcgrad", "upgrad"]
DEV_FRACTION = 0.2  # the recipe's (vision_data's default)
HIGHER_IS_BETTER = {DETECTION: True, SEGMENTATION: True}
OLD_RULE = "overlaps to the score, boxes grown 0 per side"  # JSON files before the key


def instance_rule(overlap: str, grow: float) -> str:
    return f"overlaps to the {overlap}, boxes grown {grow:g} per side"


def settings(args, rule: str) -> dict:
    """What a `--json` file records and `--resume` checks."""
    return {"epochs": args.epochs, "drop_masks": args.drop_masks, "instance_rule": rule,
            "seg_stride": args.seg_stride, "batch_size": args.batch_size}


def resumed(args, rule: str) -> dict:
    """The runs of `args.json` with `--resume` (checked to match), else {}."""
    return resumed_runs(args.json, args.resume, settings(args, rule),
                        defaults={"instance_rule": OLD_RULE})


def drop_masks(data, rate: float, seed: int):
    """`data` with the masks of `round(rate * len(data))` images, chosen with
    `seed`, missing (None: all -1 in the pipeline, masked in the loss)."""
    count = int(round(rate * len(data.images)))
    dropped = set(np.random.default_rng(seed).permutation(len(data.images))[:count].tolist())
    masks = [None if i in dropped else m for i, m in enumerate(data.masks)]
    return dataclasses.replace(data, masks=masks), count


def train_one(train_ds, dev, tasks, weighting, epochs: int, steps: int,
              model_kwargs: dict, seed: int, instances: dict) -> dict:
    """Trains one model on `tasks` for `epochs` x `steps`; scores it through
    its export on the full dev images."""
    keras.utils.set_random_seed(seed)
    kwargs = dict(model_kwargs, tasks=list(tasks))
    if weighting is not None and len(tasks) > 1:
        kwargs["weighting"] = weighting()
    model = registry.create_model(NAME, **kwargs)
    settings = training.training_settings(NAME, epochs=epochs)
    model.compile(optimizer=settings.make_optimizer(steps),
                  train_metrics=settings.train_metrics)
    names = [t.name for t in tasks]
    train = train_ds.map(lambda x, y: (x, {n: y[n] for n in names}))
    start = time.perf_counter()
    history = model.fit(train, epochs=epochs, steps_per_epoch=steps, verbose=0).history
    seconds = (time.perf_counter() - start) / epochs
    loss = history["loss"][-1]
    if not np.isfinite(loss):
        return {"figures": {}, "seconds_per_epoch": seconds, "loss": float(loss)}
    figures = evaluate_export(model, dev, with_instances=len(tasks) == 2, **instances)
    return {"figures": figures, "seconds_per_epoch": seconds, "loss": float(loss)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="12 small images, tiny model, 1 epoch: checks that it runs")
    parser.add_argument("--root", default=str(DEFAULT_ROOT))
    parser.add_argument("--epochs", type=int, default=8)
    add_method_arguments(parser)
    parser.add_argument("--drop-masks", type=float, default=0.3,
                        help="share of training images whose masks are removed")
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 per model")
    parser.add_argument("--seg-stride", type=int, default=None, choices=(2, 4),
                        help="the segmentation map's stride; default: the recipe's (2)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None,
                        help="also write the results here (after every model)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the models already in the --json file (same epochs, "
                        "masks, instance rule, stride and batch size) and train only "
                        "the missing ones")
    parser.add_argument("--instance-overlap", choices=("score", "centre"),
                        default=INSTANCE_OVERLAP, help="the DSB instances' overlap rule "
                        "(default: benchmarks/nuclei.py's, %(default)s)")
    parser.add_argument("--instance-grow", type=float, default=INSTANCE_GROW,
                        help="the DSB instances' box growth (default: %(default)s)")
    parser.add_argument("--report", default=None, metavar="JSON",
                        help="print the table of a --json file (also of a stopped run)")
    args = parser.parse_args(argv)
    if args.report:
        return report(args.report)
    root = Path(args.root)
    if missing_data(root):
        return 0
    print(limit_threads(args.threads))
    methods = chosen_methods(args, METHODS)
    factories = {m: weighting_spec.weighting_factory(m) for m in methods}  # checks early

    recipe = vision_data(str(root), batch_size=args.batch_size, seg_stride=args.seg_stride)
    model_kwargs = {**registry.get_entry(NAME).recipe.get("model_kwargs", {}),
                    **recipe.model_kwargs, "test_time_flips": 1}
    args.seg_stride = model_kwargs.get("seg_stride", 4)  # None: the recipe's
    ids = None
    if args.quick:
        args.epochs, args.batch_size = 1, 4
        model_kwargs.update(widths=(4, 4, 8, 8), fpn_channels=8, head_channels=8)
        ids = smallest_images(root, 12)
    data = read_instance_mask_folder(root, image_ids=ids)
    train, dev = data.split(DEV_FRACTION, seed=0)  # vision_data's split
    train, dropped = drop_masks(train, args.drop_masks, seed=0)
    steps = -(-len(train.images) // args.batch_size)
    max_boxes = recipe.model_kwargs["max_boxes"]
    seeds = list(range(args.seeds))
    print(f"{recipe.summary}\n{len(train.images)} train images ({dropped} without "
          f"masks: --drop-masks {args.drop_masks:g}), {len(dev.images)} dev; "
          f"{args.epochs} epochs x {steps} steps of {args.batch_size} per model, "
          f"seeds {seeds}", flush=True)
    by_name = {t.name: t for t in recipe.tasks}

    def train_data(seed):
        return vision_dataset(train, batch_size=args.batch_size, max_boxes=max_boxes,
                              image_size=(256, 256), fit="crop", shuffle=True,
                              seed=seed, augment=NUCLEI_AUGMENT,
                              repeat=True).map(trim_boxes)

    instances = {"overlap": args.instance_overlap, "grow": args.instance_grow}
    rule = instance_rule(**instances)

    def run(label, tasks, factory, seed):
        result = train_one(train_data(seed), dev, tasks, factory, args.epochs, steps,
                           model_kwargs, seed, instances)
        print(f"  {label} (seed {seed}): " + ", ".join(
            f"{k}={v:.4f}" for k, v in result["figures"].items())
            + f"; {result['seconds_per_epoch']:.0f} s/epoch, loss {result['loss']:.4f}",
            flush=True)
        return result

    def save():  # after every model, so a long run that is stopped keeps its results
        save_runs(args.json, settings(args, rule), runs, dev_images=len(dev.images))

    runs = resumed(args, rule)
    for task in (DETECTION, SEGMENTATION):
        label = f"{task} only"
        runs.setdefault(label, [])
        for seed in seeds[len(runs[label]):]:
            runs[label].append(run(label, [by_name[task]], None, seed))
            save()
    for method in methods:
        runs.setdefault(method, [])
        for seed in seeds[len(runs[method]):]:
            result = run(method, recipe.tasks, factories[method], seed)
            single = {DETECTION: runs[f"{DETECTION} only"][seed]["figures"].get("map_50"),
                      SEGMENTATION: runs[f"{SEGMENTATION} only"][seed]["figures"].get(
                          "foreground_iou")}
            joint = {DETECTION: result["figures"].get("map_50"),
                     SEGMENTATION: result["figures"].get("foreground_iou")}
            try:
                result["delta_m"] = mtl.evaluation.delta_m(joint, single, HIGHER_IS_BETTER)
            except (ValueError, TypeError) as error:  # a 0 or missing figure
                print(f"  {method}: no Δm ({error})")
                result["delta_m"] = None
            runs[method].append(result)
            save()

    print_table(runs, len(dev.images), args.epochs,
                max(len(r) for r in runs.values()), rule)
    print(f"load average at the end: {load_average()}")
    return 0


def print_table(runs: dict, dev_images: int, epochs: int, num_seeds: int,
                instance_rule: str) -> None:
    """The Markdown table of `runs` (label -> one result per seed)."""
    print(f"\ndev ({dev_images} full images, one pass through the export), after "
          f"epoch {epochs}; Δm over (box mAP@.50, foreground IoU) against the "
          "single-task models of the same seed"
          + (f"; mean ± sample std over {num_seeds} seeds" if num_seeds > 1 else "")
          + ":\n")
    print("| model | seeds | box mAP@.50 | mAP@[.5:.95] | foreground IoU | DSB-2018 | Δm "
          "| s/epoch |")
    print("|---|---|---|---|---|---|---|---|")
    for label, results in runs.items():
        cells = [spread([100 * r["figures"][k] for r in results if k in r["figures"]])
                 for k in ("map_50", "map", "foreground_iou", "dsb2018")]
        deltas = [r.get("delta_m", "–") for r in results]
        dm = ("–" if "–" in deltas else "n/a" if None in deltas
              else spread([100 * d for d in deltas], signed=True) + "%")
        seconds = np.mean([r["seconds_per_epoch"] for r in results])
        print(f"| {label} | {len(results)} | " + " | ".join(cells) + f" | {dm} | {seconds:.0f} |")
    print(f"DSB instances: joint = boxes ∩ foreground (in the exported graph; {instance_rule}); "
          "detection only = filled boxes; segmentation only = connected components")


def report(path: str) -> int:
    """Prints the table of a `--json` file, also of a run stopped early."""
    with open(path) as f:
        saved = json.load(f)
    print(f"{path}: {saved['epochs']} epochs, --drop-masks {saved['drop_masks']:g}, "
          f"seeds {saved['seeds']}")
    print_table(saved["results"], saved.get("dev_images", "?"), saved["epochs"],
                max(len(r) for r in saved["results"].values()),
                saved.get("instance_rule", OLD_RULE))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
