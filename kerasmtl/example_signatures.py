"""TF Serving's Classify and Regress signatures for an export: serialized
`tf.Example` protos in, per task.

TF Serving's `:classify` and `:regress` APIs (REST and gRPC) call a signature
whose `method_name` is `tensorflow/serving/classify` (outputs `classes`, a
string per class, and `scores`) or `tensorflow/serving/regress` (output
`outputs`, one float per example), with one input, `inputs`: a batch of
serialized `tf.Example`. `export_saved_model(..., example_signatures=True)`
adds, for a model whose inputs are all fixed-shape numbers or strings, one
signature per task that declares a tf.Example API (`Task.example_api`,
`Task.example_outputs`):

- `classify_<task>` for each `Classification` task (scores: the softmax
  probabilities; classes: `"0"`, `"1"`, ...) and `MultiLabel` task (scores:
  each label's probability; classes: the label names, or `"0"`, `"1"`, ...);
- `regress_<task>` for each one-value `Regression` task.

Each example holds one feature per model input, named after it, with the
input's number of values (float inputs are `float_list`, integer inputs
`int64_list`, string inputs `bytes_list`).
"""

from __future__ import annotations

import os

import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

METHODS = {"classify": "tensorflow/serving/classify",
           "regress": "tensorflow/serving/regress"}


def example_signatures(model, input_names: list[str]) -> dict:
    """`{signature name: (function, input_signature, method_name)}` for
    `model`'s tasks; raises `ValueError` naming the input that a
    `tf.Example` cannot carry."""
    spec = {}
    for name, tensor in zip(input_names, model.inputs, strict=True):
        shape = tuple(tensor.shape[1:])
        if any(d is None for d in shape):
            raise ValueError(
                f"Model '{model.name}': input '{name}' has shape {tuple(tensor.shape)}; "
                "a tf.Example signature (example_signatures=True) needs inputs of "
                "fixed shape. Export without it and use :predict.")
        dtype = tf.as_dtype(tensor.dtype)
        kind = (tf.string if dtype == tf.string else
                tf.float32 if dtype.is_floating else
                tf.int64 if dtype.is_integer else None)
        if kind is None:
            raise ValueError(f"Model '{model.name}': input '{name}' is {dtype.name}, "
                             "which a tf.Example cannot carry.")
        spec[name] = (tf.io.FixedLenFeature(shape, kind), dtype)

    def run(serialized):
        features = tf.io.parse_example(serialized, {k: v[0] for k, v in spec.items()})
        flat = [tf.cast(features[name], spec[name][1]) for name in input_names]
        return model(tf.nest.pack_sequence_as(model.input, flat), training=False)

    signatures = {}
    for task in model.tasks:
        if task.example_api is not None:
            signatures[f"{task.example_api}_{task.name}"] = (
                _signature(run, task), METHODS[task.example_api])
    input_signature = [tf.TensorSpec([None], tf.string, name="inputs")]
    return {key: (fn, input_signature, method) for key, (fn, method) in signatures.items()}


def _signature(run, task):
    def signature(inputs):
        return task.example_outputs(run(inputs)[task.name])

    return signature


def set_method_names(export_dir: str, methods: dict[str, str]) -> None:
    """Writes each signature's TF Serving `method_name` into the SavedModel
    (TensorFlow 2's `tf.saved_model.save` marks every signature as Predict,
    which TF Serving's Classify and Regress APIs refuse)."""
    path = os.path.join(export_dir, "saved_model.pb")
    saved_model = saved_model_pb2.SavedModel()
    with open(path, "rb") as f:
        saved_model.ParseFromString(f.read())
    for meta_graph in saved_model.meta_graphs:
        for key, method in methods.items():
            meta_graph.signature_def[key].method_name = method
    with open(path, "wb") as f:
        f.write(saved_model.SerializeToString())
