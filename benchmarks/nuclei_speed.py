"""Where the nuclei model's training step goes: FLOPs and time, per part.

Builds the zoo's `det_seg_resnet_fpn` with its nuclei recipe
(`zoo.vision.vision_data` on the DSB-2018 folder: 256x256 crops, batch 16,
stride-2 segmentation) and, in one run:

- counts the forward FLOPs of one 256x256 image per part (TensorFlow's
  graph profiler on the frozen inference graph: backbone, FPN neck, stride-2
  decoder, detection head, segmentation head), for the recipe and for the
  stride-4 model the issue measured first (`seg_stride=4`, no decoder);
- times, in shuffled rounds on the same training batches, the parts of a
  step: the input pipeline alone (reading, augmentation, cropping,
  batching), the trunk's forward and backward pass, the whole network's
  forward and backward pass (a sum of its outputs as the loss), the
  CenterNet target encoding, the compiled train step (loss, targets,
  optimizer) of the recipe (DB-MTL in parameter mode: one backward pass per
  task through the whole network), of the same model with DB-MTL on the
  gradients w.r.t. the trunk's two outputs (`dbmtl:rep_grad=True`: one
  backward pass through the trunk), with Equal weighting (a plain Keras
  step), with Equal under XLA (`jit_compile=True`), of the stride-4 model
  with Equal (the configuration the issue measured first) and of the recipe
  with 32-channel heads (`head_channels=32`, the lever measured for quality
  in the card).

Times are medians over `--rounds` rounds of `--steps` calls each, in
milliseconds per batch, with TensorFlow's BFC pool for CPU tensors as
`kerasmtl train` runs (`benchmarks/cpu_allocator.py` compares the two); ratios are within one run. The load average is
printed: on 2 shared cores the absolute times move with it, the ratios less.
Nothing is asserted.

Usage:
    python benchmarks/nuclei_speed.py                  # ~10 min on 2 cores
    python benchmarks/nuclei_speed.py --quick          # synthetic shapes, tiny model
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# The CPU allocator `kerasmtl train` uses (kerasmtl.quiet_tensorflow); read
# when TensorFlow starts. `TF_CPU_ALLOCATOR_USE_BFC=false` times the default.
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "benchmarks")]

from bench_common import limit_threads, load_average  # noqa: E402
from nuclei import DEFAULT_ROOT, missing_data  # noqa: E402
from sharing_cost import measure  # noqa: E402

from kerasmtl import weighting_spec  # noqa: E402
from kerasmtl.layers.detection import centernet_targets  # noqa: E402
from zoo import registry, training  # noqa: E402
from zoo.vision import DETECTION, vision_data  # noqa: E402

NAME = "det_seg_resnet_fpn"
PIPELINE = "input pipeline alone (read, augment, crop, batch)"
RECIPE_STEP = "train step, recipe (seg_stride=2, DB-MTL in parameter mode)"
REP_GRAD_STEP = "train step, recipe with DB-MTL on the trunk outputs (rep_grad=True)"
EQUAL_STEP = "train step, recipe with Equal weighting"
FIRST_STEP = "train step, seg_stride=4 with Equal (first measured)"
# Layer-name prefixes of each part, in the order the table lists them.
PARTS = {
    "backbone": ("trunk_rescaling", "trunk_stem", "trunk_stage"),
    "FPN neck": ("trunk_fpn",),
    "stride-2 decoder": ("decoder",),
    "detection head": ("detection",),
    "segmentation head": ("segmentation",),
}


def part_of(op_name: str) -> str:
    for scope in op_name.split("/"):
        for part, prefixes in PARTS.items():
            if scope.startswith(prefixes):
                return part
    return "other"


def forward_flops(model, size: tuple[int, int]) -> dict[str, float]:
    """Forward FLOPs of one `size` image per part (graph profiler)."""
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    spec = {"image": tf.TensorSpec([1, *size, 3], tf.float32)}
    function = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    graph = convert_variables_to_constants_v2(function).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profile = tf.compat.v1.profiler.profile(graph=graph, options=options)
    flops = collections.Counter()

    def walk(node):
        for child in node.children:
            if not child.children:
                flops[part_of(child.name)] += child.float_ops
            walk(child)

    walk(profile)
    return dict(flops)


def build(model_kwargs: dict, steps_per_epoch: int, jit: bool = False, seed: int = 0,
          weighting: str | None = None):
    """The model with `weighting` (a `--weighting` spelling; None: the
    recipe's), compiled as the recipe compiles it."""
    keras.utils.set_random_seed(seed)
    settings = training.training_settings(NAME)
    factory = weighting_spec.weighting_factory(weighting or settings.weighting)
    model = registry.create_model(NAME, **model_kwargs, weighting=factory())
    # The steps per epoch only shape the learning-rate schedule, not a step's
    # cost.
    model.compile(optimizer=settings.make_optimizer(steps_per_epoch),
                  train_metrics=settings.train_metrics, jit_compile=jit)
    return model


def trunk_of(model):
    """The sub-model from the image to the shared stride-4 map."""
    return keras.Model(model.inputs, model.get_layer("trunk_fpn_smooth_relu").output)


def forward_backward(model):
    """A compiled forward + backward pass with the sum of the outputs as loss."""
    weights = model.trainable_variables

    @tf.function
    def run(x):
        with tf.GradientTape() as tape:
            outputs = model(x, training=True)
            loss = tf.add_n([tf.reduce_sum(tf.cast(o, tf.float32))
                             for o in tf.nest.flatten(outputs)])
        return tape.gradient(loss, weights)

    return run


def recipe_setup(root: str, quick: bool):
    """`(data, recipe model kwargs, the same at segmentation stride 4)`:
    DSB-2018 at the recipe's batch of 16, or (`quick`) synthetic shapes with
    a tiny model at batch 4. Stride-2 labels serve both (masks are full size)."""
    if quick:
        spec, batch_size = "shapes", 4
        sizes = {"widths": (4, 4, 8, 8), "fpn_channels": 8, "head_channels": 8}
    else:
        spec, batch_size, sizes = root, 16, {}
    data = vision_data(spec, batch_size=batch_size, seg_stride=2)
    kwargs = {**registry.get_entry(NAME).recipe.get("model_kwargs", {}),
              **data.model_kwargs, "test_time_flips": 1, **sizes}
    stride4 = {k: v for k, v in kwargs.items() if k != "seg_stride"}
    return data, kwargs, stride4


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=str(DEFAULT_ROOT))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2, help="calls per timed block")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true",
                        help="synthetic shapes, tiny model: checks that it runs")
    args = parser.parse_args(argv)
    print(limit_threads(args.threads))
    if args.quick:
        args.rounds, args.steps = 2, 1
    elif missing_data(args.root):
        return 0
    data, kwargs, kwargs4 = recipe_setup(args.root, args.quick)
    batches = list(data.train.take(args.rounds * args.steps + 1))
    x, y = batches[0]
    batch_size = int(x["image"].shape[0])
    print(f"{data.summary}; batch {batch_size}")
    size = tuple(x["image"].shape[1:3])

    steps_per_epoch = int(data.train.cardinality())  # 27 on DSB-2018 at batch 16
    recipe = build(kwargs, steps_per_epoch)
    rep_grad = build(kwargs, steps_per_epoch, weighting="dbmtl:rep_grad=True")
    equal = build(kwargs, steps_per_epoch, weighting="equal")
    plain4 = build(kwargs4, steps_per_epoch, weighting="equal")
    half = max(kwargs.get("head_channels", 64) // 2, 1)  # 32 for the recipe
    narrow = build({**kwargs, "head_channels": half}, steps_per_epoch)
    narrow_step = f"train step, recipe with head_channels={half}"
    flops = {"seg_stride=2 (recipe)": forward_flops(recipe, size),
             "seg_stride=4 (first measured)": forward_flops(plain4, size),
             f"recipe, head_channels={half}": forward_flops(narrow, size)}
    print(f"\nforward GFLOPs of one {size[0]}x{size[1]} image, per part:\n")
    print("| part | " + " | ".join(flops) + " |")
    print("|---|" + "---|" * len(flops))
    for part in [*PARTS, "other"]:
        cells = [f"{f.get(part, 0) / 1e9:.4g} ({100 * f.get(part, 0) / sum(f.values()):.0f}%)"
                 for f in flops.values()]
        print(f"| {part} | " + " | ".join(cells) + " |")
    print("| total | " + " | ".join(f"{sum(f.values()) / 1e9:.4g}" for f in flops.values())
          + " |")

    jit = build(kwargs, steps_per_epoch, jit=True, weighting="equal")
    rows = y[DETECTION]["classes"].shape[1]
    grid = (size[0] // 4, size[1] // 4)  # the detection head's stride-4 grid
    targets = tf.function(lambda b, c: centernet_targets(b, c, *grid, 1, 4))
    trunk_pass, full_pass = forward_backward(trunk_of(recipe)), forward_backward(recipe)
    cursor = {"i": 0}
    reader = {}

    def next_batch():
        cursor["i"] = (cursor["i"] + 1) % len(batches)
        return batches[cursor["i"]]

    def step(model):
        def run(n):
            for _ in range(n):
                bx, by = next_batch()
                model.train_on_batch(bx, by)
        return run

    def call(function, prepare):
        def run(n):
            for _ in range(n):
                out = function(*prepare(next_batch()))
            tf.nest.map_structure(lambda t: t.numpy(), out)  # wait for it
        return run

    def fresh_reader():
        # Untimed before each pipeline block: a fresh iterator (batches
        # prefetched while other parts ran would time as free) past its
        # first batch (start-up).
        reader["batches"] = iter(data.train)
        next(reader["batches"])

    def read(n):
        for _ in range(n):
            next(reader["batches"])[0]["image"].numpy()

    runners = {
        PIPELINE: read,
        "trunk forward + backward": call(trunk_pass, lambda b: (b[0],)),
        "network forward + backward": call(full_pass, lambda b: (b[0],)),
        f"CenterNet targets ({rows} box rows)": call(
            targets, lambda b: (b[1][DETECTION]["boxes"], b[1][DETECTION]["classes"])),
        RECIPE_STEP: step(recipe),
        REP_GRAD_STEP: step(rep_grad),
        EQUAL_STEP: step(equal),
        "train step, Equal under XLA (jit_compile)": step(jit),
        FIRST_STEP: step(plain4),
        narrow_step: step(narrow),
    }
    start = time.perf_counter()
    fresh_reader()
    for run in runners.values():  # traces, compiles (XLA) and warms each
        run(1)
    print(f"\nwarm-up (tracing, XLA compilation): {time.perf_counter() - start:.0f} s; "
          f"load average {load_average()}")
    times = measure(runners, args.steps, args.rounds, seed=0,
                    prepare={PIPELINE: fresh_reader})
    median = {k: float(np.median(v)) for k, v in times.items()}
    base = median[RECIPE_STEP]
    print(f"\nms per batch of {batch_size} (median of {args.rounds} rounds of "
          f"{args.steps}; share of the recipe's train step):\n")
    print("| part | ms | share |")
    print("|---|---|---|")
    for label, ms in median.items():
        print(f"| {label} | {ms:.0f} | {100 * ms / base:.0f}% |")
    print(f"\nrecipe step / rep_grad step: {base / median[REP_GRAD_STEP]:.2f}x; "
          f"recipe step / Equal step: {base / median[EQUAL_STEP]:.2f}x; "
          f"Equal step / XLA step: "
          f"{median[EQUAL_STEP] / median['train step, Equal under XLA (jit_compile)']:.2f}x; "
          f"first measured (seg_stride=4, Equal) / rep_grad step: "
          f"{median[FIRST_STEP] / median[REP_GRAD_STEP]:.2f}x; "
          f"recipe step / head_channels={half} step: {base / median[narrow_step]:.2f}x")
    print(f"load average at the end: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
