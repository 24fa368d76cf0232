"""MoCo: multi-objective gradient correction by tracking the task gradients.

Fernando, Shen, Liu, Chaudhury, Murugesan and Chen, "Mitigating Gradient
Bias in Multi-objective Learning: A Provably Convergent Approach", ICLR 2023.
MGDA's weights computed from stochastic gradients are biased; MoCo tracks
each task's gradient with a moving average `y_t <- y_t - beta (y_t - g_t)`,
takes one projected gradient step on the MGDA weights,
`lambda <- Proj_simplex(lambda - gamma (Y Y^T + rho I) lambda)`, and updates
along `Y^T lambda`.

Follows LibMTL's `MoCo` (written from the authors' code) in the defaults
(`beta=0.5`, `gamma=0.1`, both decaying as `/ k^0.5`, `rho=0`), in starting
`Y` at zero and `lambda` at `1/T`, and in tracking each gradient rescaled to
the norm of its loss, `g_t L_t / (||g_t|| + 1e-8)` (`normalize=True`).
Departures:
- The tracked Jacobian. The paper and LibMTL keep `Y` (`T x n`, a copy of
  every shared parameter per task); a balancer here sees the `[T, T]` Gram
  matrix of the step's gradients (exact across replicas, `rep_grad`, mixed
  precision), so `Y` is kept as each row's *norm* `m_t`, tracked by the same
  moving average, along the current direction: `y_t ~ m_t g_t / ||g_t||`,
  so `Y Y^T = diag(m) C diag(m)` with `C` the current gradients' cosines.
  This is the paper's update exactly while each task's gradient keeps its
  direction from step to step (only its size and loss change); otherwise
  the sizes are smoothed but the directions are this step's (as in
  `DBMTL`).
- `lambda_update="projection"` (the default) is the paper's projection
  onto the simplex; LibMTL applies a softmax instead (`"softmax"`).
- The paper projects `y_t` onto a bounded set; like LibMTL, there is none.
- `rep_grad=True` is allowed (the sizes and cosines of the representation's
  gradients); LibMTL refuses it.
With the projection a task's `lambda_t` can reach 0 and stay there while
the other tasks' pull on it is positive: on the POS + NER tagger
(benchmarks/README.md) POS's weight did so in the first epoch (UPOS 66.5);
`"softmax"` keeps every weight above 0.
The state (`m`, `lambda`, the step count `k`) changes only on applied
training steps (not in `aggregate`) and is saved with the model. A task
absent from the batch keeps its `m_t` and `lambda_t` and gets weight 0; the
step starts from the present tasks' `lambda` rescaled to sum to 1, lands on
their simplex, and is stored scaled back to the share of `lambda` they held,
so `lambda` stays on the simplex of all tasks (as MoDo's and SDMGrad's; with
every task present, the paper's step).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from kerasmtl.weighting.arguments import check_choice, check_float
from kerasmtl.weighting.gradient_balancer import (
    GradientBalancer,
    mask_gram,
    merge_into_state,
    project_to_simplex,
    start_on_active_face,
    task_weight_variable,
)

LAMBDA_UPDATES = ("projection", "softmax")
# LibMTL's guard in the gradient normalisation g / (||g|| + 1e-8).
NORM_EPSILON = 1e-8


@keras.saving.register_keras_serializable(package="kerasmtl")
class MoCo(GradientBalancer):
    """Multi-objective gradient correction (Fernando et al., ICLR 2023).

    Formula:
    ```
    k <- k + 1;   beta_k = beta / k^beta_sigma;   gamma_k = gamma / k^gamma_sigma
    s_t = L_t ||g_t|| / (||g_t|| + 1e-8)        (normalize=False: s_t = ||g_t||)
    m_t <- m_t - beta_k (m_t - s_t)             (m starts at 0)
    y_t = m_t g_t / ||g_t||;   Y Y^T = diag(m) C diag(m),  C_ij = cos(g_i, g_j)
    lambda <- Proj_simplex(lambda - gamma_k (Y Y^T + rho I) lambda)
    update = Y^T lambda = sum_t (lambda_t m_t / ||g_t||) g_t
    ```

    Args:
        beta: float in (0, 1]. Tracking rate of the gradients. Defaults to
            `0.5` (LibMTL's default).
        beta_sigma: float >= 0. Decay of `beta` with the step count.
            Defaults to `0.5` (LibMTL's default).
        gamma: float >= 0. Step size of the weights `lambda`. Defaults to
            `0.1` (LibMTL's default).
        gamma_sigma: float >= 0. Decay of `gamma` with the step count.
            Defaults to `0.5` (LibMTL's default).
        rho: float >= 0. L2 regularisation of `lambda`'s step. Defaults to
            `0.0` (LibMTL's default).
        normalize: bool. Track each gradient rescaled to its loss's norm, as
            LibMTL does. Defaults to `True`.
        lambda_update: str. "projection" (the paper) or "softmax" (LibMTL).
            Defaults to `"projection"`.
        rep_grad: bool. Balance the gradients w.r.t. the shared
            representation. Defaults to `False`.

    Examples:

    First step: `m = 0.5 (1, 3)` (the losses), `Y Y^T = diag(0.25, 2.25)`,
    `lambda = Proj((0.5, 0.5) - 0.1 (0.125, 1.125)) = (0.55, 0.45)`, and
    `update = 0.55 * 0.5 * (1, 0) + 0.45 * 1.5 * (0, 1)`.

    >>> update = MoCo().aggregate([[1.0, 0.0], [0.0, 2.0]], [1.0, 3.0])
    >>> [round(float(v), 4) for v in update]
    [0.275, 0.675]
    """

    def __init__(
        self,
        beta: float = 0.5,
        beta_sigma: float = 0.5,
        gamma: float = 0.1,
        gamma_sigma: float = 0.5,
        rho: float = 0.0,
        normalize: bool = True,
        lambda_update: str = "projection",
        rep_grad: bool = False,
        **kwargs,
    ):
        super().__init__(rep_grad=rep_grad, **kwargs)
        self.beta = check_float(
            "beta", beta, minimum=0, maximum=1, include_minimum=False
        )
        self.beta_sigma = check_float("beta_sigma", beta_sigma, minimum=0)
        self.gamma = check_float("gamma", gamma, minimum=0)
        self.gamma_sigma = check_float("gamma_sigma", gamma_sigma, minimum=0)
        self.rho = check_float("rho", rho, minimum=0)
        self.lambda_update = check_choice(
            "lambda_update", lambda_update, LAMBDA_UPDATES
        )
        self.normalize = bool(normalize)

    def build_state(self, num_tasks):
        self.tracked_norms = task_weight_variable(self, "tracked_norms", (num_tasks,))
        self.lambdas = task_weight_variable(
            self, "lambdas", (num_tasks,), keras.initializers.Constant(1.0 / num_tasks)
        )
        self.updates = task_weight_variable(self, "updates", ())

    def weights_from_gram(self, gram, losses, active, step):
        dtype = gram.dtype
        mask = tf.cast(active, dtype)
        gram = mask_gram(gram, active)
        norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(gram), 0.0))
        if self.normalize:
            sizes = tf.cast(losses, dtype) * norms / (norms + NORM_EPSILON)
        else:
            sizes = norms
        count = tf.cast(tf.convert_to_tensor(self.updates), dtype) + 1.0
        beta = self.beta / count**self.beta_sigma
        gamma = self.gamma / count**self.gamma_sigma
        old_norms = tf.cast(tf.convert_to_tensor(self.tracked_norms), dtype)
        tracked = tf.where(active, old_norms - beta * (old_norms - sizes), old_norms)
        cosines = tf.math.divide_no_nan(gram, norms[:, None] * norms[None, :])
        m = tracked * mask
        yy = m[:, None] * cosines * m[None, :]
        old_lambdas = tf.cast(tf.convert_to_tensor(self.lambdas), dtype)
        # The step starts from lambda on the present tasks' simplex (a no-op
        # when every task is present), as MoDo's and SDMGrad's.
        lambdas, mass = start_on_active_face(old_lambdas, active)
        stepped = lambdas - gamma * (
            tf.linalg.matvec(yy, lambdas) + self.rho * lambdas
        )
        if self.lambda_update == "projection":
            new = project_to_simplex(stepped, active)
        else:
            logits = tf.where(active, stepped, stepped.dtype.min)
            new = tf.nn.softmax(logits) * mask
        weights = tf.where(active, tf.math.divide_no_nan(new * m, norms), 0.0)
        # Kept for update_state, called later in the same train step.
        object.__setattr__(
            self, "_pending_state",
            (tracked, merge_into_state(old_lambdas, new, active, mass), count),
        )
        return weights

    def update_state(self, gram, losses, active, weights, applied):
        super().update_state(gram, losses, active, weights, applied)
        pending = getattr(self, "_pending_state", None)
        if pending is None:
            return
        state = (self.tracked_norms, self.lambdas, self.updates)
        for variable, value in zip(state, pending):
            old = tf.convert_to_tensor(variable)
            variable.assign(tf.where(applied, tf.cast(value, old.dtype), old))

    def get_config(self):
        return {
            **super().get_config(),
            "beta": self.beta,
            "beta_sigma": self.beta_sigma,
            "gamma": self.gamma,
            "gamma_sigma": self.gamma_sigma,
            "rho": self.rho,
            "normalize": self.normalize,
            "lambda_update": self.lambda_update,
        }
