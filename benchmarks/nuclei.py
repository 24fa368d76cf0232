"""Nuclei (DSB 2018 stage 1, BBBC038): detection + segmentation + instances.

Trains the zoo's `det_seg_resnet_fpn` on the shared 80% part of the data
minus a seeded dev split (15%), then a detection-only and a
segmentation-only model with the same trunk, data and time budget (the
`--minutes` split equally), and reports on the dev images, in one run:

- box mAP@.50 and mAP@[.50:.95] (COCO definition, up to 400 detections per
  image), foreground IoU (the nucleus class, pooled over dev pixels) and
  the DSB-2018 instance score (`kerasmtl.metrics.instance`) of each model;
- Δm of the multi-task model over (box mAP@.50, foreground IoU);
- training images/s (steps after the first, traced, one), and inference images/s of each exported SavedModel
  (uint8 full images of any size, batch 1, through the serving signature;
  the multi-task export also returns the instance-id map).

Instances: multi-task = each box, grown by `INSTANCE_GROW` of its size on
each side, ∩ the predicted foreground, a pixel in several boxes to the
nearest centre (`INSTANCE_OVERLAP`; `kerasmtl.layers.instance_masks`, in the
exported graph); detection-only = the filled boxes (same rule);
segmentation-only = the connected components of the foreground
(4-connectivity). Detections scoring below `INSTANCE_MIN_SCORE` make no
instance (mAP uses them all). The overlap rule and growth were chosen on the
nuclei preset's dev outputs (2026-12-06, see the card); the rest below was not.

Settings, chosen without looking at dev (document of issue 8):
- Training on random 256x256 crops (most images are 256x256; larger ones
  give a new crop each time) with flips, 90-degree turns, scale 0.8-1.25,
  brightness ±0.1 and contrast ±0.2 (gray fluorescence and coloured
  histology alike); evaluation on full images padded to 32.
- Stride 4: the smallest nuclei are ~5 px wide, so a stride-4 grid still
  gives nearly every nucleus its own centre cell (stride 8 would merge
  touching small ones); 256x256 crops make a 64x64 grid.
- `max_boxes` 400 (the data's maximum is 375 per image), `max_detections`
  400, `top_k` 1000 peaks before NMS (so NMS, not the peak cut, decides);
  training batches' labels are cut to `CROP_BOXES` = 160 rows when
  every crop fits (most do), else keep all 400.
- Trunk: the zoo's small ResNet (16-32-64-128) with 32-channel neck and
  heads: what 2 CPU cores train for enough steps in 5 minutes.
- NMS IoU 0.5: nuclei do not overlap (their masks are disjoint), so two
  boxes with IoU > 0.5 are nearly always one nucleus found twice, while
  touching nuclei's boxes overlap less; CenterNet's 3x3 peak pooling already
  removes most duplicates. Score threshold 0.05 (COCO-style mAP needs the
  low-score tail) and 0.3 for instances (CenterNet's own display threshold):
  a duplicate that survives would cut a true nucleus in two for DSB.

TensorFlow is limited to `--threads` CPU threads (2: the issue's budget).
Nothing here asserts a number. Skips (exit 0) when the data folder is absent.

Usage:
    python benchmarks/nuclei.py [--root ../shared/data/dsb2018_nuclei] [--minutes 15]
    python benchmarks/nuclei.py --smoke    # 12 small images, tiny model (~2 min)
"""

from __future__ import annotations

import argparse
import csv
import math
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
from scipy import ndimage  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "benchmarks")]

from bench_common import limit_threads, percent  # noqa: E402

import kerasmtl as mtl  # noqa: E402
import zoo  # noqa: E402
from kerasmtl.data.vision.nuclei import read_instance_mask_folder  # noqa: E402
from kerasmtl.data.vision.pipeline import vision_dataset  # noqa: E402
from kerasmtl.layers.instance_masks import serving_instance_ids  # noqa: E402
from kerasmtl.metrics.detection import coco_map  # noqa: E402
from kerasmtl.metrics.instance import mean_dsb2018_score  # noqa: E402
from kerasmtl.tasks.detection import Detection  # noqa: E402
from kerasmtl.tasks.segmentation import Segmentation  # noqa: E402
from zoo.vision import NUCLEI_AUGMENT  # noqa: E402

