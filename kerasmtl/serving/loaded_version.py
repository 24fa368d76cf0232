"""A loaded version of a SavedModel: its signatures, callable on numpy arrays,
and its signature_def metadata as TF Serving prints it.

`load_version(path, version)` loads one version directory; `ModelManager`
decides which versions are loaded and when.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import tensorflow as tf
from google.protobuf import json_format, text_format
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import saved_model_pb2

from kerasmtl.serving.codec import TensorInfo
from kerasmtl.serving.errors import ServingError


class Signature:
    """One callable signature of a loaded version.

    Args:
        name: str. The signature key, e.g. `"serving_default"`.
        function: the loaded concrete function (called with keyword tensors).
        inputs: dict of `TensorInfo` by input name.
        outputs: dict of `TensorInfo` by output name.
        method_name: str. The SignatureDef's method, e.g.
            `"tensorflow/serving/predict"` or `"tensorflow/serving/classify"`.
    """

    def __init__(self, name: str, function, inputs: dict, outputs: dict,
                 method_name: str = "tensorflow/serving/predict"):
        self.name = name
        self.function = function
        self.inputs = inputs
        self.outputs = outputs
        self.method_name = method_name

    def __call__(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs the signature on numpy inputs; returns numpy outputs."""
        try:
            tensors = {k: tf.convert_to_tensor(v) for k, v in arrays.items()}
            result = self.function(**tensors)
        except tf.errors.InvalidArgumentError as error:
            hint = ""
            if "Data types don't match" in error.message:
                hint = (" (a tf.Example feature: write float values with a decimal "
                        "point, 1.0 rather than 1)")
            raise ServingError(f"Signature '{self.name}': {error.message}{hint}") from None
        except tf.errors.OpError as error:
            raise ServingError(
                f"Signature '{self.name}' failed: {error.message}", status_code=500
            ) from None
        except (TypeError, ValueError) as error:
            raise ServingError(f"Signature '{self.name}': {error}") from None
        return {k: v.numpy() for k, v in result.items()}


class LoadedVersion:
    """A fully loaded version of a model: its signatures and metadata."""

    def __init__(self, version: int, path: str, loaded, signature_defs):
        self.version = version
        self.path = path
        self._loaded = loaded  # keeps the variables alive while served
        self.signatures = {}
        for key, function in loaded.signatures.items():
            definition = signature_defs[key]
            self.signatures[key] = Signature(
                key,
                function,
                _tensor_infos(definition.inputs),
                _tensor_infos(definition.outputs),
                definition.method_name,
            )
        # As TF Serving prints it: int64 sizes as strings, defaults included.
        self.signature_def_json = {
            key: json_format.MessageToDict(
                definition,
                always_print_fields_with_no_presence=True,
                preserving_proto_field_name=True,
            )
            for key, definition in signature_defs.items()
        }

    def metadata(self, model_name: str) -> dict:
        """TF Serving's GetModelMetadataResponse (signature_def) as JSON."""
        return {
            "model_spec": {
                "name": model_name,
                "signature_name": "",
                "version": str(self.version),
            },
            "metadata": {"signature_def": {"signature_def": self.signature_def_json}},
        }

    def signature(self, name: str) -> Signature:
        if name not in self.signatures:
            raise ServingError(
                f'Serving signature name: "{name}" not found in signature def. '
                f"Version {self.version} has {sorted(self.signatures)}."
            )
        return self.signatures[name]


def load_version(path: str, version: int) -> LoadedVersion:
    """Loads the SavedModel in `path` (raises if it cannot be loaded)."""
    loaded = tf.saved_model.load(path)
    return LoadedVersion(version, path, loaded, _read_signature_defs(path))


def _read_signature_defs(path: str):
    saved_model = saved_model_pb2.SavedModel()
    binary = os.path.join(path, "saved_model.pb")
    if os.path.exists(binary):
        with open(binary, "rb") as f:
            saved_model.ParseFromString(f.read())
    else:
        with open(os.path.join(path, "saved_model.pbtxt")) as f:
            text_format.Parse(f.read(), saved_model)
    # Exports hold one MetaGraph, tagged "serve", which TF Serving loads.
    for meta_graph in saved_model.meta_graphs:
        if "serve" in meta_graph.meta_info_def.tags:
            return meta_graph.signature_def
    return saved_model.meta_graphs[0].signature_def


def _tensor_infos(proto_map) -> dict[str, TensorInfo]:
    infos = {}
    for key, info in proto_map.items():
        shape = info.tensor_shape
        dims = None if shape.unknown_rank else tuple(int(d.size) for d in shape.dim)
        infos[key] = TensorInfo(key, types_pb2.DataType.Name(info.dtype), dims)
    return infos
