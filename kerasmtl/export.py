"""SavedModel export of a `MultiTaskModel`, in TF Serving's directory layout.

`export_saved_model(model, base_path)` writes `base_path/<version>/`, a
SavedModel whose `serving_default` signature takes the model's inputs by name
and returns every task's raw output (`species`) and serving post-processing
(`species_prediction`). The graph holds only TensorFlow ops, so TF Serving (a
C++ server) and `tf.saved_model.load` without kerasmtl installed can run it.

Image inputs get an adapter: the signature takes uint8 images of any size
and channel count, converts them to the model's channels, pads them to the
backbone's size multiple, and crops image-shaped outputs back (see
`export_saved_model`). Other inputs are passed through unchanged.

This module is TensorFlow-specific by design (see DESIGN.md).
"""

from __future__ import annotations

import errno
import logging
import math
import numbers
import os
import secrets
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from kerasmtl.layers.backbones import ImageRescaling
from kerasmtl.layers.instance_masks import serving_instance_ids
from kerasmtl.model import MultiTaskModel

try:
    import fcntl
except ImportError:  # not a Unix: temp dirs are judged by age alone
    fcntl = None

logger = logging.getLogger("kerasmtl.export")

SIGNATURE_NAME = "serving_default"  # the signature TF Serving calls by default
_TEMP_PREFIX = ".tmp-export-"  # hidden, so a base-path scan ignores it
# A temp dir of an export is left behind when the export is killed. One that
# no process holds locked and that has not changed for this long is removed
# by the next export to the base path. The age covers the instant between a
# temp dir's creation and its lock (and systems without flock, with a day).
_STALE_SECONDS = 600 if fcntl is not None else 24 * 3600


