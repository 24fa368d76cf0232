"""Joint object detection + semantic segmentation on one image trunk.

- `det_seg_resnet_fpn`: image (0..255, any size divisible by 32) -> a small
  ResNet -> FPN-lite neck -> one stride-4 feature map read by a CenterNet-style
  `Detection` head (class heat maps, box sizes, centre offsets; in-graph
  NMS) and a `Segmentation` head (per-pixel logits at input resolution).

`kerasmtl.layers.image_trunk(backbone="mobilenet_v2")` builds the same trunk on
`keras.applications.MobileNetV2`; it is not registered here: its 150-odd layers
make tracing (and the zoo test) about twice as slow as the small ResNet, and
it has not been measured on the shapes.

Recipes (`kerasmtl train NAME --data SPEC`): `shapes` (synthetic coloured
shapes, `kerasmtl.data.synthetic_shapes`), a COCO-format folder, or a
DSB-2018-style nuclei folder (one folder per image holding `images/` and
`masks/`). `vision_metrics` scores COCO mAP and mIoU (each task's
`dataset_evaluator`) in one eager pass; `vision_report` adds them to `task_report`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import keras

import kerasmtl as mtl
from kerasmtl.data.vision.augment import VisionAugment
from kerasmtl.data.vision.coco import is_coco_folder, read_coco_folder
from kerasmtl.data.vision.nuclei import (
    is_instance_mask_folder,
    read_instance_mask_folder,
)
from kerasmtl.data.vision.pipeline import vision_dataset
from kerasmtl.data.vision.synthetic import synthetic_shapes
from kerasmtl.layers.backbones import image_trunk, stride2_decoder
from zoo.registry import register_model
from zoo.training_settings import TrainingData, cosine_adam

DETECTION, SEGMENTATION = "detection", "segmentation"
SHAPES_IMAGE_SIZE = (64, 64)  # the tuned size: shapes stay visible, CPU is quick
SHAPES_TRAIN, SHAPES_DEV = 2000, 400  # images of the `shapes` recipe
# Training augmentation of nuclei folders (benchmarks/nuclei.py uses it too).
NUCLEI_AUGMENT = VisionAugment(flip_horizontal=True, flip_vertical=True, rotate90=True,
                               scale=(0.8, 1.25), brightness=0.1, contrast=0.2)


# -- tasks ---------------------------------------------------------------------


def det_seg_tasks(
    num_classes: int = 3,
    seg_classes: int | None = None,
    *,
    max_boxes: int = 16,
    max_detections: int = 16,
    score_threshold: float = 0.05,
    head_channels: int = 64,
    ignore_class: int | None = None,
    top_k: int | None = None,
    seg_stride: int = 4,
) -> list[mtl.tasks.Task]:
    """The zoo's two tasks: `Detection("detection")` and
    `Segmentation("segmentation")` (`seg_classes` defaults to
    `num_classes + 1`: background, then one class per detection class).
    `top_k`, the heat-map peaks kept before NMS, defaults to
    `max(100, 2 * max_detections)` so that NMS, not the peak cut, decides.
    `seg_stride` (4 or 2) is the stride of the map the segmentation head
    reads, which it upsamples by as much."""
    _check_seg_stride(seg_stride)
    seg_classes = num_classes + 1 if seg_classes is None else seg_classes
    top_k = max(100, 2 * max_detections) if top_k is None else top_k
    return [
        mtl.tasks.Detection(DETECTION, num_classes, stride=4, max_boxes=max_boxes,
                            max_detections=max_detections,
                            score_threshold=score_threshold,
                            head_channels=head_channels, top_k=top_k),
        mtl.tasks.Segmentation(SEGMENTATION, seg_classes, ignore_class, upsample=seg_stride,
                               head_channels=head_channels),
    ]


def _check_seg_stride(seg_stride) -> None:
    if seg_stride not in (2, 4) or isinstance(seg_stride, bool):
        raise ValueError(
            "Invalid value for argument `seg_stride`. Expected 4 (the segmentation "
            "head reads the trunk's stride-4 map) or 2 (a U-Net-style decoder step to "
            f"stride 2). Received: seg_stride={seg_stride!r}"
        )


# -- data ----------------------------------------------------------------------


def _example():
    data = synthetic_shapes(2, image_size=SHAPES_IMAGE_SIZE, seed=1)
    x, y = next(iter(vision_dataset(data, batch_size=2, max_boxes=16)))
    return {"image": x["image"].numpy()}, {
        DETECTION: {k: v.numpy() for k, v in y[DETECTION].items()},
        SEGMENTATION: y[SEGMENTATION].numpy()}


def vision_data(spec: str, *, batch_size: int = 16, seed: int = 0,
                image_size: tuple[int, int] | None = None,
                dev_fraction: float = 0.2, num_images: int | None = None,
                augment: bool | None = None, seg_stride: int | None = None) -> TrainingData:
    """The training recipe: `spec` is `"shapes"`, a COCO-format folder or a
    DSB-2018-style nuclei folder; returns `zoo.training_settings.TrainingData`.

    Args:
        spec: str. `"shapes"`: `SHAPES_TRAIN` + `SHAPES_DEV` synthetic
            images of `SHAPES_IMAGE_SIZE`. A folder `kerasmtl.data.vision.coco`
            recognises (annotations.json + images/, or annotations/
            instances_<split>.json). A folder of `<id>/images/<id>.png` +
            `<id>/masks/*.png` (Kaggle DSB 2018 stage 1).
        batch_size: int. Defaults to `16`.
        seed: int. Seeds the dev split, the shuffle and the random crops.
            Defaults to `0`.
        image_size: `(height, width)` or None: the training crop (folders
            only; multiples of 32). Defaults to `None`: 64x64 for shapes,
            256x256 for folders.
        dev_fraction: float. Share of a folder's images held out for dev.
            Defaults to `0.2`.
        num_images: int or None. Synthetic images in all (`"shapes"` only).
            Defaults to `None`: `SHAPES_TRAIN + SHAPES_DEV`.
        augment: bool or None. Augment the training images with
            `NUCLEI_AUGMENT` (flips, 90-degree turns, scale, brightness,
            contrast: microscopy has no up or left). Defaults to `None`: on
            for nuclei folders, off for shapes and COCO folders. Nuclei
            folders also give the model `standardize=True` (each image to
            zero mean and unit variance: the stains differ widely) and
            `test_time_flips=4` (`predict` and the export average over the
            image's flips).
        seg_stride: int or None. 4 or 2: the stride of the map the
            segmentation head reads (`det_seg_tasks`, `det_seg_resnet_fpn`).
            Defaults to `None`: 2 for nuclei folders (nuclei are a few pixels
            wide; the stride-2 decoder measured better on every dev figure,
            see the model card), 4 for shapes and COCO folders.

    Returns:
        `TrainingData` whose `train` and `dev` are `tf.data.Dataset`s.
    """
    if seg_stride is not None:
        _check_seg_stride(seg_stride)  # before reading a folder
    if spec == "shapes":
        size = tuple(image_size or SHAPES_IMAGE_SIZE)
        total = num_images or SHAPES_TRAIN + SHAPES_DEV
        data = synthetic_shapes(total, image_size=size, seed=seed)
        source = f"synthetic shapes {size[0]}x{size[1]}"
        fit = "crop"
        model_kwargs = {}
    elif Path(spec).is_dir() and is_coco_folder(spec):
        data = read_coco_folder(spec)
        size, source, fit = tuple(image_size or (256, 256)), f"COCO folder {spec}", "resize"
        model_kwargs = {}
    elif Path(spec).is_dir() and is_instance_mask_folder(spec):
        data = read_instance_mask_folder(spec)
        size, source, fit = tuple(image_size or (256, 256)), f"nuclei folder {spec}", "crop"
        # Nuclei have no up or left: predict and the export average 4 flips.
        model_kwargs = {"standardize": True, "test_time_flips": 4}
        augment = True if augment is None else augment
        seg_stride = 2 if seg_stride is None else seg_stride
    else:
        raise ValueError(
            f"--data '{spec}' is not a vision data set the det_seg models read. Pass "
            "'shapes' (synthetic), a COCO folder (annotations.json + images/, or "
            "annotations/instances_<split>.json + the images), or a DSB-2018 nuclei "
            "folder (<id>/images/<id>.png and <id>/masks/*.png per image)."
        )
    seg_stride = 4 if seg_stride is None else seg_stride
    train, dev = data.split(dev_fraction, seed=seed)
    max_boxes = max(16, 8 * math.ceil(data.stats()["max_boxes_per_image"] / 8))
    common = {"batch_size": batch_size, "max_boxes": max_boxes, "image_size": size,
              "fit": fit}
    train_ds = vision_dataset(train, shuffle=True, seed=seed,
                              augment=NUCLEI_AUGMENT if augment else None, **common)
    dev_ds = vision_dataset(dev, **common)
    kwargs = {"num_classes": data.num_classes, "seg_classes": data.num_mask_classes,
              "max_boxes": max_boxes, "max_detections": max_boxes}
    if seg_stride != 4:
        kwargs["seg_stride"] = seg_stride
    summary = (f"{source}: {len(train)} train / {len(dev)} dev images (dev: random "
               f"{dev_fraction:g} of the images, seed {seed}; {size[0]}x{size[1]}), "
               f"classes {data.class_names}, up to {max_boxes} boxes"
               + ("; augmented: flips, 90-degree turns, scale 0.8-1.25, brightness, "
                  "contrast" if augment else ""))
    return TrainingData(train_ds, dev_ds, det_seg_tasks(**kwargs), {**kwargs, **model_kwargs},
                        summary)


# -- evaluation ----------------------------------------------------------------


def vision_metrics(model: mtl.MultiTaskModel, dataset) -> dict[str, dict[str, float]]:
    """COCO mAP of each `Detection` task and mIoU of each `Segmentation` task,
    from one eager pass over `dataset`: `mtl.evaluation.dataset_metrics`.

    Args:
        model: a `MultiTaskModel` (compiled or not).
        dataset: `tf.data.Dataset` of `(x, {task: labels})` batches.

    Returns:
        `{task: {metric: value}}`: detection tasks get `"map"`
        (mAP@[.50:.95]), `"map_50"` and `"map_75"`; segmentation tasks get
        `"mean_iou"` (classes absent from labels and predictions left out)
        and `"pixel_accuracy"`, over known pixels.
    """
    return mtl.evaluation.dataset_metrics(model, dataset)


def vision_report(model: mtl.MultiTaskModel, dataset) -> dict[str, dict[str, float]]:
    """`mtl.evaluation.task_report` (losses and training metrics of a compiled
    model) updated with `vision_metrics` (COCO mAP, mIoU)."""
    names = model.task_names
    dataset = dataset.map(lambda x, y: (x, {n: y[n] for n in names}))
    report = mtl.evaluation.task_report(model, dataset)
    for name, values in vision_metrics(model, dataset).items():
        report[name].update(values)
    return report


# -- models --------------------------------------------------------------------


# Training defaults of `kerasmtl train det_seg_resnet_fpn` (and the nuclei
# preset): far more steps than the 5-epoch quick run the card measured first.
# Adam 1e-3 on a cosine to 5%: the card's runs show losses still falling at a
# constant rate, so the last steps settle rather than stop mid-descent.
VISION_RECIPE = {
    "epochs": 30, "batch_size": 16, "optimizer": cosine_adam(1e-3, alpha=0.05),
    # DB-MTL (log-loss scaling + gradients rescaled to the largest task's
    # norm): the one method ahead of the single-task models in the nuclei Δm
    # table (benchmarks/README.md), and at this recipe's full budget on the
    # nuclei dev images, through the export: box mAP@.50 0.763 -> 0.787,
    # foreground IoU 0.859 -> 0.867, DSB-2018 score 0.492 -> 0.509 (one seed
    # each, against Equal).
    "weighting": "dbmtl",
    # Instance masks (chosen on the nuclei dev images, benchmarks/nuclei.py):
    # detections from score 0.3, a pixel in several boxes to the nearest
    # centre, boxes grown by a quarter of their size on each side (DSB-2018
    # score 0.451 with the score rule -> 0.492).
    "export": {"instance_min_score": 0.3, "instance_overlap": "centre",
               "instance_grow": 0.25},
}


@register_model(example_data=_example, data=vision_data, evaluate=vision_metrics,
                recipe=VISION_RECIPE)
def det_seg_resnet_fpn(
    num_classes: int = 3,
    seg_classes: int | None = None,
    *,
    image_size: tuple[int, int] | None = None,
    widths: Sequence[int] = (32, 64, 128, 256),
    blocks: Sequence[int] = (1, 1, 1, 1),
    fpn_channels: int = 64,
    head_channels: int = 64,
    max_boxes: int = 16,
    max_detections: int = 16,
    score_threshold: float = 0.05,
    ignore_class: int | None = None,
    standardize: bool = False,
    seg_stride: int = 4,
    test_time_flips: int = 1,
    weighting: mtl.weighting.LossWeighting | None = None,
    tasks: Sequence[mtl.tasks.Task] | None = None,
) -> mtl.MultiTaskModel:
    """Detection + segmentation on a small ResNet + FPN-lite trunk (input `"image"`).

    Input: `{"image": [B, H, W, 3]}`, uint8 or float 0..255, H and W
    multiples of 32 (the model rescales; the SavedModel export takes uint8
    images of any size and pads them). Outputs: `"detection"` `[B, H/4, W/4,
    num_classes + 4]` (CenterNet heat-map logits, box size, centre offset)
    and `"segmentation"` `[B, H, W, seg_classes]` logits. `postprocess`
    gives `detection_boxes` (the TF Object Detection API's normalised
    `[ymin, xmin, ymax, xmax]`), `detection_boxes_xyxy` (pixels), `detection_scores`,
    `detection_classes`, `num_detections` and the `segmentation` class map.

    Args:
        num_classes: int. Detection classes. Defaults to `3` (the synthetic
            shapes: square, disk, triangle).
        seg_classes: int or None. Segmentation classes, background included.
            Defaults to `None`: `num_classes + 1`.
        image_size: `(height, width)` or None. A fixed input size, or None for
            any size divisible by 32. Defaults to `None`.
        widths: 4 ints. ResNet stage widths (strides 4, 8, 16, 32). Defaults
            to `(32, 64, 128, 256)`: on 64x64 shapes, after 252 steps, it
            reached mAP@.50 0.30 and mIoU 0.35 where `(16, 32, 64, 128)`
            reached 0.25 and 0.26, for about 15% more step time.
        blocks: 4 ints. Residual blocks per stage. Defaults to `(1, 1, 1, 1)`.
        fpn_channels: int. Channels of the neck's stride-4 map. Defaults to `64`.
        head_channels: int. Channels of each head's 3x3 convolution. Defaults
            to `64`.
        max_boxes: int. Rows of the box labels. Defaults to `16`.
        max_detections: int. Boxes kept after NMS. Defaults to `16`.
        score_threshold: float. Detections scoring less are dropped. Defaults
            to `0.05`.
        ignore_class: int or None. A mask value to ignore besides -1 (e.g. 255
            for VOC). Defaults to `None`.
        standardize: bool. Standardize each image (zero mean, unit variance)
            in the trunk (`ImageRescaling(standardize=True)`). Defaults to
            `False`; the nuclei recipe turns it on.
        seg_stride: int. 4: the segmentation head reads the trunk's stride-4
            map and upsamples it by 4. 2: it reads a U-Net-style decoder step
            (`kerasmtl.layers.stride2_decoder`: the stride-4 map upsampled and
            fused with the backbone's stride-2 activation) and upsamples by 2.
            Must match the segmentation task's `upsample` when `tasks` are
            given. Defaults to `4`.
        test_time_flips: int. 1, 2 or 4: `predict` and the exported
            SavedModel average both heads' outputs over this many flips of the
            image
            (`kerasmtl.flip_averaging`; 4 = also upside down, for images without
            an up such as microscopy). Defaults to `1`; the nuclei recipe
            uses 4.
        weighting: loss weighting. Defaults to `Equal()`.
        tasks: the tasks, or None for both (`det_seg_tasks(...)`). Pass one of
            them for a single-task baseline with the same trunk.

    Examples:

    >>> from zoo import create_model
    >>> model = create_model("det_seg_resnet_fpn", widths=(4, 4, 4, 4),
    ...                      fpn_channels=4, head_channels=4)
    >>> model.task_names
    ['detection', 'segmentation']
    """
    if tasks is None:
        tasks = det_seg_tasks(num_classes, seg_classes, max_boxes=max_boxes,
                              max_detections=max_detections,
                              score_threshold=score_threshold,
                              head_channels=head_channels, ignore_class=ignore_class,
                              seg_stride=seg_stride)
    _check_seg_stride(seg_stride)
    tasks = list(tasks)
    for task in tasks:
        if task.name == SEGMENTATION and getattr(task, "upsample", seg_stride) != seg_stride:
            raise ValueError(
                f"Task '{task.name}' upsamples by {task.upsample} but the model is built "
                f"with seg_stride={seg_stride}: its output would not have the image's "
                f"size. Pass det_seg_tasks(..., seg_stride={seg_stride}) or "
                f"seg_stride={task.upsample}.")
    fine = seg_stride == 2 and SEGMENTATION in [t.name for t in tasks]
    shape = (None, None, 3) if image_size is None else (*map(int, image_size), 3)
    image = keras.Input(shape, name="image")
    features = image_trunk(image, widths=tuple(widths), blocks=tuple(blocks),
                           fpn_channels=fpn_channels, standardize=standardize,
                           return_stride2=fine)
    trunk_outputs = None  # hard_sharing's default: the one shared tensor
    if fine:
        features, skip = features
        # What a rep-grad balancer differentiates against: both trunk outputs
        # (the stride-2 decoder is the segmentation task's own layers).
        trunk_outputs = [features, skip]
        decoded = stride2_decoder(features, skip, channels=max(fpn_channels // 2, 1))
        features = {t.name: decoded if t.name == SEGMENTATION else features for t in tasks}
    # A dict input: the vision pipelines yield `{"image": ...}`, and the
    # export's signature input is named by the key.
    return mtl.sharing.hard_sharing({"image": image}, features, tasks,
                                    weighting=weighting, name="det_seg_resnet_fpn",
                                    test_time_flips=test_time_flips,
                                    shared_features=trunk_outputs)
