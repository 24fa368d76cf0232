"""DSelect-k: a differentiable gate that selects k of n experts, and MMoE on it.

Hazimeh, Zhao, Chowdhery, Sathiamoorthy, Chen, Mazumder, Hong and Chi,
"DSelect-k: Differentiable Selection in the Mixture of Experts with
Applications to Multi-Task Learning", NeurIPS 2021. Follows the official code
(google-research/google-research, `dselect_k_moe/dselect_k_moe.py`): its
smooth-step, binary encoding, initializers, entropy regulariser and the
penalty for experts that are not a power of two. Departures: that penalty
is the official `sum 1 / s` less its floor of 1 per selector (same gradient,
0 once met), and the entropy weight is a constant (the official regulariser
takes a schedule over its call count). `DSelectKGate` is a drop-in
alternative to the softmax `ExpertGate` (same call, same `(mixture,
weights)` return), so `kerasmtl.sharing.gate_weights` reads it too;
`dselect_k_mmoe` is `mmoe` with these gates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from kerasmtl.layers.expert_gate import ExpertGate, _compatible
from kerasmtl.model import MultiTaskModel
from kerasmtl.sharing.layer_names import (
    check_layer_names,
    make_layers,
    model_features,
    tower,
)
from kerasmtl.sharing.moe import Experts
from kerasmtl.tasks import Task

# Inside the entropy's log, as in the official code: log(0) would be -inf.
_EPSILON = 1e-6


def smooth_step(x, gamma: float = 1.0):
    """The cubic smooth-step of DSelect-k (Hazimeh et al. 2021, eq. 1).

    Formula:
    ```
    S(x) = 0                                      if x <= -gamma / 2
         = -2 x^3 / gamma^3 + 3 x / (2 gamma) + 1/2   if -gamma / 2 < x < gamma / 2
         = 1                                      if x >= gamma / 2
    ```
    Continuously differentiable, and exactly 0 or 1 outside `[-gamma/2,
    gamma/2]`, where its gradient is 0: a saturated selector stays put.

    Examples:

    >>> [round(float(v), 6) for v in smooth_step(ops.array([-1.0, 0.0, 0.25, 1.0]))]
    [0.0, 0.5, 0.84375, 1.0]
    """
    x = ops.convert_to_tensor(x)
    cubic = -2.0 / gamma**3 * x**3 + 3.0 / (2.0 * gamma) * x + 0.5
    return ops.where(
        x <= -gamma / 2, ops.zeros_like(x), ops.where(x >= gamma / 2, ops.ones_like(x), cubic)
    )


@keras.saving.register_keras_serializable(package="kerasmtl")
class DSelectKGate(ExpertGate):
    """DSelect-k gate over experts; returns `(mixture, gate_weights)`.

    Called as `ExpertGate`, on `[gate_input, expert_1, ..., expert_n]` (per
    position when the gate input and the experts share their positions,
    else per example on the gate input averaged over its positions). Each of
    `k` single-expert selectors picks one expert through `m = ceil(log2 n)`
    smooth-step "bits"; a softmax over the selectors weighs their picks.

    Formula (per example; `z`, `w` are linear in the gate input, or weights
    of their own when `per_example=False`):
    ```
    r_i(e) = prod_b  S(z_ib) if bit b of e is 1 else 1 - S(z_ib)   # i = 1..k
    g_e    = sum_i softmax(w)_i * r_i(e)                            # e = 0..n-1
    y      = sum_e g_e * expert_e
    ```
    Once every `z_ib` lies outside `[-gamma/2, gamma/2]` each selector is
    one-hot and at most `k` weights are non-zero. In training the layer adds
    `entropy_reg * sum(-r log(r + 1e-6))` (summed over the batch, as the
    official code) with `add_loss`, pushing the selectors to a single expert;
    when `n` is not a power of two it adds `sum_i (1 / sum_e r_i(e) - 1)`,
    keeping selectors off the codes `n..2^m - 1` that name no expert (until
    then the weights sum to less than 1).

    Args:
        num_experts: int >= 2. Number of experts mixed.
        k: int in [1, num_experts]. Number of selectors: at most `k` experts
            get a non-zero weight once the selectors converge.
        expert_names: sequence of str or None. Names of the mixed experts.
            Defaults to `None`.
        gamma: float > 0. Width of the smooth-step's cubic part. Defaults to
            `1.0` (official code).
        entropy_reg: float >= 0. Weight of the entropy regulariser; 0 turns
            it off. Defaults to `1e-6` (the official `EntropyRegularizer`'s
            default; the official gate has none unless one is passed).
        per_example: bool. Selectors computed from the gate input (True) or
            shared by all examples, "task-only" routing (False). Defaults to
            `True` (what an MMoE gate does).
        z_initializer: initializer of the selector logits (kernel and bias).
            Defaults to `None`: `RandomUniform(-gamma / 100, gamma / 100)`.
        w_initializer: initializer of the selector-weight logits. Defaults to
            `None`: `RandomUniform(-0.05, 0.05)`.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Examples:

    >>> gate = DSelectKGate(num_experts=4, k=2, z_initializer="zeros",
    ...                     w_initializer="zeros")
    >>> x = ops.ones((1, 3))
    >>> experts = [ops.full((1, 2), float(e)) for e in range(4)]
    >>> mixture, weights = gate([x, *experts])
    >>> weights.numpy().tolist(), mixture.numpy().tolist()
    ([[0.25, 0.25, 0.25, 0.25]], [[1.5, 1.5]])
    """

    def __init__(
        self,
        num_experts: int,
        k: int,
        expert_names: Sequence[str] | None = None,
        gamma: float = 1.0,
        entropy_reg: float = 1e-6,
        per_example: bool = True,
        z_initializer=None,
        w_initializer=None,
        **kwargs,
    ):
        if "kernel_initializer" in kwargs:
            raise ValueError(
                "DSelectKGate has no softmax kernel: initialize its selectors with "
                "`z_initializer` and `w_initializer` instead of `kernel_initializer`."
            )
        super().__init__(num_experts, expert_names, **kwargs)
        if num_experts < 2:
            raise ValueError(
                f"Invalid value for argument `num_experts` of layer '{self.name}'. "
                f"DSelect-k selects among at least 2 experts. Received: "
                f"num_experts={num_experts}"
            )
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= num_experts:
            raise ValueError(
                f"Invalid value for argument `k` of layer '{self.name}'. Expected an "
                f"int in [1, {num_experts}] (num_experts). Received: k={k!r}"
            )
        if not (isinstance(gamma, (int, float)) and gamma > 0):
            raise ValueError(
                f"Invalid value for argument `gamma` of layer '{self.name}'. Expected "
                f"a float > 0. Received: gamma={gamma!r}"
            )
        if not (isinstance(entropy_reg, (int, float)) and entropy_reg >= 0):
            raise ValueError(
                f"Invalid value for argument `entropy_reg` of layer '{self.name}'. "
                f"Expected a float >= 0. Received: entropy_reg={entropy_reg!r}"
            )
        self.k = k
        self.gamma = float(gamma)
        self.entropy_reg = float(entropy_reg)
        self.per_example = bool(per_example)
        # The official defaults: selector logits start in the cubic part of
        # the smooth-step (saturated logits would get no gradient).
        self.z_initializer = keras.initializers.get(
            z_initializer or keras.initializers.RandomUniform(-gamma / 100, gamma / 100)
        )
        self.w_initializer = keras.initializers.get(
            w_initializer or keras.initializers.RandomUniform(-0.05, 0.05)
        )
        self.num_bits = math.ceil(math.log2(num_experts))
        # Row e: the num_bits binary digits of e, most significant first.
        self.binary_codes = np.array(
            [[int(b) for b in np.binary_repr(e, width=self.num_bits)]
             for e in range(num_experts)], "float32",
        )

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) < 2:
            raise ValueError(
                f"Layer '{self.name}' is called on [gate_input, expert_1, ...]. "
                f"Received input shape {input_shape}."
            )
        gate_shape, *expert_shapes = (tuple(s) for s in input_shape)
        if len(expert_shapes) != self.num_experts:
            raise ValueError(
                f"Layer '{self.name}' has num_experts={self.num_experts} but was "
                f"called on {len(expert_shapes)} expert outputs."
            )
        for i, shape in enumerate(expert_shapes[1:], start=1):
            if not _compatible(shape, expert_shapes[0]):
                raise ValueError(
                    f"The experts mixed by gate '{self.name}' have different output "
                    f"shapes: expert 0 gives {expert_shapes[0]}, expert {i} gives "
                    f"{shape}. Every expert must output the same shape."
                )
        if gate_shape[-1] is None:
            raise ValueError(
                f"The input of gate '{self.name}' needs a known last axis. "
                f"Received shape {gate_shape}."
            )
        self.per_position = len(gate_shape) > 2 and _compatible(
            gate_shape[1:-1], expert_shapes[0][1:-1]
        )
        z_shape, w_shape = (self.k, self.num_bits), (self.k,)
        if self.per_example:
            features = gate_shape[-1]
            self.z_kernel = self.add_weight(
                name="z_kernel", shape=(features, *z_shape), initializer=self.z_initializer
            )
            self.w_kernel = self.add_weight(
                name="w_kernel", shape=(features, *w_shape), initializer=self.w_initializer
            )
        self.z_bias = self.add_weight(
            name="z_bias", shape=z_shape, initializer=self.z_initializer
        )
        self.w_bias = self.add_weight(
            name="w_bias", shape=w_shape, initializer=self.w_initializer
        )

    def selector_logits(self, gate_input):
        """`(z, w)`: `z (..., k, num_bits)` and `w (..., k)` for a gate input
        `(..., features)` (already pooled when the gate is per example)."""
        gate_input = ops.cast(gate_input, self.compute_dtype)
        if self.per_example:
            z = ops.tensordot(gate_input, self.z_kernel, axes=1) + self.z_bias
            w = ops.matmul(gate_input, self.w_kernel) + self.w_bias
        else:
            ones = ops.ones_like(gate_input[..., :1])  # (..., 1)
            z = ops.expand_dims(ones, -1) * self.z_bias
            w = ones * self.w_bias
        return z, w

    def call(self, inputs, training=False):
        gate_input, *experts = inputs
        if not self.per_position and len(gate_input.shape) > 2:
            gate_input = ops.mean(gate_input, axis=tuple(range(1, len(gate_input.shape) - 1)))
        z, w = self.selector_logits(gate_input)
        bits = ops.expand_dims(smooth_step(z, self.gamma), -2)  # (..., k, 1, m)
        codes = ops.cast(self.binary_codes, bits.dtype)  # (n, m)
        selectors = ops.prod(codes * bits + (1 - codes) * (1 - bits), axis=-1)  # (..., k, n)
        # k = 1: the one selector has weight 1 (a softmax over one logit).
        mix = ops.softmax(w, axis=-1) if self.k > 1 else ops.ones_like(w)
        weights = ops.sum(ops.expand_dims(mix, -1) * selectors, axis=-2)
        if training:
            self._add_selector_losses(selectors)
        stacked = ops.stack(experts, axis=-1)  # (batch, *positions, units, E)
        broadcast = weights
        while len(broadcast.shape) < len(stacked.shape):
            broadcast = ops.expand_dims(broadcast, -2)
        mixture = ops.sum(stacked * ops.cast(broadcast, stacked.dtype), axis=-1)
        return mixture, weights

    def _add_selector_losses(self, selectors):
        selectors = ops.cast(selectors, "float32")
        if self.entropy_reg > 0:
            entropy = -ops.sum(selectors * ops.log(selectors + _EPSILON))
            self.add_loss(self.entropy_reg * entropy)
        if self.num_experts != 2**self.num_bits:
            # The official 1 / (weight on real experts), less its floor of 1
            # (same gradient; the term is 0 once no weight is lost).
            self.add_loss(ops.sum(1.0 / ops.sum(selectors, axis=-1) - 1.0))

    def get_config(self):
        config = super().get_config()
        config.pop("kernel_initializer")
        return {
            **config,
            "k": self.k,
            "gamma": self.gamma,
            "entropy_reg": self.entropy_reg,
            "per_example": self.per_example,
            "z_initializer": keras.initializers.serialize(self.z_initializer),
            "w_initializer": keras.initializers.serialize(self.w_initializer),
        }


def dselect_k_mmoe(
    inputs,
    experts: Experts,
    tasks: Sequence[Task],
    *,
    k: int,
    num_experts: int | None = None,
    gamma: float = 1.0,
    entropy_reg: float = 1e-6,
    per_example: bool = True,
    features=None,
    tower_layers: Sequence = (),
    weighting=None,
    name: str | None = None,
) -> MultiTaskModel:
    """Builds an MMoE whose task gates are DSelect-k gates (Hazimeh et al. 2021).

    The multi-task model of the paper's experiments: `mmoe` (Ma et al. 2018)
    with each task's softmax gate replaced by a `DSelectKGate` that keeps at
    most `k` experts per task.

    Args:
        inputs: Keras input tensor(s) of the model.
        experts: list of Keras layers/models, or a factory `() -> layer`
            called `num_experts` times (see `mmoe`).
        tasks: the tasks; each gets its own DSelect-k gate.
        k: int in [1, number of experts]. Experts each task keeps.
        num_experts: int >= 2 or None. Count for a factory. Defaults to `None`.
        gamma: float > 0. Smooth-step width. Defaults to `1.0`.
        entropy_reg: float >= 0. Entropy regulariser weight. Defaults to `1e-6`.
        per_example: bool. Per-example (True) or task-only (False) routing.
            Defaults to `True`.
        features: Keras tensor or None. What experts and gates read.
            Defaults to `None` (`inputs`).
        tower_layers: sequence of int or layers; per-task tower (see `mmoe`).
            Defaults to `()`.
        weighting: passed to `MultiTaskModel`. Defaults to `None`.
        name: str or None. The model's name.

    Returns:
        A `MultiTaskModel` with `DSelectKGate` layers `"<task>_gate_0"`.

    Examples:

    >>> import keras, kerasmtl as mtl
    >>> x = keras.Input((8,))
    >>> tasks = [mtl.tasks.Classification("a", 3), mtl.tasks.Regression("b")]
    >>> model = dselect_k_mmoe(
    ...     x, lambda: keras.layers.Dense(4, activation="relu"), tasks,
    ...     k=2, num_experts=4)
    >>> gate = model.get_layer("a_gate_0")
    >>> type(gate).__name__, gate.k, gate.num_experts
    ('DSelectKGate', 2, 4)
    """
    builder = "dselect_k_mmoe"
    tasks = list(tasks)
    x = model_features(builder, inputs, features)
    expert_layers = make_layers(builder, "experts", experts, num_experts, "num_experts")
    expert_outputs = [expert(x) for expert in expert_layers]
    names = [layer.name for layer in expert_layers]
    mixed = {}
    for task in tasks:
        gate = DSelectKGate(
            len(expert_layers), k, names, gamma=gamma, entropy_reg=entropy_reg,
            per_example=per_example, name=f"{task.name}_gate_0",
        )
        mixed[task.name] = gate([x, *expert_outputs])[0]
    check_layer_names(builder, inputs, mixed.values(), tasks, "experts")
    outputs = {t.name: t.build_head(tower(t.name, tower_layers, mixed[t.name])) for t in tasks}
    return MultiTaskModel(inputs, outputs, name=name, tasks=tasks, weighting=weighting)
