"""Mixtures of experts with per-task gates: MMoE, CGC and PLE.

- `mmoe`: Ma, Zhao, Yi, Chen, Hong and Chi, "Modeling Task Relationships in
  Multi-task Learning with Multi-gate Mixture-of-Experts", KDD 2018. All
  experts are shared; each task mixes them with its own softmax gate.
- `cgc` and `ple`: Tang, Liu, Zhao and Gong, "Progressive Layered Extraction
  (PLE): A Novel Multi-Task Learning (MTL) Model for Personalized
  Recommendations", RecSys 2020. CGC (Customized Gate Control) gives each task
  experts of its own beside the shared ones, and each task's gate mixes its own
  and the shared experts. PLE stacks CGC levels; on every level but the last a
  shared gate mixes all experts into the input of the next level's shared
  experts.

Experts are any Keras layers or models (MLPs for tabular data, conv stacks for
images, recurrent or attention blocks for sequences); gates read the same
features as the experts (see `ExpertGate` for per-position gates on
sequences). Gate `g` of task `t` at level `l` is the layer `"<t>_gate_<l>"`
(`"shared_gate_<l>"` for PLE's shared gates), and
`kerasmtl.sharing.gate_weights` returns their weights for a batch. Written from
the papers, not from the official code (the papers' towers are the tasks'
`hidden_layers` or `tower_layers` here).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import keras

from kerasmtl.layers.expert_gate import ExpertGate
from kerasmtl.model import MultiTaskModel
from kerasmtl.sharing.layer_names import (
    check_count,
    check_layer_names,
    make_layers,
    model_features,
    tower,
)
from kerasmtl.tasks import Task

Experts = Sequence[keras.layers.Layer] | Callable[[], keras.layers.Layer]


def mmoe(
    inputs,
    experts: Experts,
    tasks: Sequence[Task],
    *,
    num_experts: int | None = None,
    features=None,
    tower_layers: Sequence = (),
    weighting=None,
    name: str | None = None,
) -> MultiTaskModel:
    """Builds a Multi-gate Mixture-of-Experts model (MMoE, Ma et al. 2018).

    Args:
        inputs: Keras input tensor(s) of the model.
        experts: list of Keras layers/models, each called on `features`, or a
            factory `() -> layer` called `num_experts` times (new layers each
            call). All experts must output the same shape.
        tasks: the tasks; each gets a softmax gate over all experts, then its
            tower and head.
        num_experts: int >= 1 or None. Number of experts made by a factory;
            leave unset with a list. Defaults to `None`.
        features: Keras tensor or None. What the experts and gates read.
            Defaults to `None` (`inputs`, which must then be a single tensor).
        tower_layers: sequence of int or `keras.layers.Layer`. Per-task tower on
            the gated mixture (ints are Dense+ReLU widths; layers are copied for
            each task). Defaults to `()`.
        weighting: passed to `MultiTaskModel` (a `LossWeighting` or anything
            it accepts). Defaults to `None` (equal weights).
        name: str or None. The model's name.

    Returns:
        A `MultiTaskModel` with gate layers `"<task>_gate_0"`.

    Examples:

    >>> import keras, kerasmtl as mtl
    >>> x = keras.Input((8,))
    >>> tasks = [mtl.tasks.Classification("a", 3), mtl.tasks.Regression("b")]
    >>> model = mtl.sharing.mmoe(
    ...     x, lambda: keras.layers.Dense(4, activation="relu"), tasks,
    ...     num_experts=3)
    >>> model.get_layer("a_gate_0").num_experts
    3
    """
    builder = "mmoe"
    tasks = list(tasks)
    x = model_features(builder, inputs, features)
    expert_layers = make_layers(builder, "experts", experts, num_experts, "num_experts")
    expert_outputs = [expert(x) for expert in expert_layers]
    names = [layer.name for layer in expert_layers]
    mixed = {}
    for task in tasks:
        gate = ExpertGate(len(expert_layers), names, name=f"{task.name}_gate_0")
        mixed[task.name] = gate([x, *expert_outputs])[0]
    return _finish(
        builder, "experts", inputs, mixed, tasks, tower_layers, weighting, name
    )


def cgc(
    inputs,
    shared_experts: Experts,
    task_experts: Experts | Mapping[str, Experts],
    tasks: Sequence[Task],
    *,
    num_shared_experts: int | None = None,
    num_task_experts: int | None = None,
    features=None,
    tower_layers: Sequence = (),
    weighting=None,
    name: str | None = None,
) -> MultiTaskModel:
    """Builds a Customized Gate Control model (CGC, Tang et al. 2020).

    Each task's gate mixes the task's own experts and the shared experts; its
    weights list the task's experts first, then the shared ones.

    Args:
        inputs: Keras input tensor(s) of the model.
        shared_experts: list of Keras layers/models or a factory `() -> layer`
            (called `num_shared_experts` times).
        task_experts: a factory `() -> layer` (called `num_task_experts` times
            per task), or a dict mapping every task name to its own list of
            layers (or factory).
        tasks: the tasks.
        num_shared_experts: int >= 1 or None. Count for a factory. Defaults
            to `None`.
        num_task_experts: int >= 1 or None. Count per task for a factory.
            Defaults to `None`.
        features: Keras tensor or None. What experts and gates read. Defaults
            to `None` (`inputs`).
        tower_layers: sequence of int or layers; per-task tower (see `mmoe`).
            Defaults to `()`.
        weighting: passed to `MultiTaskModel`. Defaults to `None`.
        name: str or None. The model's name.

    Returns:
        A `MultiTaskModel` with gate layers `"<task>_gate_0"`.

    Examples:

    >>> import keras, kerasmtl as mtl
    >>> x = keras.Input((8,))
    >>> tasks = [mtl.tasks.Classification("a", 3), mtl.tasks.Regression("b")]
    >>> expert = lambda: keras.layers.Dense(4, activation="relu")
    >>> model = mtl.sharing.cgc(x, expert, expert, tasks,
    ...     num_shared_experts=2, num_task_experts=1)
    >>> model.get_layer("b_gate_0").num_experts
    3
    """
    return _progressive(
        "cgc", inputs, shared_experts, task_experts, tasks, 1,
        num_shared_experts, num_task_experts, features, tower_layers, weighting, name,
    )


def ple(
    inputs,
    shared_experts: Callable[[], keras.layers.Layer],
    task_experts: Callable[[], keras.layers.Layer] | Mapping[str, Callable],
    tasks: Sequence[Task],
    *,
    num_levels: int = 2,
    num_shared_experts: int | None = None,
    num_task_experts: int | None = None,
    features=None,
    tower_layers: Sequence = (),
    weighting=None,
    name: str | None = None,
) -> MultiTaskModel:
    """Builds a Progressive Layered Extraction model (PLE, Tang et al. 2020).

    `num_levels` CGC levels. At level `l`, task `t`'s experts and gate read
    task `t`'s mixture from level `l - 1`; the shared experts read the output
    of the shared gate `"shared_gate_<l-1>"`, which mixes all experts of that
    level (task experts in task order, then shared). The last level has no
    shared gate.

    Args:
        inputs: Keras input tensor(s) of the model.
        shared_experts: factory `() -> layer`, called `num_shared_experts`
            times per level (a list of layers only when `num_levels=1`).
        task_experts: factory `() -> layer`, called `num_task_experts` times per
            task and level, or a dict of one factory per task.
        tasks: the tasks.
        num_levels: int >= 1. Number of extraction levels. Defaults to `2`.
        num_shared_experts: int >= 1. Shared experts per level.
        num_task_experts: int >= 1. Experts per task and level.
        features: Keras tensor or None. What the first level reads. Defaults
            to `None` (`inputs`).
        tower_layers: sequence of int or layers; per-task tower (see `mmoe`).
            Defaults to `()`.
        weighting: passed to `MultiTaskModel`. Defaults to `None`.
        name: str or None. The model's name.

    Returns:
        A `MultiTaskModel` with gate layers `"<task>_gate_<level>"` and
        `"shared_gate_<level>"`.

    Examples:

    >>> import keras, kerasmtl as mtl
    >>> x = keras.Input((8,))
    >>> tasks = [mtl.tasks.Classification("a", 3), mtl.tasks.Regression("b")]
    >>> expert = lambda: keras.layers.Dense(4, activation="relu")
    >>> model = mtl.sharing.ple(x, expert, expert, tasks, num_levels=2,
    ...     num_shared_experts=1, num_task_experts=1)
    >>> model.get_layer("shared_gate_0").num_experts
    3
    """
    check_count("ple", "num_levels", num_levels)
    return _progressive(
        "ple", inputs, shared_experts, task_experts, tasks, num_levels,
        num_shared_experts, num_task_experts, features, tower_layers, weighting, name,
    )


def _progressive(
    builder, inputs, shared_experts, task_experts, tasks, num_levels,
    num_shared, num_task, features, tower_layers, weighting, name,
):
    tasks = list(tasks)
    x = model_features(builder, inputs, features)
    if isinstance(task_experts, Mapping):
        missing = [t.name for t in tasks if t.name not in task_experts]
        unknown = sorted(set(task_experts) - {t.name for t in tasks})
        if missing or unknown:
            raise ValueError(
                f"{builder}: `task_experts` must have one entry per task "
                f"{[t.name for t in tasks]}; missing {missing}, unknown {unknown}."
            )
        task_specs = {
            t.name: (f"task_experts['{t.name}']", task_experts[t.name]) for t in tasks
        }
    else:
        task_specs = {t.name: ("task_experts", task_experts) for t in tasks}
    if num_levels > 1:
        specs = [("shared_experts", shared_experts), *task_specs.values()]
        for argument, spec in specs:
            if not callable(spec) or isinstance(spec, keras.layers.Layer):
                raise ValueError(
                    f"{builder}: with num_levels={num_levels}, `{argument}` must be "
                    "a factory `() -> layer`: every level needs new experts. "
                    f"Received: {spec!r}"
                )
    task_inputs = {t.name: x for t in tasks}
    shared_input = x
    for level in range(num_levels):
        shared_layers = make_layers(
            builder, "shared_experts", shared_experts, num_shared, "num_shared_experts"
        )
        shared_outputs = [e(shared_input) for e in shared_layers]
        mixed, all_layers, all_outputs = {}, [], []
        for task in tasks:
            argument, spec = task_specs[task.name]
            own_layers = make_layers(
                builder, argument, spec, num_task, "num_task_experts"
            )
            own_outputs = [e(task_inputs[task.name]) for e in own_layers]
            layers = own_layers + shared_layers
            gate = ExpertGate(
                len(layers), [e.name for e in layers], name=f"{task.name}_gate_{level}"
            )
            mixed[task.name] = gate([task_inputs[task.name], *own_outputs,
                                     *shared_outputs])[0]
            all_layers += own_layers
            all_outputs += own_outputs
        if level < num_levels - 1:
            layers = all_layers + shared_layers
            gate = ExpertGate(
                len(layers), [e.name for e in layers], name=f"shared_gate_{level}"
            )
            shared_input = gate([shared_input, *all_outputs, *shared_outputs])[0]
        task_inputs = mixed
    return _finish(
        builder, "shared_experts/task_experts", inputs, task_inputs, tasks,
        tower_layers, weighting, name,
    )


def _finish(builder, argument, inputs, mixed, tasks, tower_layers, weighting, name):
    check_layer_names(builder, inputs, mixed.values(), tasks, argument)
    outputs = {}
    for task in tasks:
        outputs[task.name] = task.build_head(tower(task.name, tower_layers, mixed[task.name]))
    return MultiTaskModel(inputs, outputs, name=name, tasks=tasks, weighting=weighting)
