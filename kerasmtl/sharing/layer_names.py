"""Checks shared by the sharing builders: layer names, counts, layer specs.

A task's head layer is named after the task, and a Keras model needs unique
layer names; the builders check the layers they wire before the heads are
built, so a collision is reported with the argument to change instead of
Keras' generic duplicate-name error.
"""

from __future__ import annotations

import collections
import inspect
from collections.abc import Sequence

import keras


def check_layer_names(builder: str, inputs, tensors, tasks, argument: str) -> None:
    """Raises a ValueError if a layer between `inputs` and `tensors` shares its
    name with a task (or with another layer)."""
    graph = keras.Model(inputs, list(tensors))
    counts = collections.Counter(layer.name for layer in graph.layers)
    repeated = sorted(name for name, n in counts.items() if n > 1)
    if repeated:
        raise ValueError(
            f"{builder}: layer name(s) {repeated} are used more than once among "
            f"the layers of `{argument}` and the layers {builder} adds. Give every "
            "layer a unique name (or leave `name` unset)."
        )
    collisions = sorted({t.name for t in tasks} & set(counts))
    if collisions:
        raise ValueError(
            f"{builder}: the task '{collisions[0]}' has the same name as a layer of "
            f"`{argument}` (or one {builder} adds, such as '<task>_gate_0'). The "
            "task's head layer is named after the task and layer names must be "
            "unique: rename the task or the layer."
        )


def check_count(builder: str, argument: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"{builder}: invalid value for argument `{argument}`. Expected an int "
            f">= 1. Received: {argument}={value!r}"
        )


def takes_inputs(builder: str, argument: str, fn) -> bool:
    """Whether the callable `fn` is a function of the inputs, `fn(inputs) ->
    features` (True), or a factory called with no argument (False).

    The builders take both forms under names users mix up (`tower_fn`,
    `towers`, `experts`); reading the signature turns a mix-up into an error
    that names the form expected instead of a TypeError from deep inside.
    """
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return False  # no signature to read (a C callable): assume a factory
    for arguments in ((), (None,)):
        try:
            signature.bind(*arguments)
        except TypeError:
            continue
        return bool(arguments)
    raise ValueError(
        f"{builder}: `{argument}` must be a factory taking no argument or a "
        "function of one argument (the input tensor); it requires the "
        f"arguments {signature}. Received: {fn!r}"
    )


def apply_layers(builder: str, argument: str, layers, inputs):
    """Applies what a factory returned (a layer or a non-empty list of
    layers) to `inputs`, in order."""
    if isinstance(layers, keras.layers.Layer):
        layers = [layers]
    if (
        not isinstance(layers, Sequence)
        or isinstance(layers, str)
        or not layers
        or not all(map(callable, layers))
    ):
        raise ValueError(
            f"{builder}: the factory `{argument}` must return a Keras layer or a "
            f"non-empty list of Keras layers. Received: {layers!r}"
        )
    x = inputs
    for layer in layers:
        x = layer(x)
    return x


def make_layers(
    builder: str, argument: str, spec, count: int | None, count_argument: str
) -> list:
    """Layers from `spec`: a sequence of layers, or a factory `() -> layer`
    called `count` times (new layers each call)."""
    if callable(spec) and not isinstance(spec, keras.layers.Layer):
        if takes_inputs(builder, argument, spec):
            raise ValueError(
                f"{builder}: `{argument}` takes an argument (a function of the "
                f"inputs, `f(x) -> features`), but {builder} calls a factory with "
                "no argument to make each expert, then calls the expert on the "
                f"features: pass e.g. `{argument}=lambda: "
                "keras.layers.Dense(64, activation='relu')`. Received: "
                f"{spec!r}"
            )
        if count is None:
            raise ValueError(
                f"{builder}: `{argument}` is a factory, so `{count_argument}` is "
                "needed: pass how many experts to create, e.g. "
                f"{count_argument}=4."
            )
        check_count(builder, count_argument, count)
        layers = [spec() for _ in range(count)]
    elif isinstance(spec, Sequence) and not isinstance(spec, str):
        layers = list(spec)
        if not layers:
            raise ValueError(
                f"{builder}: `{argument}` is empty. Pass at least one expert "
                "(a Keras layer or model), or a factory and a count."
            )
        if count is not None and count != len(layers):
            raise ValueError(
                f"{builder}: `{argument}` holds {len(layers)} layers but "
                f"{count_argument}={count!r}. Leave `{count_argument}` unset when "
                "passing a list."
            )
    else:
        raise ValueError(
            f"{builder}: invalid value for argument `{argument}`. Expected a list "
            "of Keras layers/models or a factory `() -> layer`. Received: "
            f"{spec!r}"
        )
    _check_layers(builder, argument, layers)
    return layers


def _check_layers(builder: str, argument: str, layers: Sequence) -> None:
    seen = set()
    for i, layer in enumerate(layers):
        if not callable(layer):
            raise ValueError(
                f"{builder}: entry {i} of `{argument}` is not a Keras layer: "
                f"{layer!r}."
            )
        if id(layer) in seen:
            raise ValueError(
                f"{builder}: entry {i} of `{argument}` is the same layer object as "
                "an earlier entry; each needs its own weights. A factory must "
                "create a new layer on every call."
            )
        seen.add(id(layer))


def tower(task_name: str, tower_layers: Sequence, x):
    """Applies copies of `tower_layers` (ints = Dense+ReLU units, or layers
    copied from their config) named `<task>_tower_<i>` to `x`."""
    for i, spec in enumerate(tower_layers):
        x = tower_layer(task_name, spec, f"{task_name}_tower_{i}")(x)
    return x


def tower_layer(task_name: str, spec, name: str):
    if isinstance(spec, int) and not isinstance(spec, bool) and spec > 0:
        return keras.layers.Dense(spec, activation="relu", name=name)
    if isinstance(spec, keras.layers.Layer):
        config = keras.saving.serialize_keras_object(spec)
        config["config"] = dict(config["config"], name=name)
        return keras.saving.deserialize_keras_object(config)
    raise ValueError(
        f"Invalid entry in `tower_layers` for task '{task_name}': {spec!r}. "
        "Expected a positive int (a Dense+ReLU layer of that size) or a "
        "keras.layers.Layer (copied for each task)."
    )


def model_features(builder: str, inputs, features):
    if features is not None:
        return features
    if not keras.backend.is_keras_tensor(inputs):
        raise ValueError(
            f"{builder}: `inputs` is a {type(inputs).__name__}, not one tensor, so "
            "the experts do not know what to read. Pass `features=`, the Keras "
            "tensor (computed from `inputs`) that experts and gates read."
        )
    return inputs