def export_saved_model(
    model: MultiTaskModel,
    path: str | os.PathLike,
    version: int | None = None,
    *,
    image_inputs: str | Sequence[str] | None = "auto",
    instance_masks: bool = False,
    instance_min_score: float = 0.0,
) -> str:
    """Exports `model` as a TF Serving SavedModel under `path/<version>/`.

    The `serving_default` signature takes one tensor per model input, named
    after the `keras.Input` (or after its key, for a model built on a dict of
    inputs), with the input's dtype and shape and any batch size. It returns
    each task's raw output under the task's name plus every entry of
    `model.postprocess(...)` (e.g. `<task>_prediction`). The model runs with
    `training=False`.

    Image inputs are served as uint8 `[batch, height, width, channels]`
    with height, width and channels of any size. Before the model runs, an
    image is converted to the model's channels (grayscale, and gray+alpha, to
    RGB by repeating the gray channel; RGBA to RGB by dropping the alpha
    channel, not by blending), then zero-padded at the bottom and right up to
    the input's size multiple (32 for `kerasmtl.layers.image_trunk`). Outputs
    that are image-shaped (their height and width are the padded input's
    divided by an integer stride, such as a segmentation map or a CenterNet
    heat map) are cropped back to `ceil(height / stride)` x
    `ceil(width / stride)` of the original image; which outputs those are is
    found at export time by running the model on two probe sizes. Since the
    padding is at the bottom and right, boxes keep the original pixel
    coordinates; outputs named `...boxes` with a last axis of 4 (xyxy pixels)
    are clipped to the original image. With several image inputs, outputs
    are cropped to the first one's size.

    The version directory appears atomically: the SavedModel is written to a
    hidden temporary directory in `path` and renamed into place, so a server
    watching `path` never sees a half-written version, and a failed export
    leaves nothing behind. Temporary directories of exports that were killed
    (unlocked and unchanged for 10 minutes) are removed. When another export
    writes the same version meanwhile, an automatic version moves on to the
    next free one; an explicit one raises a `ValueError`. Directories get the
    usual modes (`0o777` less the umask, as `tf.saved_model.save` gives), so
    a server running as another user, e.g. in the `tensorflow/serving`
    container, can read them.

    Args:
        model: `kerasmtl.MultiTaskModel`. The model to export.
        path: str or path-like. The base path: a new or empty directory, or one
            holding only earlier exports (integer-named version directories).
        version: int or None. The version to write. Defaults to `None`: one
            more than the highest existing version, or 1.
        image_inputs: `"auto"`, a list of input names, or None. The inputs
            served as images. `"auto"`: the inputs read by a
            `kerasmtl.layers.ImageRescaling` layer (padded to its
            `size_multiple`), and rank-4 uint8 inputs (not padded). None or
            `[]`: no image input. Defaults to `"auto"`.
        instance_masks: bool. Also return `instance_ids`, int32 `[batch,
            height, width]`: 0 for background, `k` for detection row `k - 1`
            (each detection box intersected with the segmentation's
            foreground, overlaps to the higher score; see
            `kerasmtl.layers.instance_id_map`). Needs exactly one detection and
            one segmentation task. Defaults to `False`.
        instance_min_score: float. With `instance_masks`, detections scoring
            less make no instance (a duplicate that survives NMS would split an
            object in two). Defaults to `0.0`.

    Returns:
        The path of the written version directory, as a str.

    Examples:

    >>> import os, tempfile, keras, kerasmtl as mtl
    >>> task = mtl.tasks.Classification("species", num_classes=3)
    >>> x = keras.Input((8,), name="features")
    >>> model = mtl.sharing.hard_sharing(x, keras.layers.Dense(4)(x), [task])
    >>> base = tempfile.mkdtemp()
    >>> os.path.basename(mtl.export.export_saved_model(model, base))
    '1'
    >>> os.path.basename(mtl.export.export_saved_model(model, base))
    '2'
    """
    if not isinstance(model, MultiTaskModel):
        raise ValueError(
            f"Cannot export to '{os.fspath(path)}': export_saved_model expects a "
            "kerasmtl.MultiTaskModel (e.g. from mtl.sharing.hard_sharing). "
            f"Received: {type(model).__name__}."
        )
    path = os.fspath(path)
    explicit = version is not None
    version = _resolve_version(path, version)
    images = _image_inputs(model, image_inputs)
    input_specs = _input_specs(model, images)
    serve = _serving_function(model, images)
    if instance_masks:
        serve = _with_instance_ids(model, serve, instance_min_score)

    os.makedirs(path, exist_ok=True)
    _remove_stale_temp_dirs(path)
    # Same directory as the target, so os.rename is a same-filesystem move.
    temp_dir, lock = _make_temp_dir(path)
    try:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(SIGNATURE_NAME, serve, input_signature=input_specs)
        archive.write_out(temp_dir, verbose=False)
        return _rename_to_version(temp_dir, path, version, explicit)
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    finally:
        if lock is not None:
            os.close(lock)


