"""Which tasks use which shared parts: gate weights and attention maps.

Soft-sharing architectures expose how each task draws on the shared network:
an MMoE/CGC/PLE task gate's softmax weights over experts, an MTAN task's
attention masks over the shared feature maps. These functions run a batch
through the model and return them per task, for plots and analysis.
"""

from __future__ import annotations

import re

import keras
import numpy as np

from kerasmtl.layers.expert_gate import ExpertGate
from kerasmtl.layers.task_attention import TaskAttention


def gate_weights(model: keras.Model, x, level: int = -1, batch_size: int = 32) -> dict:
    """Each task's gate weights over experts for the examples `x`.

    Args:
        model: a model built by `mmoe`, `cgc` or `ple`.
        x: the model's input for a batch (array, dict of arrays).
        level: int. The PLE level to read (0-based; negative counts from the
            last). MMoE and CGC have one level. Defaults to `-1`.
        batch_size: int. Prediction batch size. Defaults to `32`.

    Returns:
        `{task_name: array (num_examples, ..., num_experts)}`; each row sums to
        one. Column `e` is the expert named
        `model.get_layer(f"{task}_gate_{level}").expert_names[e]` (for CGC/PLE:
        the task's own experts, then the shared ones).

    Examples:

    >>> import keras, numpy as np, kerasmtl as mtl
    >>> x = keras.Input((4,))
    >>> tasks = [mtl.tasks.Regression("a"), mtl.tasks.Regression("b")]
    >>> model = mtl.sharing.mmoe(x, lambda: keras.layers.Dense(2), tasks,
    ...                          num_experts=3)
    >>> weights = mtl.sharing.gate_weights(model, np.ones((5, 4), "float32"))
    >>> weights["a"].shape, bool(np.allclose(weights["b"].sum(-1), 1.0))
    ((5, 3), True)
    """
    gates = _layers_by_task(model, ExpertGate, "gate", "mmoe, cgc or ple")
    levels = sorted({index for layers in gates.values() for index in layers})
    if not -len(levels) <= level < len(levels):
        raise ValueError(
            f"Invalid value for argument `level`: the model has gate levels "
            f"{levels}. Received: level={level}"
        )
    chosen = levels[level]
    layers = {task: by_index[chosen] for task, by_index in gates.items()}
    return _run(model, {task: layer.output[1] for task, layer in layers.items()},
                x, batch_size)


def attention_maps(model: keras.Model, x, batch_size: int = 32) -> dict:
    """Each task's MTAN attention masks, one per shared block, for `x`.

    Args:
        model: a model built by `mtan`.
        x: the model's input for a batch.
        batch_size: int. Prediction batch size. Defaults to `32`.

    Returns:
        `{task_name: [mask of block 0, mask of block 1, ...]}`, each mask an
        array `(num_examples, height, width, channels)` of values in [0, 1],
        the shape of that block's shared feature map.

    Examples:

    >>> import keras, numpy as np, kerasmtl as mtl
    >>> x = keras.Input((8, 8, 3))
    >>> blocks = [keras.layers.Conv2D(4, 3, strides=2, padding="same")]
    >>> tasks = [mtl.tasks.Regression("a"), mtl.tasks.Regression("b")]
    >>> model = mtl.sharing.mtan(x, blocks, tasks)
    >>> maps = mtl.sharing.attention_maps(model, np.ones((2, 8, 8, 3), "float32"))
    >>> [m.shape for m in maps["a"]]
    [(2, 4, 4, 4)]
    """
    modules = _layers_by_task(model, TaskAttention, "attention", "mtan")
    outputs = {
        f"{task}/{j}": by_index[j].output[1]
        for task, by_index in modules.items()
        for j in sorted(by_index)
    }
    flat = _run(model, outputs, x, batch_size)
    return {
        task: [flat[f"{task}/{j}"] for j in sorted(by_index)]
        for task, by_index in modules.items()
    }


def _layers_by_task(model, layer_class, kind: str, builders: str) -> dict:
    task_names = getattr(model, "task_names", None)
    if task_names is None:
        raise ValueError(
            f"Expected a kerasmtl MultiTaskModel built by {builders}. Received: "
            f"{type(model).__name__}."
        )
    found = {}
    for task in task_names:
        pattern = re.compile(rf"^{re.escape(task)}_{kind}_(\d+)$")
        for layer in model.layers:
            match = pattern.match(layer.name)
            if match and isinstance(layer, layer_class):
                found.setdefault(task, {})[int(match.group(1))] = layer
    if not found:
        raise ValueError(
            f"Model '{model.name}' has no task {kind} layers ('<task>_{kind}_<i>'). "
            f"Only models built by {builders} have them."
        )
    return found


def _run(model, outputs: dict, x, batch_size: int) -> dict:
    probe = keras.Model(model.input, outputs)
    result = probe.predict(x, batch_size=batch_size, verbose=0)
    return {key: np.asarray(value) for key, value in result.items()}
