"""Multi-Task Attention Network (MTAN): task attention over shared features.

Liu, Johns and Davison, "End-to-End Multi-Task Learning with Attention", CVPR
2019. One shared stack of convolutional blocks computes a global feature pool;
each task has a soft-attention module at every block that selects, with a
sigmoid mask, the shared features it needs (see `TaskAttention`). Task `t`'s
module at block `j` is the layer `"<t>_attention_<j>"`, and
`kerasmtl.sharing.attention_maps` returns the masks for a batch. Written from
the paper (its official code, lorenmt/mtan, adds a BN before the sigmoid; we
follow the paper's text).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras

from kerasmtl.layers.task_attention import TaskAttention
from kerasmtl.model import MultiTaskModel
from kerasmtl.sharing.layer_names import (
    check_layer_names,
    model_features,
    takes_inputs,
)
from kerasmtl.tasks import Task

_POOLING = {"avg": keras.layers.GlobalAveragePooling2D, "max": keras.layers.GlobalMaxPooling2D}


def mtan(
    inputs,
    shared_blocks: Sequence[keras.layers.Layer]
    | Callable[[], Sequence[keras.layers.Layer]],
    tasks: Sequence[Task],
    *,
    attention_channels: int | None = None,
    pooling: str | None = "avg",
    features=None,
    weighting=None,
    name: str | None = None,
) -> MultiTaskModel:
    """Builds an MTAN: shared conv blocks, per-task attention at every block.

    Args:
        inputs: Keras input tensor(s) of the model.
        shared_blocks: list of Keras layers/models, applied in order to the
            image features, or a factory `() -> list of layers` (called once;
            the form `cross_stitch` takes). Each block maps a feature map
            `(batch, height, width, channels)` to another (e.g. conv -> BN ->
            ReLU -> pooling) and may reduce the resolution by an integer
            factor.
        tasks: the tasks; task `t`'s head reads its attended features of the
            last block.
        attention_channels: int or None. Hidden channels of the attention
            masks. Defaults to `None` (each block's channels).
        pooling: `"avg"`, `"max"` or None. Global pooling of a task's attended
            features before its head; None keeps the feature map (for
            dense-prediction heads). Defaults to `"avg"`.
        features: Keras tensor or None. The image features the first block
            reads. Defaults to `None` (`inputs`, which must then be a single
            tensor).
        weighting: passed to `MultiTaskModel`. Defaults to `None`.
        name: str or None. The model's name.

    Returns:
        A `MultiTaskModel` with attention layers `"<task>_attention_<block>"`.

    Examples:

    >>> import keras, kerasmtl as mtl
    >>> x = keras.Input((16, 16, 3))
    >>> blocks = [keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
    ...           keras.layers.Conv2D(8, 3, strides=2, padding="same")]
    >>> tasks = [mtl.tasks.Classification("a", 3), mtl.tasks.Regression("b")]
    >>> model = mtl.sharing.mtan(x, blocks, tasks)
    >>> tuple(model.get_layer("a_attention_1").output[1].shape)
    (None, 8, 8, 8)
    """
    builder = "mtan"
    tasks = list(tasks)
    x = model_features(builder, inputs, features)
    if len(x.shape) != 4:
        raise ValueError(
            f"mtan works on image features (batch, height, width, channels); the "
            f"features have shape {tuple(x.shape)}. Pass `features=` a rank-4 "
            "feature map, or use mmoe/hard_sharing for other inputs."
        )
    if pooling not in _POOLING and pooling is not None:
        raise ValueError(
            "mtan: invalid value for argument `pooling`. Expected 'avg', 'max' or "
            f"None. Received: pooling={pooling!r}"
        )
    if callable(shared_blocks) and not isinstance(shared_blocks, keras.layers.Layer):
        if takes_inputs(builder, "shared_blocks", shared_blocks):
            raise ValueError(
                "mtan: `shared_blocks` takes an argument (a function of the "
                "inputs, `f(inputs) -> features`), but mtan attends to the output "
                "of every block, so it needs the blocks themselves: pass a list of "
                "layers or a factory with no argument that returns one, e.g. "
                "`lambda: [keras.layers.Conv2D(16, 3, padding='same'), "
                f"keras.layers.Conv2D(32, 3, strides=2, padding='same')]`. Received: "
                f"{shared_blocks!r}"
            )
        shared_blocks = shared_blocks()
    blocks = list(shared_blocks) if isinstance(shared_blocks, Sequence) else None
    if not blocks or not all(callable(b) for b in blocks):
        raise ValueError(
            "mtan: `shared_blocks` must be a non-empty list of Keras layers or "
            "models (or a factory `() -> list of layers`). Received: "
            f"{shared_blocks!r}"
        )
    # Made before any block is called: a bad `attention_channels` must not
    # leave half-built graphs behind.
    modules = {
        task.name: [
            TaskAttention(attention_channels, name=f"{task.name}_attention_{j}")
            for j in range(len(blocks))
        ]
        for task in tasks
    }
    shared = []
    for j, block in enumerate(blocks):
        x = block(x)
        if len(x.shape) != 4:
            label = getattr(block, "name", block)
            raise ValueError(
                f"mtan: shared block {j} ({label}) outputs shape "
                f"{tuple(x.shape)}; every block must output an image feature map "
                "(batch, height, width, channels)."
            )
        shared.append(x)
    attended = {}
    for task in tasks:
        previous = None
        for module, p in zip(modules[task.name], shared):
            previous = module([p] if previous is None else [p, previous])[0]
        attended[task.name] = previous
    check_layer_names(builder, inputs, attended.values(), tasks, "shared_blocks")
    outputs = {}
    for task in tasks:
        y = attended[task.name]
        if pooling is not None:
            y = _POOLING[pooling](name=f"{task.name}_pooling")(y)
        outputs[task.name] = task.build_head(y)
    return MultiTaskModel(inputs, outputs, name=name, tasks=tasks, weighting=weighting)
