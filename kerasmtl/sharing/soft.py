"""Soft parameter sharing: one tower per task, weights pulled together.

Duong, Cohn, Bird and Cook, "Low Resource Dependency Parsing: Cross-lingual
Parameter Sharing in a Neural Network Parser", ACL 2015: each task has its own
parameters and an L2 penalty on the distance between corresponding parameters
keeps them close. Reported as its own loss term, `loss/soft_sharing`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras

from kerasmtl.model import MultiTaskModel
from kerasmtl.sharing.layer_names import apply_layers, takes_inputs
from kerasmtl.tasks import Task
from kerasmtl.weighting import LossWeighting


def soft_sharing(
    inputs,
    tower_fn: Callable,
    tasks: Sequence[Task],
    penalty: float = 1e-3,
    weighting: LossWeighting | None = None,
    name: str | None = None,
) -> MultiTaskModel:
    """Builds one tower per task, kept close by an L2 penalty on their weights.

    Args:
        inputs: Keras input tensor(s) of the model.
        tower_fn: callable, called once per task, that creates *new* layers
            on every call, in either form: `tower_fn(inputs) -> features`, or a
            factory `tower_fn() -> layer or list of layers` (the form
            `cross_stitch` takes), whose layers are applied to `inputs` in
            order. The form is read from the signature. Every call must build
            the same architecture: the i-th layer with weights of each tower
            is paired with the i-th of the others.
        tasks: the tasks; task t's head is built on tower t.
        penalty: float >= 0. Strength of the penalty
            `penalty * sum_{t<u} ||W_t - W_u||^2` over paired weights.
            Defaults to `1e-3`.
        weighting: how task losses combine. Defaults to `Equal()`.
        name: the model's name.

    Returns:
        A `MultiTaskModel` with one tower and one output per task.

    Examples:

    >>> import keras, kerasmtl as mtl
    >>> x = keras.Input((8,))
    >>> tower = lambda t: keras.layers.Dense(4, activation="relu")(t)
    >>> tasks = [mtl.tasks.Classification("a", 3), mtl.tasks.Regression("b")]
    >>> model = mtl.sharing.soft_sharing(x, tower, tasks, penalty=0.01)
    >>> len(model.soft_sharing["groups"])
    1

    The same towers from a factory of layers, as `cross_stitch` takes them:

    >>> factory = lambda: [keras.layers.Dense(4, activation="relu")]
    >>> model = mtl.sharing.soft_sharing(x, factory, tasks, penalty=0.01)
    >>> len(model.soft_sharing["groups"])
    1
    """
    tasks = list(tasks)
    if not penalty >= 0:
        raise ValueError(
            "Invalid value for argument `penalty`. Expected a float >= 0. "
            f"Received: penalty={penalty}"
        )
    if len(tasks) < 2:
        raise ValueError(
            f"soft_sharing needs at least two tasks; received {len(tasks)}. "
            "Use hard_sharing for a single task."
        )
    if not callable(tower_fn):
        raise ValueError(
            "soft_sharing: invalid value for argument `tower_fn`. Expected a "
            "callable that makes new layers on every call: `tower_fn(inputs) -> "
            "features` or a factory `tower_fn() -> list of layers`. Received: "
            f"{tower_fn!r}"
        )
    # A layer object is a function of the inputs (refused below as shared).
    of_inputs = isinstance(tower_fn, keras.layers.Layer) or takes_inputs(
        "soft_sharing", "tower_fn", tower_fn
    )
    towers, outputs = [], {}
    for task in tasks:
        if of_inputs:
            features = tower_fn(inputs)
        else:
            features = apply_layers("soft_sharing", "tower_fn", tower_fn(), inputs)
        towers.append(_weighted_layers(inputs, features))
        outputs[task.name] = task.build_head(features)

    reference = towers[0]
    seen = {id(layer) for layer in reference}
    for task, tower in zip(tasks[1:], towers[1:]):
        if any(id(layer) in seen for layer in tower):
            raise ValueError(
                f"The tower of task '{task.name}' reuses layers of another tower. "
                "`tower_fn` must create new layers on every call (soft sharing "
                "gives each task its own weights; for shared layers use "
                "hard_sharing)."
            )
        seen.update(id(layer) for layer in tower)
        shapes = [[tuple(w.shape) for w in layer.trainable_weights] for layer in tower]
        expected = [
            [tuple(w.shape) for w in layer.trainable_weights] for layer in reference
        ]
        if shapes != expected:
            raise ValueError(
                f"`tower_fn` built different architectures: the tower of task "
                f"'{tasks[0].name}' has weight shapes {expected}, the tower of task "
                f"'{task.name}' has {shapes}. Every call must build the same layers."
            )
    groups = [[layer.name for layer in layers] for layers in zip(*towers)]
    return MultiTaskModel(
        inputs,
        outputs,
        name=name,
        tasks=tasks,
        weighting=weighting,
        soft_sharing={"penalty": float(penalty), "groups": groups},
    )


def _weighted_layers(inputs, features) -> list:
    """Layers with trainable weights between `inputs` and `features`, in order."""
    tower = keras.Model(inputs, features)
    return [layer for layer in tower.layers if layer.trainable_weights]
