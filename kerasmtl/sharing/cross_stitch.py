"""Cross-stitch networks: one tower per task, mixed at chosen depths.

Misra, Shrivastava, Gupta and Hebert, "Cross-stitch Networks for Multi-task
Learning", CVPR 2016. Each task has its own tower; after the chosen layers a
`CrossStitch` unit replaces every tower's activation by a learned linear
combination of all towers' activations at that depth, so the network learns how
much to share at each depth. Written from the paper (the official code is
Caffe); the unit's granularity and initialisation are in `CrossStitch`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import keras

from kerasmtl.layers.cross_stitch_unit import CrossStitch
from kerasmtl.model import MultiTaskModel
from kerasmtl.sharing.layer_names import (
    check_layer_names,
    model_features,
    takes_inputs,
)
from kerasmtl.tasks import Task

Towers = (
    Callable[[], Sequence[keras.layers.Layer] | keras.layers.Layer]
    | Mapping[str, Sequence[keras.layers.Layer]]
    | Sequence[Sequence[keras.layers.Layer]]
)


def cross_stitch(
    inputs,
    towers: Towers,
    tasks: Sequence[Task],
    *,
    stitch_after: Sequence[int] | None = None,
    self_weight: float = 0.9,
    per_channel: bool = False,
    features=None,
    weighting=None,
    name: str | None = None,
) -> MultiTaskModel:
    """Builds a cross-stitch network: per-task towers with learned mixing.

    Args:
        inputs: Keras input tensor(s) of the model.
        towers: a factory `() -> list of layers` (or `() -> layer`), called
            once per task (it must create new layers on every call); or the
            towers themselves, a
            dict `{task_name: list of layers}` or a list of layer lists in task
            order. Every tower has the same number of layers, and the outputs
            at each stitched depth have the same shape in every tower. A
            function of the inputs (`f(inputs) -> features`, which
            `soft_sharing` also takes) is refused: the units are stitched
            between the layers, so they must be given one by one.
        tasks: the tasks (at least two); task `t`'s head is built on tower `t`.
        stitch_after: sequence of int or None. Depths (0-based layer indices,
            in `[0, depth - 1]`) after which a cross-stitch unit
            `"cross_stitch_<i>"` mixes the towers. Defaults to `None` (after
            every layer).
        self_weight: float in [0, 1]. Initial weight of a tower's own
            activations (the paper's `alpha_S`; `1.0` starts from independent
            towers). Defaults to `0.9`.
        per_channel: bool. One mixing matrix per channel instead of per layer.
            Defaults to `False`.
        features: Keras tensor or None. What the towers read. Defaults to
            `None` (`inputs`, which must then be a single tensor).
        weighting: passed to `MultiTaskModel`. Defaults to `None`.
        name: str or None. The model's name.

    Returns:
        A `MultiTaskModel`.

    Examples:

    >>> import keras, kerasmtl as mtl
    >>> x = keras.Input((8,))
    >>> tower = lambda: [keras.layers.Dense(4, activation="relu"),
    ...                  keras.layers.Dense(4, activation="relu")]
    >>> tasks = [mtl.tasks.Classification("a", 3), mtl.tasks.Regression("b")]
    >>> model = mtl.sharing.cross_stitch(x, tower, tasks, stitch_after=[0])
    >>> print(model.get_layer("cross_stitch_0").alpha.numpy())
    [[0.9 0.1]
     [0.1 0.9]]
    """
    builder = "cross_stitch"
    tasks = list(tasks)
    if len(tasks) < 2:
        raise ValueError(
            f"cross_stitch needs at least two tasks; received {len(tasks)}. Use "
            "hard_sharing for a single task."
        )
    x = model_features(builder, inputs, features)
    layer_lists = _tower_layers(towers, tasks)
    depth = len(layer_lists[0])
    if stitch_after is None:
        stitch_after = range(depth)
    depths = sorted(set(stitch_after)) if _ints(stitch_after) else None
    if depths is None or (depths and not 0 <= depths[0] <= depths[-1] < depth):
        raise ValueError(
            "cross_stitch: invalid value for argument `stitch_after`. Expected layer "
            f"indices in [0, {depth - 1}] (the towers have {depth} layers). "
            f"Received: stitch_after={stitch_after!r}"
        )
    # Made before any tower layer is called: a bad `self_weight` must not leave
    # half-built graphs behind.
    units = {
        i: CrossStitch(
            self_weight=self_weight, per_channel=per_channel, name=f"cross_stitch_{i}"
        )
        for i in depths
    }
    activations = [x] * len(tasks)
    for i in range(depth):
        activations = [layers[i](a) for layers, a in zip(layer_lists, activations)]
        if i in units:
            activations = units[i](activations)
    check_layer_names(builder, inputs, activations, tasks, "towers")
    outputs = {t.name: t.build_head(a) for t, a in zip(tasks, activations)}
    return MultiTaskModel(inputs, outputs, name=name, tasks=tasks, weighting=weighting)


def _tower_layers(towers, tasks) -> list[list]:
    names = [t.name for t in tasks]
    if callable(towers) and not isinstance(towers, keras.layers.Layer):
        if takes_inputs("cross_stitch", "towers", towers):
            raise ValueError(
                "cross_stitch: `towers` takes an argument (a function of the "
                "inputs, `f(inputs) -> features`, as soft_sharing takes), but "
                "cross_stitch stitches units between the towers' layers, so it "
                "needs the layers themselves: pass a factory with no argument "
                "that returns a new list of layers, e.g. `lambda: "
                "[keras.layers.Dense(64, activation='relu'), "
                f"keras.layers.Dense(64, activation='relu')]`. Received: {towers!r}"
            )
        layer_lists = [towers() for _ in tasks]
        layer_lists = [
            [layers] if isinstance(layers, keras.layers.Layer) else layers
            for layers in layer_lists
        ]
    elif isinstance(towers, Mapping):
        if set(towers) != set(names):
            raise ValueError(
                f"cross_stitch: `towers` is a dict with keys {sorted(towers)}; it "
                f"needs exactly one tower per task {names}."
            )
        layer_lists = [towers[n] for n in names]
    elif isinstance(towers, Sequence) and len(towers) == len(tasks):
        layer_lists = list(towers)
    else:
        raise ValueError(
            "cross_stitch: invalid value for argument `towers`. Expected a factory "
            "`() -> list of layers`, a dict of one layer list per task, or a list "
            f"of {len(tasks)} layer lists (one per task). Received: {towers!r}"
        )
    layer_lists = [
        list(layers) if isinstance(layers, Sequence) else layers for layers in layer_lists
    ]
    seen = set()
    for name, layers in zip(names, layer_lists):
        if not isinstance(layers, list) or not layers or not all(map(callable, layers)):
            raise ValueError(
                f"cross_stitch: the tower of task '{name}' must be a non-empty list "
                f"of Keras layers. Received: {layers!r}"
            )
        if len(layers) != len(layer_lists[0]):
            raise ValueError(
                f"cross_stitch: the tower of task '{names[0]}' has "
                f"{len(layer_lists[0])} layers, the tower of task '{name}' has "
                f"{len(layers)}. Every tower needs the same depth."
            )
        if any(id(layer) in seen for layer in layers):
            raise ValueError(
                f"cross_stitch: the tower of task '{name}' reuses a layer of another "
                "tower. Each task needs its own layers (the factory must create new "
                "layers on every call); cross-stitch units do the sharing."
            )
        seen.update(id(layer) for layer in layers)
    return layer_lists


def _ints(values) -> bool:
    try:
        values = list(values)
    except TypeError:
        return False
    return all(isinstance(v, int) and not isinstance(v, bool) for v in values)
