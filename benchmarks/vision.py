"""Joint detection + segmentation on synthetic shapes: multi-task vs single-task.

Trains the zoo's `det_seg_resnet_fpn` (small ResNet + FPN-lite trunk, a
CenterNet detection head and a segmentation head on one stride-4 map) on
`kerasmtl.data.synthetic_shapes` (circles, squares, triangles on textured
backgrounds, 64x64, fixed seed), then a detection-only and a
segmentation-only model with the same trunk, data, optimizer and epochs,
and reports on the held-out images, in one run:

- mAP@.50 and mAP@[.50:.95] (COCO definition, `kerasmtl.metrics.detection`)
  and mIoU (background included) of each model, and Δm of the multi-task
  model against the single-task ones (on mAP@[.50:.95] and mIoU);
- training throughput (images per second over the whole fit, input
  pipeline included) per model;
- inference throughput of the exported multi-task SavedModel (uint8 images,
  called through its serving signature, batch 32);
- the step time of the multi-task model divided by the sum of the two
  single-task step times (medians of the compiled train step on one fixed
  batch, in shuffled rounds, as `sharing_cost.py`).

TensorFlow is limited to `--threads` CPU threads (2: the issue's budget).
Nothing here asserts a wall-clock number.

Usage:
    python benchmarks/vision.py            # full run (17 minutes on 2 shared cores, load 4-5)
    python benchmarks/vision.py --smoke    # tiny data and model, seconds: checks that it runs
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "benchmarks")]

from bench_common import (  # noqa: E402
    limit_threads,
    load_average,
    median_step_seconds,
    percent,
)

import kerasmtl as mtl  # noqa: E402
import zoo  # noqa: E402
from zoo.vision import vision_data, vision_metrics  # noqa: E402

TARGETS = {"map_50": 0.90, "mean_iou": 0.85}  # issue 4, on synthetic shapes
WEIGHTINGS = {"equal": mtl.weighting.Equal, "uncertainty": mtl.weighting.Uncertainty}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", "--quick", action="store_true", dest="smoke",
                        help="tiny data and model, one epoch: checks that it runs")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--images", type=int, default=2400,
                        help="synthetic images in all; 1/6 held out (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--weighting", default="equal", choices=sorted(WEIGHTINGS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(limit_threads(args.threads))

    sizes = {}
    if args.smoke:
        args.images, args.epochs, args.batch_size = 48, 1, 8
        sizes = {"widths": (4, 4, 8, 8), "fpn_channels": 8, "head_channels": 8}
    data = vision_data("shapes", batch_size=args.batch_size, seed=args.seed,
                       num_images=args.images, dev_fraction=1 / 6)
    kwargs = {**data.model_kwargs, **sizes}
    train_images = sum(int(x["image"].shape[0]) for x, _ in data.train)
    print(f"data: {data.summary}")
    print(f"budget: {args.epochs} epochs, batch {args.batch_size}, Adam "
          f"{args.learning_rate} (cosine decay), seed {args.seed}, weighting "
          f"{args.weighting} (multi-task model)")

    tasks = data.tasks
    variants = {"multi-task": tasks, "detection only": [tasks[0]],
                "segmentation only": [tasks[1]]}
    steps = args.epochs * len(data.train)
    results, models = {}, {}
    for label, model_tasks in variants.items():
        keras.utils.set_random_seed(args.seed)
        weighting = WEIGHTINGS[args.weighting]() if len(model_tasks) > 1 else None
        model = zoo.create_model("det_seg_resnet_fpn", tasks=model_tasks,
                                 weighting=weighting, **kwargs)
        schedule = keras.optimizers.schedules.CosineDecay(args.learning_rate, steps)
        model.compile(optimizer=keras.optimizers.Adam(schedule))
        names = [t.name for t in model_tasks]
        train = data.train.map(lambda x, y, names=names: (x, {n: y[n] for n in names}))
        start = time.perf_counter()
        model.fit(train, epochs=args.epochs, verbose=0)
        seconds = time.perf_counter() - start
        report = vision_metrics(model, data.dev)
        results[label] = {"report": report, "seconds": seconds,
                          "images_per_second": train_images * args.epochs / seconds}
        models[label] = model
        print(f"trained {label}: {seconds:.0f} s, "
              f"{results[label]['images_per_second']:.0f} images/s; " + ", ".join(
                  f"{k}={v:.4f}" for r in report.values() for k, v in r.items()
                  if k in ("map_50", "map", "mean_iou")), flush=True)

    mtl_report = results["multi-task"]["report"]
    mtl_values = {"detection": mtl_report["detection"]["map"],
                  "segmentation": mtl_report["segmentation"]["mean_iou"]}
    stl_values = {"detection": results["detection only"]["report"]["detection"]["map"],
                  "segmentation": results["segmentation only"]["report"]
                  ["segmentation"]["mean_iou"]}
    delta = (mtl.evaluation.delta_m(mtl_values, stl_values,
                                    {"detection": True, "segmentation": True})
             if min(stl_values.values()) > 0 else float("nan"))
    x, y = next(iter(data.train))
    step = median_step_seconds(models, x, y, rounds=2 if args.smoke else 7,
                               seed=args.seed)
    served = _served_images_per_second(models["multi-task"], data.dev,
                                       seconds=1.0 if args.smoke else 10.0)

    print()
    print(f"{'model':18s} {'mAP@.50':>8s} {'mAP@[.5:.95]':>12s} {'mIoU':>7s} "
          f"{'train s':>8s} {'img/s':>6s} {'step ms':>8s}")
    for label in variants:
        report = results[label]["report"]
        print(f"{label:18s} {percent(report.get('detection', {}).get('map_50')):>8s} "
              f"{percent(report.get('detection', {}).get('map')):>12s} "
              f"{percent(report.get('segmentation', {}).get('mean_iou')):>7s} "
              f"{results[label]['seconds']:8.0f} "
              f"{results[label]['images_per_second']:6.0f} {1000 * step[label]:8.1f}")
    ratio = step["multi-task"] / (step["detection only"] + step["segmentation only"])
    print(f"Δm (multi-task vs single-task, mAP@[.5:.95] and mIoU) = {100 * delta:+.2f}%")
    print(f"step time ratio multi-task / (detection + segmentation single-task) = "
          f"{ratio:.2f}")
    print(f"exported multi-task SavedModel: {served:.0f} images/s (uint8 64x64, batch 32)")
    print(f"load average at end: {load_average()} (other jobs slow every time above)")
    print(f"verdict: mAP@.50 {100 * mtl_report['detection']['map_50']:.1f} vs target >= "
          f"{100 * TARGETS['map_50']:.0f}; mIoU "
          f"{100 * mtl_report['segmentation']['mean_iou']:.1f} vs target >= "
          f"{100 * TARGETS['mean_iou']:.0f}; Δm {100 * delta:+.2f}%")
    return 0


def _served_images_per_second(model, dataset, seconds: float) -> float:
    """Images/s through the exported signature, reloaded with plain TF."""
    with tempfile.TemporaryDirectory() as base:
        path = mtl.export.export_saved_model(model, base)
        signature = tf.saved_model.load(path).signatures["serving_default"]
        images = np.concatenate([x["image"].numpy() for x, _ in dataset])[:32]
        images = tf.constant(np.resize(images, (32, *images.shape[1:])).astype("uint8"))
        signature(image=images)  # warm
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            signature(image=images)
            count += int(images.shape[0])
        return count / (time.perf_counter() - start)


if __name__ == "__main__":
    sys.exit(main())