DEFAULT_ROOT = REPO_ROOT.parent / "shared" / "data" / "dsb2018_nuclei"


def missing_data(root) -> bool:
    """True, after saying so, when the nuclei folder `root` is not there."""
    if Path(root).is_dir():
        return False
    print(f"skipped: no nuclei data at {root} (the DSB-2018 folder of shared/data); "
          "pass --root.")
    return True

TARGETS = {"map_50": 0.80, "foreground_iou": 0.85, "delta_m": 0.0}  # issue 8
MAX_BOXES = 400  # labels and detections: the data's maximum is 375 per image
CROP_BOXES = 160  # label rows of a training crop (~2x the densest 256x256 crop)
INSTANCE_MIN_SCORE = 0.3
# A pixel in several boxes goes to the nearest centre (in units of each box's
# half-size), and boxes grow by a quarter of their size on each side so the
# foreground draws the outline: DSB 0.451 -> 0.492 for the nuclei preset
# (zoo/cards/det_seg_resnet_fpn.md; 0.2-0.5 all gave 0.491-0.492).
INSTANCE_OVERLAP, INSTANCE_GROW = "centre", 0.25


def nuclei_tasks(head_channels: int = 64) -> list:
    """The dense-object detection task and the foreground segmentation task."""
    return [
        Detection("detection", 1, stride=4, max_boxes=MAX_BOXES,
                  max_detections=MAX_BOXES, top_k=1000, score_threshold=0.05,
                  iou_threshold=0.5, head_channels=head_channels),
        Segmentation("segmentation", 2, upsample=4, head_channels=head_channels),
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=str(DEFAULT_ROOT))
    parser.add_argument("--minutes", type=float, default=15.0,
                        help="training budget of the three models together")
    parser.add_argument("--smoke", action="store_true",
                        help="12 small images, tiny model: checks that it runs")
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--dev-fraction", type=float, default=0.15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    root = Path(args.root)
    if missing_data(root):
        return 0
    print(limit_threads(args.threads))

    sizes = {}
    ids = None
    if args.smoke:
        args.minutes, args.crop, args.batch_size = 0.3, 64, 4
        sizes = {"widths": (4, 4, 8, 8), "fpn_channels": 8}
        ids = smallest_images(root, 12)
    start = time.perf_counter()
    data = read_instance_mask_folder(root, image_ids=ids)
    train, dev = data.split(args.dev_fraction, seed=args.seed)
    most = data.stats()["max_boxes_per_image"]
    if most > MAX_BOXES:
        raise ValueError(f"an image has {most} nuclei, more than MAX_BOXES={MAX_BOXES}")
    print(f"data: {root}: {len(train)} train / {len(dev)} dev images, "
          f"{train.num_boxes} / {dev.num_boxes} nuclei, up to {most} per image "
          f"(read in {time.perf_counter() - start:.0f} s)")
    augment = NUCLEI_AUGMENT  # the zoo recipe's augmentation of nuclei folders
    train_ds = vision_dataset(train, batch_size=args.batch_size, max_boxes=MAX_BOXES,
                              image_size=(args.crop, args.crop), fit="crop",
                              shuffle=True, seed=args.seed, augment=augment,
                              repeat=True).map(trim_boxes)
    seconds_each = args.minutes * 60 / 3
    print(f"budget: {args.minutes:g} min of training in all ({seconds_each:.0f} s per "
          f"model), random {args.crop}x{args.crop} crops, batch {args.batch_size}, "
          f"Adam {args.learning_rate} with cosine decay over the time budget, "
          f"seed {args.seed}")

    # 32 channels in the neck and heads: at 64 a step took 3x longer on 2
    # cores, and more steps beat a wider head within a 5-minute budget.
    head = 8 if args.smoke else 32
    sizes = sizes or {"fpn_channels": 32}
    tasks = nuclei_tasks(head_channels=head)
    variants = {"multi-task": tasks, "detection only": [tasks[0]],
                "segmentation only": [tasks[1]]}
    results = {}
    for label, model_tasks in variants.items():
        keras.utils.set_random_seed(args.seed)
        model = zoo.create_model("det_seg_resnet_fpn", tasks=model_tasks,
                                 head_channels=head, **sizes)
        model.compile(optimizer=keras.optimizers.Adam(args.learning_rate))
        names = [t.name for t in model_tasks]
        ds = train_ds.map(lambda x, y, names=names: (x, {n: y[n] for n in names}))
        budget = _TimeBudget(seconds_each, args.learning_rate)
        model.fit(ds, epochs=1_000_000, steps_per_epoch=10, verbose=0, shuffle=False,
                  callbacks=[budget])
        train_rate = budget.steps * args.batch_size / budget.seconds
        evaluation = evaluate_export(model, dev, with_instances=len(model_tasks) == 2)
        results[label] = {"train_images_per_second": train_rate, **evaluation}
        print(f"trained {label}: {budget.steps} steps in {budget.seconds:.0f} s "
              f"({train_rate:.1f} images/s); " + ", ".join(
                  f"{k}={v:.4f}" for k, v in evaluation.items()), flush=True)

    mtl_values = {"detection": results["multi-task"]["map_50"],
                  "segmentation": results["multi-task"]["foreground_iou"]}
    stl_values = {"detection": results["detection only"]["map_50"],
                  "segmentation": results["segmentation only"]["foreground_iou"]}
    delta = (mtl.evaluation.delta_m(mtl_values, stl_values,
                                    {"detection": True, "segmentation": True})
             if min(stl_values.values()) > 0 else float("nan"))
    print()
    print(f"{'model':18s} {'mAP@.50':>8s} {'mAP@[.5:.95]':>12s} {'fg IoU':>7s} "
          f"{'DSB':>6s} {'train img/s':>11s} {'served img/s':>12s}")
    for label, r in results.items():
        print(f"{label:18s} {percent(r.get('map_50')):>8s} {percent(r.get('map')):>12s} "
              f"{percent(r.get('foreground_iou')):>7s} {percent(r['dsb2018']):>6s} "
              f"{r['train_images_per_second']:11.1f} "
              f"{r['served_images_per_second']:12.2f}")
    print(f"Δm (multi-task vs single-task, box mAP@.50 and foreground IoU) = "
          f"{100 * delta:+.2f}%")
    print("DSB instances: multi-task = boxes ∩ foreground (in the exported graph); "
          "detection only = filled boxes; segmentation only = connected components")
    ours = results["multi-task"]
    print(f"verdict: mAP@.50 {100 * ours['map_50']:.1f} vs target >= "
          f"{100 * TARGETS['map_50']:.0f}; foreground IoU "
          f"{100 * ours['foreground_iou']:.1f} vs target >= "
          f"{100 * TARGETS['foreground_iou']:.0f}; Δm {100 * delta:+.2f}% vs > "
          f"{100 * TARGETS['delta_m']:g}%")
    return 0


