"""Learning to branch: a tree of layers whose branching is learned.

Guo, Lee and Ulbricht, "Learning to Branch for Multi-Task Learning", ICML
2020. The network is a tree searched by gradient descent: level `l` holds
`branches[l]` nodes (each one block of layers), every node of a level reads
one node of the level before, and every task's head reads one node of the
last level. Which parent a child reads is a categorical choice with learned
logits, relaxed by Gumbel-softmax: in training the child reads
`sum_i d_i x_i` with `d = softmax((logits + g) / tau)` and fresh Gumbel noise
`g` each step; a falling temperature `tau` (`BranchTemperature`) makes `d`
nearly one-hot. At inference every child reads its most likely parent,
so the trained model is the tree that was found (`branching_tree` says which).

Written from the paper (the official code was not released). Departures:
the logits and the network's weights are trained together by the model's
optimizer (the paper updates them in alternating steps, on the training
data too); the paper retrains the found tree from scratch, which here is a
new model built with `branches` equal to the tree's shape (the nodes no
child reads are pruned by their weights going unused); and under
`tf.distribute` each replica draws its own Gumbel noise (as it would
dropout masks).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import keras
from keras import ops

from kerasmtl.model import MultiTaskModel
from kerasmtl.sharing.layer_names import check_layer_names, model_features, takes_inputs
from kerasmtl.tasks import Task

_NODE_GATE = re.compile(r"branch_(\d+)_(\d+)")
Blocks = Callable[[], keras.layers.Layer] | Sequence[Callable[[], keras.layers.Layer]]


@keras.saving.register_keras_serializable(package="kerasmtl")
class BranchGate(keras.layers.Layer):
    """A child node's choice of parent, relaxed by Gumbel-softmax.

    Formula:
    ```
    training:   d = softmax((logits + g) / temperature),  g_i = -log(-log u_i)
    inference:  d = one_hot(argmax(logits))
    output = sum_i d_i * parents[i]
    ```
    with `u_i ~ U(0, 1)` drawn once per call (per step, not per example).

    Args:
        num_parents: int >= 1. How many parents the child chooses among.
        temperature: float > 0. The starting temperature (a non-trainable
            variable that `BranchTemperature` lowers). Defaults to `1.0`.
        seed: int or None. Seed of the Gumbel noise.

    Examples:

    >>> gate = BranchGate(2)
    >>> out = gate([ops.ones((1, 3)), ops.zeros((1, 3))])  # equal logits: the first
    >>> ops.convert_to_numpy(out).tolist()
    [[1.0, 1.0, 1.0]]
    """

    def __init__(self, num_parents: int, temperature: float = 1.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(num_parents, bool) or not isinstance(num_parents, int) or (
            num_parents < 1
        ):
            raise ValueError(
                "Invalid value for argument `num_parents`. Expected an int >= 1. "
                f"Received: num_parents={num_parents!r}"
            )
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or (
            not temperature > 0 or not math.isfinite(temperature)
        ):
            raise ValueError(
                "Invalid value for argument `temperature`. Expected a finite float "
                f"> 0. Received: temperature={temperature!r}"
            )
        self.num_parents = num_parents
        self.initial_temperature = float(temperature)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.logits = self.add_weight(
            shape=(num_parents,), initializer="zeros", name="logits"
        )
        self.temperature = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(self.initial_temperature),
            trainable=False,
            name="temperature",
        )

    def call(self, parents, training=False):
        parents = list(parents) if isinstance(parents, (list, tuple)) else [parents]
        if len(parents) != self.num_parents:
            raise ValueError(
                f"BranchGate '{self.name}' chooses among {self.num_parents} parents "
                f"but was called on {len(parents)}."
            )
        weights = self.choice(training)
        stacked = ops.stack([ops.cast(p, self.compute_dtype) for p in parents], axis=0)
        weights = ops.cast(weights, self.compute_dtype)
        return ops.tensordot(weights, stacked, axes=1)

    def choice(self, training=False):
        """`[num_parents]` weights of the parents: relaxed in training,
        one-hot otherwise."""
        logits = ops.convert_to_tensor(self.logits)
        if self.num_parents == 1:  # no choice to make
            return ops.ones((1,), logits.dtype)
        if not training:
            return ops.one_hot(ops.argmax(logits), self.num_parents)
        uniform = keras.random.uniform(
            (self.num_parents,), minval=1e-10, maxval=1.0, seed=self.seed_generator
        )
        gumbel = -ops.log(-ops.log(uniform))
        return ops.softmax((logits + gumbel) / self.temperature)

    def probabilities(self):
        """`softmax(logits)`: how likely each parent is."""
        return ops.softmax(ops.convert_to_tensor(self.logits))

    def compute_output_shape(self, parents_shape):
        return parents_shape[0] if isinstance(parents_shape, list) else parents_shape

    def get_config(self):
        return {
            **super().get_config(),
            "num_parents": self.num_parents,
            "temperature": self.initial_temperature,
            "seed": self.seed,
        }


class BranchTemperature(keras.callbacks.Callback):
    """Lowers every `BranchGate`'s temperature geometrically over training.

    At the start of epoch `e` (0-based) of `epochs`, the temperature is
    `start * (end / start) ** (e / (epochs - 1))`: `start` in the first
    epoch, `end` in the last and after.

    Args:
        start: float > 0. Defaults to `5.0`.
        end: float > 0. Defaults to `0.1`.
        epochs: int >= 1. Epochs over which to anneal.
    """

    def __init__(self, epochs: int, start: float = 5.0, end: float = 0.1):
        super().__init__()
        for name, value in (("start", start), ("end", end)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                value > 0
            ):
                raise ValueError(
                    f"Invalid value for argument `{name}`. Expected a float > 0. "
                    f"Received: {name}={value!r}"
                )
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(
                "Invalid value for argument `epochs`. Expected an int >= 1. "
                f"Received: epochs={epochs!r}"
            )
        self.start, self.end, self.epochs = float(start), float(end), epochs

    def temperature(self, epoch: int) -> float:
        progress = min(epoch / (self.epochs - 1), 1.0) if self.epochs > 1 else 1.0
        return self.start * (self.end / self.start) ** progress

    def on_epoch_begin(self, epoch, logs=None):
        value = self.temperature(epoch)
        for gate in _gates(self.model):
            gate.temperature.assign(value)


def learning_to_branch(
    inputs,
    blocks: Blocks,
    tasks: Sequence[Task],
    *,
    branches: Sequence[int],
    temperature: float = 5.0,
    features=None,
    weighting=None,
    seed: int | None = None,
    name: str | None = None,
) -> MultiTaskModel:
    """Builds a learning-to-branch tree (Guo et al., ICML 2020).

    Args:
        inputs: Keras input tensor(s) of the model.
        blocks: a factory `() -> layer` called once per node (new layers on
            every call), or one factory per level.
        tasks: the tasks (at least two); each head reads one node of the
            last level, through a gate `"<task>_branch"`.
        branches: sequence of ints >= 1. The number of nodes per level;
            level 0's nodes read the features, each later node chooses a
            parent in the level before through a gate
            `"branch_<level>_<node>"`. E.g. `(1, 2, 4)`: one shared block,
            then up to two, then up to four branches.
        temperature: float > 0. The gates' starting temperature; lower it
            during training with `BranchTemperature`. Defaults to `5.0`.
        features: Keras tensor or None. What level 0 reads. Defaults to
            `None` (`inputs`, which must then be a single tensor).
        weighting: passed to `MultiTaskModel`. Defaults to `None`.
        seed: int or None. Seed of the gates' Gumbel noise (gate `k` gets
            `seed + k`). Defaults to `None`.
        name: str or None. The model's name.

    Returns:
        A `MultiTaskModel`.

    Examples:

    >>> import keras, kerasmtl as mtl
    >>> x = keras.Input((8,))
    >>> tasks = [mtl.tasks.Classification("a", 3), mtl.tasks.Regression("b")]
    >>> block = lambda: keras.layers.Dense(4, activation="relu")
    >>> model = mtl.sharing.learning_to_branch(x, block, tasks, branches=(1, 2))
    >>> branching_tree(model)["a"]
    [0, 0]
    """
    builder = "learning_to_branch"
    tasks = list(tasks)
    if len(tasks) < 2:
        raise ValueError(
            f"{builder} needs at least two tasks; received {len(tasks)}. Use "
            "hard_sharing for a single task."
        )
    if isinstance(branches, (str, bytes)) or not isinstance(branches, Sequence) or not (
        branches
    ) or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in branches):
        raise ValueError(
            f"{builder}: invalid value for argument `branches`. Expected a non-empty "
            f"sequence of ints >= 1 (nodes per level). Received: branches={branches!r}"
        )
    factories = _factories(builder, blocks, len(branches))
    x = model_features(builder, inputs, features)
    made = []

    def gate(count, gate_name):
        gate_seed = None if seed is None else seed + len(made)
        made.append(BranchGate(count, temperature=temperature, seed=gate_seed,
                               name=gate_name))
        return made[-1]

    # Made before any block is called: a bad temperature must not leave
    # half-built graphs behind.
    gates = [[gate(branches[level - 1], f"branch_{level}_{node}")
              for node in range(branches[level])] for level in range(1, len(branches))]
    task_gates = [gate(branches[-1], f"{t.name}_branch") for t in tasks]
    level = [factories[0]()(x) for _ in range(branches[0])]
    for depth, level_gates in enumerate(gates, start=1):
        level = [factories[depth]()(g(level)) for g in level_gates]
    task_features = [g(level) for g in task_gates]
    check_layer_names(builder, inputs, task_features, tasks, "blocks")
    outputs = {t.name: t.build_head(f) for t, f in zip(tasks, task_features)}
    return MultiTaskModel(inputs, outputs, name=name, tasks=tasks, weighting=weighting)


def branching_tree(model: keras.Model) -> dict[str, list[int]]:
    """Each task's path through the tree, as the model infers: the node it
    reads at every level, from level 0 to the last.

    A task's path follows each gate's most likely parent.
    """
    gates = {g.name: g for g in _gates(model)}
    if not gates:
        raise ValueError(
            f"Model '{model.name}' has no BranchGate: it was not built by "
            "kerasmtl.sharing.learning_to_branch."
        )

    def parent(gate_name):
        return int(ops.convert_to_numpy(ops.argmax(gates[gate_name].logits)))

    levels = [int(m.group(1)) for m in map(_NODE_GATE.fullmatch, gates) if m]
    depth = 1 + max(levels, default=0)
    paths = {}
    for task in getattr(model, "task_names", []):
        node = parent(f"{task}_branch")
        path = [node]
        for level in range(depth - 1, 0, -1):
            node = parent(f"branch_{level}_{node}")
            path.append(node)
        paths[task] = path[::-1]
    return paths


def _gates(model) -> list[BranchGate]:
    return [layer for layer in model.layers if isinstance(layer, BranchGate)]


def _factories(builder: str, blocks, levels: int) -> list:
    if callable(blocks) and not isinstance(blocks, keras.layers.Layer):
        factories = [blocks] * levels
    elif isinstance(blocks, Sequence) and not isinstance(blocks, str) and (
        len(blocks) == levels
    ):
        factories = list(blocks)
    else:
        raise ValueError(
            f"{builder}: invalid value for argument `blocks`. Expected a factory "
            f"`() -> layer` or a list of {levels} factories (one per level of "
            f"`branches`). Received: {blocks!r}"
        )
    for factory in factories:
        if not callable(factory) or isinstance(factory, keras.layers.Layer) or (
            takes_inputs(builder, "blocks", factory)
        ):
            raise ValueError(
                f"{builder}: every entry of `blocks` must be a factory called with no "
                "argument that returns a new layer (it is called once per node), e.g. "
                f"`lambda: keras.layers.Dense(64, activation='relu')`. Received: "
                f"{factory!r}"
            )
    return factories
