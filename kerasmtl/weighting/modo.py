"""MoDo: multi-objective gradient with double sampling.

Chen, Fernando, Ying and Chen, "Three-Way Trade-Off in Multi-Objective
Learning: Optimization, Generalization and Conflict-Avoidance", NeurIPS 2023
(Algorithm 1). A stochastic MGDA: instead of solving for the min-norm point
at every step, the task weights `lambda` take one projected gradient step on
`(1/2) ||J^T lambda||^2` per training step and are kept from step to step;
the update is the `lambda`-weighted task gradient.

Follows LibMTL's port (`LibMTL/weighting/MoDo.py`) in the step
`lambda <- Proj(lambda - gamma (J_1 J_2^T lambda + rho lambda))` (the `rho`
regulariser is LibMTL's and the authors' code's), its defaults
(`gamma=1e-3`, `rho=0.1`; the authors' code, github.com/heshandevaka/
Trade-Off-MOL, defaults to `gamma=0.1`, `rho=0.1`), the uniform start, the
unnormalised gradients, and the use of the *new* `lambda` for the update
(weights summing to 1).

Departures:
- Double sampling. The paper and LibMTL draw three batches per step, two
  for the weight step (`J_1 J_2^T` is then an unbiased estimate of
  `E[J] E[J]^T`) and one for the update; the authors' code draws two and
  updates along the sum of both. Here, as for every balancer in this
  package, there is one batch per step, so the weight step uses `J J^T` of
  that batch and the update its `J^T lambda`: the deterministic-gradient
  form of the algorithm, whose weight step is biased for noisy gradients
  (the bias double sampling removes). It costs one backward pass per task
  rather than two or three.
- `rep_grad=True` is allowed (LibMTL's port refuses it).

`lambda` is state: it changes only on applied training steps (not in
`aggregate`) and is saved with the model. A task absent from the batch (no
known label, or a zero gradient) keeps its entry; the step is taken on the
face of the simplex of the present tasks, their total weight kept, and the
update uses their weights normalised to sum to 1.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from kerasmtl.weighting.arguments import check_float
from kerasmtl.weighting.gradient_balancer import (
    GradientBalancer,
    mask_gram,
    merge_into_state,
    project_to_simplex,
    start_on_active_face,
    task_weight_variable,
)


@keras.saving.register_keras_serializable(package="kerasmtl")
class MoDo(GradientBalancer):
    """Multi-objective gradient with double sampling (Chen et al., NeurIPS 2023).

    Formula:
    ```
    lambda <- Proj_simplex(lambda - gamma (G G^T lambda + rho lambda))
    update = G^T lambda            (G: the [T, n] task gradients)
    ```
    `lambda` starts uniform and is kept across steps; `gamma=0` keeps it
    uniform (the mean of the task gradients).

    Args:
        gamma: float >= 0. Step size of `lambda`, in units of one over the
            squared gradient norm (the gradients are not normalised).
            Defaults to `1e-3` (LibMTL's default).
        rho: float >= 0. Weight of the `(rho / 2) ||lambda||^2` regulariser,
            which pulls `lambda` away from the simplex's corners. Defaults to
            `0.1` (LibMTL's default).
        rep_grad: bool. Balance the gradients w.r.t. the shared
            representation. Defaults to `False`.

    Examples:

    Two tasks, `lambda = (0.5, 0.5)`: `G G^T lambda = (0.5, 4.5)` and
    `rho lambda = (0.05, 0.05)`, so the step gives `(0.445, 0.045)`, which
    projects (add 0.255 to each) to `(0.7, 0.3)`; the update is
    `0.7 (1, 0) + 0.3 (0, 3)`.

    >>> update = MoDo(gamma=0.1).aggregate([[1.0, 0.0], [0.0, 3.0]], [1.0, 1.0])
    >>> [round(float(v), 4) for v in update]
    [0.7, 0.9]
    """

    def __init__(
        self,
        gamma: float = 1e-3,
        rho: float = 0.1,
        rep_grad: bool = False,
        **kwargs,
    ):
        super().__init__(rep_grad=rep_grad, **kwargs)
        self.gamma = check_float("gamma", gamma, minimum=0)
        self.rho = check_float("rho", rho, minimum=0)

    def build_state(self, num_tasks):
        self.simplex_weights = task_weight_variable(
            self, "simplex_weights", (num_tasks,), keras.initializers.Constant(1 / num_tasks)
        )

    def weights_from_gram(self, gram, losses, active, step):
        gram = mask_gram(gram, active)
        state = tf.cast(tf.convert_to_tensor(self.simplex_weights), gram.dtype)
        start, mass = start_on_active_face(state, active)
        descent = tf.linalg.matvec(gram, start) + self.rho * start
        weights = project_to_simplex(start - self.gamma * descent, active)
        # Kept for update_state, called later in the same train step.
        object.__setattr__(self, "_pending_state", merge_into_state(state, weights, active, mass))
        return weights

    def update_state(self, gram, losses, active, weights, applied):
        super().update_state(gram, losses, active, weights, applied)
        pending = getattr(self, "_pending_state", None)
        if pending is not None:
            old = tf.convert_to_tensor(self.simplex_weights)
            self.simplex_weights.assign(tf.where(applied, tf.cast(pending, old.dtype), old))

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma, "rho": self.rho}


# -- weights on the simplex kept across steps while tasks come and go ----------------