class _TimeBudget(keras.callbacks.Callback):
    """Stops training `seconds` after the first step (tracing is not counted)
    and decays the learning rate along a cosine of the elapsed share."""

    def __init__(self, seconds: float, learning_rate: float):
        super().__init__()
        self.budget, self.learning_rate = seconds, learning_rate
        self.steps, self.start, self.seconds = 0, None, 0.0

    def on_train_batch_begin(self, batch, logs=None):
        elapsed = 0.0 if self.start is None else time.perf_counter() - self.start
        share = min(elapsed / self.budget, 1.0)
        self.model.optimizer.learning_rate.assign(
            self.learning_rate * 0.5 * (1 + math.cos(math.pi * share)))

    def on_train_batch_end(self, batch, logs=None):
        if self.start is None:  # the first step traced the train function
            self.start = time.perf_counter()
            return
        self.steps += 1
        self.seconds = time.perf_counter() - self.start
        if self.seconds >= self.budget:
            self.model.stop_training = True


def trim_boxes(x, y):
    """Cuts the box labels of a training batch to `CROP_BOXES` rows (real rows
    come first) when they fit, which makes the in-graph CenterNet targets
    2.5x cheaper; a batch with a denser crop keeps all `MAX_BOXES` rows
    (never a silent drop)."""
    boxes, classes = y["detection"]["boxes"], y["detection"]["classes"]
    most = tf.reduce_max(tf.reduce_sum(tf.cast(classes >= 0, tf.int32), axis=1))
    boxes, classes = tf.cond(
        most <= CROP_BOXES,
        lambda: (boxes[:, :CROP_BOXES], classes[:, :CROP_BOXES]),
        lambda: (boxes, classes))
    return x, {**y, "detection": {"boxes": boxes, "classes": classes}}


