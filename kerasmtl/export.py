"""SavedModel export of a `MultiTaskModel`, in TF Serving's directory layout.

`export_saved_model(model, base_path)` writes `base_path/<version>/`, a
SavedModel whose `serving_default` signature takes the model's inputs by name
and returns every task's raw output (`species`) and serving post-processing
(`species_prediction`). The graph holds only TensorFlow ops, so TF Serving (a
C++ server) and `tf.saved_model.load` without kerasmtl installed can run it.

Export only saves: what runs in the signature is owned elsewhere. Image
inputs go through `kerasmtl.preprocessors.images` (uint8 of any size and
channel count, converted and padded to the backbone's size multiple); each
task's `Task.serving_outputs` returns its raw output and post-processing,
cropped or clipped back to the request's image where the task's outputs are
image-shaped or in pixels. Other inputs are passed through unchanged. A
model built with `test_time_flips` > 1 has its outputs averaged over flips
of its image inputs before the post-processing, as in its `predict`
(`kerasmtl.flip_averaging`).

This module is TensorFlow-specific by design (see DESIGN.md).
"""

from __future__ import annotations

import errno
import logging
import numbers
import os
import secrets
import shutil
import time
from collections.abc import Sequence

import keras
import tensorflow as tf

from kerasmtl.example_signatures import example_signatures as make_example_signatures
from kerasmtl.example_signatures import set_method_names
from kerasmtl.flip_averaging import flip_averaged_outputs
from kerasmtl.model import MultiTaskModel
from kerasmtl.preprocessors import ImageGeometry, input_names, serving_image_inputs
from kerasmtl.tasks import instance_ids_function

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
    instance_overlap: str = "score",
    instance_grow: float = 0.0,
    example_signatures: bool = False,
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
    the input's size multiple (32 for `kerasmtl.layers.image_trunk`). Each
    task maps its outputs back to the original image in its
    `Task.serving_outputs` with a `kerasmtl.preprocessors.ImageGeometry`:
    image-shaped outputs (a segmentation map, a CenterNet heat map: the padded
    input's size divided by a stride) are cropped to `ceil(height / stride)`
    x `ceil(width / stride)`, and detection boxes (xyxy pixels, unchanged by
    the bottom-right padding) are clipped to the image. With several image
    inputs, outputs map back to the first one's size.

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
            foreground, overlaps by `instance_overlap`; see
            `kerasmtl.layers.instance_id_map`). Needs exactly one detection and
            one segmentation task. Defaults to `False`.
        instance_min_score: float. With `instance_masks`, detections scoring
            less make no instance (a duplicate that survives NMS would split an
            object in two). Defaults to `0.0`.
        instance_overlap: `"score"` or `"centre"`. With `instance_masks`, a
            pixel inside several boxes goes to the best-scoring box
            (`"score"`) or to the box whose centre is nearest in units of its
            half-size (`"centre"`: touching objects split their overlap).
            Defaults to `"score"`.
        instance_grow: float >= 0. With `instance_masks`, each box's
            footprint grows by this share of its size on each side, so that
            the foreground, not a tight box, draws the outline. Defaults to
            `0.0`. The nuclei model card measures `"centre"` with `0.25`.
        example_signatures: bool. Also add TF Serving's Classify and Regress
            signatures (`classify_<task>`, `regress_<task>`: serialized
            `tf.Example` in, for `:classify` and `:regress`; see
            `kerasmtl.example_signatures`). Needs fixed-shape inputs and no
            image input. Defaults to `False`.

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
    images = serving_image_inputs(model, image_inputs)
    input_specs = _input_specs(model, images)
    serve = _serving_function(model, images)
    if instance_masks:
        instance_ids = instance_ids_function(model.tasks, model.name, instance_min_score,
                                             instance_overlap, instance_grow)
        image_serve = serve

        def serve(*flat_inputs):
            return instance_ids(image_serve(*flat_inputs))

    extra = {}
    if example_signatures:
        if images:
            raise ValueError(f"Model '{model.name}' has image inputs, which tf.Example "
                             "signatures (example_signatures=True) do not take.")
        extra = make_example_signatures(model, input_names(model))
    os.makedirs(path, exist_ok=True)
    _remove_stale_temp_dirs(path)
    # Same directory as the target, so os.rename is a same-filesystem move.
    temp_dir, lock = _make_temp_dir(path)
    try:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(SIGNATURE_NAME, serve, input_signature=input_specs)
        for key, (function, signature, _) in extra.items():
            archive.add_endpoint(key, function, input_signature=signature)
        archive.write_out(temp_dir, verbose=False)
        if extra:
            set_method_names(temp_dir, {key: method for key, (_, _, method) in extra.items()})
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


def _input_specs(model: MultiTaskModel, images=()) -> list[tf.TensorSpec]:
    names = input_names(model)
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
        shape = model.inputs[image.index].shape
        specs[image.index] = image.spec(shape[1], shape[2])
    return specs


def _serving_function(model: MultiTaskModel, images=()):
    """Returns `serve(*inputs) -> {output_name: tensor}` for the signature:
    the image converter, the model, then each task's `serving_outputs`."""

    def serve(*flat_inputs):
        flat = list(flat_inputs)
        geometry = None
        for image in images:
            converted = image.convert(flat[image.index])
            if image is images[0]:  # outputs map back to the first image
                geometry = ImageGeometry(tf.shape(flat[image.index])[1:3],
                                         tf.shape(converted)[1:3])
            flat[image.index] = converted
        inputs = keras.tree.pack_sequence_as(model.input, flat)
        outputs = flip_averaged_outputs(model, inputs, [i.index for i in images])
        return model.serving_outputs(outputs, geometry)

    return serve