def _make_temp_dir(path: str) -> tuple[str, int | None]:
    """Makes a temp dir in `path`; returns it and a descriptor that holds it
    locked (flock) while this process writes it, or None without flock."""
    while True:
        temp_dir = os.path.join(path, f"{_TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}")
        try:
            # Not tempfile.mkdtemp: its 0o700 would survive the rename, and
            # TF Serving running as another user could not read the version.
            os.mkdir(temp_dir, 0o777)  # less the umask
            break
        except FileExistsError:
            continue
    if fcntl is None:
        return temp_dir, None
    lock = os.open(temp_dir, os.O_RDONLY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # a file system without flock: the age alone protects it
        os.close(lock)
        return temp_dir, None
    return temp_dir, lock


def _rename_to_version(temp_dir: str, path: str, version: int, explicit: bool) -> str:
    """Renames `temp_dir` to `path/<version>`, or, if another export took that
    version meanwhile, to the next free one (`explicit`: raises instead)."""
    while True:
        version_dir = os.path.join(path, str(version))
        try:
            os.rename(temp_dir, version_dir)  # onto an empty directory too, as POSIX does
            return version_dir
        except OSError as error:
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        if explicit:
            raise ValueError(
                f"Version {version} appeared in '{path}' while this export was being "
                "written (another export to the same base path?). Pass another "
                "version, or version=None for the next free one."
            )
        version = _resolve_version(path, None)


def _remove_stale_temp_dirs(path: str) -> None:
    """Removes temp dirs of killed exports: unlocked, unchanged for a while."""
    removed = []
    for entry in os.listdir(path):
        if not entry.startswith(_TEMP_PREFIX):
            continue
        temp_dir = os.path.join(path, entry)
        try:
            if not os.path.isdir(temp_dir) or os.path.islink(temp_dir) or (
                time.time() - os.stat(temp_dir).st_mtime < _STALE_SECONDS
            ):
                continue
            lock = os.open(temp_dir, os.O_RDONLY) if fcntl is not None else None
        except OSError:  # gone meanwhile: renamed or removed by its writer
            continue
        try:
            if lock is not None:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(temp_dir, ignore_errors=True)
            removed.append(entry)
        except OSError:  # locked: an export is writing it
            pass
        finally:
            if lock is not None:
                os.close(lock)
    if removed:
        logger.warning(
            "Removed %d temporary director%s left in '%s' by exports that did not "
            "finish: %s", len(removed), "y" if len(removed) == 1 else "ies", path,
            ", ".join(sorted(removed)))


def _resolve_version(path: str, version) -> int:
    """Checks `path` is usable as a base path; returns the version to write."""
    if version is not None and (
        isinstance(version, bool)
        or not isinstance(version, numbers.Integral)
        or version < 1
    ):
        raise ValueError(
            f"Invalid value for argument `version` of export_saved_model to '{path}'. "
            f"Expected a positive int or None (the next version). Received: "
            f"version={version!r}"
        )
    version = None if version is None else int(version)
    if not os.path.exists(path):
        return version or 1
    if not os.path.isdir(path):
        raise ValueError(
            f"Export path '{path}' exists and is a file, not a directory. Pass a "
            "new or empty directory, or the base path of earlier exports."
        )
    existing = []
    for entry in sorted(os.listdir(path)):
        if entry.startswith("."):
            continue  # editor and OS files, and temp dirs of interrupted exports
        if not (entry.isdigit() and os.path.isdir(os.path.join(path, entry))):
            raise ValueError(
                f"Export path '{path}' exists and is not a model base directory "
                f"(found '{entry}'); pass a new or empty directory, or the base "
                "path of earlier exports (it holds only integer version directories)."
            )
        existing.append(int(entry))
    if version is None:
        return max(existing, default=0) + 1
    if version in existing:
        raise ValueError(
            f"Version {version} already exists in '{path}'. Pass another version, "
            "or version=None for the next one "
            f"({max(existing) + 1}); delete the old directory to replace it."
        )
    return version


def _input_names(model: MultiTaskModel) -> list[str]:
    # Callers address a dict-input model by its keys, any other by Input names.
    if isinstance(model.input, dict):
        return [str(p[0]) for p, _ in keras.tree.flatten_with_path(model.input)]
    return [t.name for t in model.inputs]


@dataclass(frozen=True)
class _ImageInput:
    """An input served as images: where it is among the model's flat inputs,
    the channels and dtype the model takes, and the size multiple."""

    index: int
    name: str
    channels: int | None
    dtype: str
    multiple: int


def _image_inputs(model: MultiTaskModel, image_inputs) -> list[_ImageInput]:
    names = _input_names(model)
    if image_inputs is None:
        return []
    multiples = _rescaling_multiples(model)
    if isinstance(image_inputs, str) and image_inputs == "auto":
        chosen = [
            i for i, t in enumerate(model.inputs)
            if i in multiples or (len(t.shape) == 4 and t.dtype == "uint8")
        ]
    else:
        if isinstance(image_inputs, str) or not all(
                isinstance(n, str) for n in image_inputs):
            raise ValueError(
                "Invalid value for argument `image_inputs` of export_saved_model. "
                "Expected 'auto', None or a list of input names from "
                f"{names}. Received: image_inputs={image_inputs!r}"
            )
        unknown = sorted(set(image_inputs) - set(names))
        if unknown:
            raise ValueError(
                f"`image_inputs` names {unknown}, which are not inputs of model "
                f"'{model.name}'; its inputs are {names}."
            )
        chosen = [names.index(n) for n in image_inputs]
    result = []
    for i in chosen:
        tensor = model.inputs[i]
        if len(tensor.shape) != 4:
            raise ValueError(
                f"Input '{names[i]}' of model '{model.name}' has shape "
                f"{tuple(tensor.shape)}; an image input must be (batch, height, "
                "width, channels)."
            )
        result.append(_ImageInput(i, names[i], tensor.shape[-1], str(tensor.dtype),
                                  multiples.get(i, 1)))
    return result


def _rescaling_multiples(model: MultiTaskModel) -> dict[int, int]:
    """`{input index: size multiple}` for inputs read by an ImageRescaling."""
    index = {id(t._keras_history.operation): i for i, t in enumerate(model.inputs)}
    found = {}
    for layer in model.layers:
        if not isinstance(layer, ImageRescaling):
            continue
        for node in layer._inbound_nodes:
            for tensor in node.input_tensors:
                i = index.get(id(tensor._keras_history.operation))
                if i is not None:
                    found[i] = max(found.get(i, 1), layer.size_multiple)
    return found


def _input_specs(model: MultiTaskModel, images=()) -> list[tf.TensorSpec]:
    names = _input_names(model)
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(
            f"Model '{model.name}' has several inputs named {duplicates}; signature "
            "inputs need unique names. Give each keras.Input a distinct `name`."
        )
    # Batch size left open: a server batches requests as it pleases.
    specs = [
        tf.TensorSpec((None, *t.shape[1:]), t.dtype, name=name)
        for name, t in zip(names, model.inputs, strict=True)
    ]
    for image in images:
        # Any channel count: the adapter converts to the model's channels.
        shape = model.inputs[image.index].shape
        specs[image.index] = tf.TensorSpec((None, shape[1], shape[2], None), tf.uint8,
                                           name=image.name)
    return specs


def _model_outputs(model: MultiTaskModel, flat_inputs) -> dict:
    """Raw outputs (under each task's `raw_output_name`) and post-processing."""
    inputs = keras.tree.pack_sequence_as(model.input, list(flat_inputs))
    raw = model(inputs, training=False)
    outputs = {task.raw_output_name: raw[task.name] for task in model.tasks}
    for key, value in model.postprocess(raw).items():
        if key in outputs:
            raise ValueError(
                f"Serving output '{key}' of model '{model.name}' is both a raw "
                "output and a post-processing output; rename the task."
            )
        outputs[key] = value
    return outputs


def _serving_function(model: MultiTaskModel, images=()):
    """Returns `serve(*inputs) -> {output_name: tensor}` for the signature."""
    if not images:
        return lambda *flat_inputs: _model_outputs(model, flat_inputs)
    strides = _output_strides(model, images)

    def serve(*flat_inputs):
        flat = list(flat_inputs)
        for image in images:
            x = _convert_channels(flat[image.index], image)
            if image is images[0]:
                size = tf.shape(x)[1:3]
            flat[image.index] = tf.cast(_pad_to_multiple(x, image.multiple), image.dtype)
        outputs = _model_outputs(model, flat)
        for key, stride in strides.items():
            crop = (size + stride - 1) // stride  # ceil(size / stride)
            outputs[key] = outputs[key][:, : crop[0], : crop[1]]
        for key, value in outputs.items():
            if key.endswith("boxes") and value.shape.rank == 3 and value.shape[-1] == 4:
                height, width = tf.unstack(tf.cast(size, value.dtype))
                outputs[key] = tf.clip_by_value(
                    value, 0.0, tf.stack([width, height, width, height]))
        return outputs

    return serve


def _with_instance_ids(model: MultiTaskModel, serve, min_score: float):
    """Wraps `serve` to add `instance_ids` from the detection and the
    segmentation task's post-processed outputs."""
    kinds = {kind: [t.name for t in model.tasks if t.kind == kind]
             for kind in ("detection", "segmentation")}
    if any(len(names) != 1 for names in kinds.values()):
        raise ValueError(
            "export_saved_model(instance_masks=True) needs exactly one detection "
            f"and one segmentation task; model '{model.name}' has detection tasks "
            f"{kinds['detection']} and segmentation tasks {kinds['segmentation']}."
            " Export without instance_masks, or build the model with both tasks."
        )
    detection, segmentation = kinds["detection"][0], kinds["segmentation"][0]

    def serve_with_instances(*flat_inputs):
        outputs = serve(*flat_inputs)
        outputs["instance_ids"] = serving_instance_ids(
            outputs, detection, segmentation, min_score=min_score
        )
        return outputs

    return serve_with_instances


def _convert_channels(images, image: _ImageInput):
    channels = tf.shape(images)[-1]
    target = image.channels
    if target not in (1, 3):  # no conversion defined: the count must match
        return images if target is None else tf.ensure_shape(
            images, (None, None, None, target))
    check = tf.debugging.Assert(
        tf.logical_and(channels >= 1, channels <= 4),
        [f"Input '{image.name}' takes images with 1 (gray), 2 (gray+alpha), 3 (RGB) "
         "or 4 (RGBA) channels; received", channels])
    with tf.control_dependencies([check]):
        images = tf.identity(images)
    if target == 3:
        images = tf.cond(channels < 3,
                         lambda: tf.tile(images[..., :1], [1, 1, 1, 3]),
                         lambda: images[..., :3])
    else:
        images = tf.cond(
            channels < 3, lambda: images[..., :1],
            lambda: tf.cast(tf.round(tf.image.rgb_to_grayscale(
                tf.cast(images[..., :3], tf.float32))), images.dtype))
    return tf.ensure_shape(images, (None, None, None, target))


def _pad_to_multiple(images, multiple: int):
    if multiple == 1:
        return images
    size = tf.shape(images)[1:3]
    pad = (multiple - size % multiple) % multiple
    return tf.pad(images, [[0, 0], [0, pad[0]], [0, pad[1]], [0, 0]])


def _output_strides(model: MultiTaskModel, images) -> dict[str, int]:
    """`{output: stride}` for image-shaped outputs: those whose height and width
    are the input's divided by one integer stride at two probe sizes."""
    multiple = math.lcm(*(image.multiple for image in images))
    shapes = []
    for rows, cols in ((3, 5), (4, 7)):
        size = (rows * multiple, cols * multiple)
        flat = [_probe(t) for t in model.inputs]
        for image in images:
            flat[image.index] = np.zeros((1, *size, image.channels or 3), image.dtype)
        outputs = _model_outputs(model, flat)
        shapes.append((size, {k: tuple(v.shape) for k, v in outputs.items()}))
    strides = {}
    (size_a, out_a), (size_b, out_b) = shapes
    for key, shape_a in out_a.items():
        shape_b = out_b[key]
        if len(shape_a) < 3 or 0 in shape_a[1:3] or 0 in shape_b[1:3]:
            continue
        ratios = {size_a[0] / shape_a[1], size_a[1] / shape_a[2],
                  size_b[0] / shape_b[1], size_b[1] / shape_b[2]}
        if len(ratios) == 1 and float(next(iter(ratios))).is_integer():
            strides[key] = int(next(iter(ratios)))
    return strides


def _probe(tensor):
    """A zero batch of one for a non-image input (unknown sizes as 1)."""
    shape = [1, *(d or 1 for d in tensor.shape[1:])]
    if tensor.dtype == "string":
        return tf.fill(shape, "")
    return tf.zeros(shape, tensor.dtype)