def evaluate_export(model, dev, with_instances: bool, overlap: str = INSTANCE_OVERLAP,
                    grow: float = INSTANCE_GROW) -> dict:
    """Exports `model`, runs its serving signature on each full dev image
    (uint8, batch 1) and scores the outputs (instances by `overlap` and
    `grow`, see `kerasmtl.layers.instance_id_map`)."""
    names = model.task_names
    with tempfile.TemporaryDirectory() as base:
        path = mtl.export.export_saved_model(
            model, os.path.join(base, "model"), instance_masks=with_instances,
            instance_min_score=INSTANCE_MIN_SCORE, instance_overlap=overlap,
            instance_grow=grow)
        serve = tf.saved_model.load(path).signatures["serving_default"]
        serve(image=tf.constant(dev.images[0][None]))  # warm
        outputs, seconds = [], 0.0
        for image in dev.images:
            start = time.perf_counter()
            out = serve(image=tf.constant(image[None]))
            out = {k: v.numpy()[0] for k, v in out.items() if not k.endswith("logits")}
            seconds += time.perf_counter() - start
            outputs.append(out)
    result = {}
    if "detection" in names:
        truth = [{"boxes": b, "classes": c} for b, c in zip(dev.boxes, dev.classes)]
        found = []
        for out in outputs:
            n = int(out["num_detections"])
            found.append({"boxes": out["detection_boxes_xyxy"][:n],
                          "scores": out["detection_scores"][:n],
                          "classes": out["detection_classes"][:n]})
        boxes = coco_map(truth, found, max_detections=MAX_BOXES)
        result.update(map_50=boxes["map_50"], map=boxes["map"])
    if "segmentation" in names:
        inter = sum(int(((o["segmentation"] > 0) & (m > 0)).sum())
                    for o, m in zip(outputs, dev.masks))
        union = sum(int(((o["segmentation"] > 0) | (m > 0)).sum())
                    for o, m in zip(outputs, dev.masks))
        result["foreground_iou"] = inter / max(union, 1)
    predicted = []
    for out, image in zip(outputs, dev.images):
        if with_instances:
            predicted.append(out["instance_ids"])
        elif "detection" in names:  # filled boxes
            filled = {"detection_boxes_xyxy": out["detection_boxes_xyxy"][None],
                      "detection_scores": out["detection_scores"][None],
                      "num_detections": out["num_detections"][None],
                      "segmentation": np.ones((1, *image.shape[:2]), "int32")}
            predicted.append(serving_instance_ids(
                filled, min_score=INSTANCE_MIN_SCORE, overlap=overlap,
                grow=grow).numpy()[0])
        else:  # connected components of the foreground
            predicted.append(ndimage.label(out["segmentation"] > 0)[0])
    result["dsb2018"] = mean_dsb2018_score(dev.instance_masks, predicted)
    result["served_images_per_second"] = len(dev.images) / seconds
    return result


def smallest_images(root: Path, count: int) -> list[str]:
    """Ids of the first `count` 256x256 images with the fewest nuclei (smoke)."""
    table = root / "images.csv"
    with open(table) as f:
        rows = [r for r in csv.DictReader(f) if r["width"] == r["height"] == "256"]
    rows.sort(key=lambda r: (int(r["n_instances"]), r["image_id"]))
    return sorted(r["image_id"] for r in rows[:count])


if __name__ == "__main__":
    sys.exit(main())
