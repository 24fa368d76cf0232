"""Hard parameter sharing: one shared trunk, one head per task.

Caruana, "Multitask Learning", Machine Learning 1997: the classic MTL
architecture, where tasks share every hidden layer of the trunk.
"""

from __future__ import annotations

from collections.abc import Sequence

from kerasmtl.model import MultiTaskModel
from kerasmtl.tasks import Task
from kerasmtl.weighting import LossWeighting


def hard_sharing(
    inputs,
    shared,
    tasks: Sequence[Task],
    weighting: LossWeighting | None = None,
    name: str | None = None,
    test_time_flips: int = 1,
    shared_features=None,
) -> MultiTaskModel:
    """Builds a hard-sharing multi-task model on a shared feature tensor.

    Args:
        inputs: Keras input tensor(s) of the model.
        shared: the shared features, a Keras tensor computed from `inputs`; or a
            dict mapping each task name to its own feature tensor, for
            task-specific layers built by hand.
        tasks: the tasks; each builds its head (and its `hidden_layers`) on the
            shared features.
        weighting: how the tasks combine: a loss weighting or a gradient
            balancer (e.g. `mtl.weighting.PCGrad(rep_grad=True)`). Defaults to
            `Equal()`.
        name: the model's name.
        test_time_flips: int. 1, 2 or 4: flips of the image inputs that
            `predict` and the exported SavedModel average over (see
            `MultiTaskModel`).
            Defaults to `1`.
        shared_features: Keras tensor or list of them. With a dict `shared`,
            the trunk output(s) that the per-task features are computed
            from, which a `rep_grad=True` balancer differentiates against
            (e.g. `[fpn_level, stride2_skip]` when one task's features add a
            decoder of its own). Defaults to `shared` itself when it is one
            tensor; with a dict and no `shared_features`, no rep-grad
            balancer can train the model.

    Returns:
        A `MultiTaskModel` with one output per task.

    Examples:

    >>> import keras, kerasmtl as mtl
    >>> x = keras.Input((8,))
    >>> h = keras.layers.Dense(16, activation="relu")(x)
    >>> tasks = [mtl.tasks.Classification("a", 3), mtl.tasks.Regression("b")]
    >>> model = mtl.sharing.hard_sharing(x, h, tasks)
    >>> sorted(model.output_names)
    ['a', 'b']
    """
    tasks = list(tasks)
    if isinstance(shared, dict):
        missing = [t.name for t in tasks if t.name not in shared]
        if missing:
            raise ValueError(
                f"`shared` is a dict but has no features for task(s) {missing}. "
                "Give one feature tensor per task, or a single shared tensor."
            )
        outputs = {t.name: t.build_head(shared[t.name]) for t in tasks}
        features = shared_features  # no one shared representation unless given
    else:
        outputs = {t.name: t.build_head(shared) for t in tasks}
        # What a rep-grad balancer differentiates against.
        features = shared if shared_features is None else shared_features
    return MultiTaskModel(
        inputs,
        outputs,
        name=name,
        tasks=tasks,
        weighting=weighting,
        shared_features=features,
        test_time_flips=test_time_flips,
    )
