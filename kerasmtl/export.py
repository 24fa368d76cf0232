"""SavedModel export of a `MultiTaskModel`, in TF Serving's directory layout.

`export_saved_model(model, base_path)` writes `base_path/<version>/`, a
SavedModel whose `serving_default` signature takes the model's inputs by name
and returns every task's raw output (`species`) and serving post-processing
(`species_prediction`). The graph holds only TensorFlow ops, so TF Serving (a
C++ server) and `tf.saved_model.load` without kerasmtl installed can run it.

This module is TensorFlow-specific by design (see DESIGN.md).
"""

from __future__ import annotations

import numbers
import os
import shutil
import tempfile

import keras
import tensorflow as tf

from kerasmtl.model import MultiTaskModel

SIGNATURE_NAME = "serving_default"  # the signature TF Serving calls by default
_TEMP_PREFIX = ".tmp-export-"  # hidden, so a base-path scan ignores it


def export_saved_model(
    model: MultiTaskModel, path: str | os.PathLike, version: int | None = None
) -> str:
    """Exports `model` as a TF Serving SavedModel under `path/<version>/`.

    The `serving_default` signature takes one tensor per model input, named
    after the `keras.Input` (or after its key, for a model built on a dict of
    inputs), with the input's dtype and shape and any batch size. It returns
    each task's raw output under the task's name plus every entry of
    `model.postprocess(...)` (e.g. `<task>_prediction`). The model runs with
    `training=False`.

    The version directory appears atomically: the SavedModel is written to a
    hidden temporary directory in `path` and renamed into place, so a server
    watching `path` never sees a half-written version, and a failed export
    leaves nothing behind.

    Args:
        model: `kerasmtl.MultiTaskModel`. The model to export.
        path: str or path-like. The base path: a new or empty directory, or one
            holding only earlier exports (integer-named version directories).
        version: int or None. The version to write. Defaults to `None`: one
            more than the highest existing version, or 1.

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
    version = _resolve_version(path, version)
    input_specs = _input_specs(model)
    serve = _serving_function(model)

    os.makedirs(path, exist_ok=True)
    version_dir = os.path.join(path, str(version))
    # Same directory as the target, so os.rename is a same-filesystem move.
    temp_dir = tempfile.mkdtemp(prefix=_TEMP_PREFIX, dir=path)
    try:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(SIGNATURE_NAME, serve, input_signature=input_specs)
        archive.write_out(temp_dir, verbose=False)
        os.rename(temp_dir, version_dir)
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    return version_dir


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


def _input_specs(model: MultiTaskModel) -> list[tf.TensorSpec]:
    names = _input_names(model)
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(
            f"Model '{model.name}' has several inputs named {duplicates}; signature "
            "inputs need unique names. Give each keras.Input a distinct `name`."
        )
    # Batch size left open: a server batches requests as it pleases.
    return [
        tf.TensorSpec((None, *t.shape[1:]), t.dtype, name=name)
        for name, t in zip(names, model.inputs, strict=True)
    ]


def _serving_function(model: MultiTaskModel):
    """Returns `serve(*inputs) -> {output_name: tensor}` for the signature."""

    def serve(*flat_inputs):
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

    return serve
