"""UPGrad: unconflicting projection of gradients (Jacobian descent).

Quinton and Rey, "Jacobian Descent for Multi-Objective Optimization", arXiv
2406.16232, 2024 (the method of TorchJD). Each task gradient is projected
onto the dual cone of all task gradients `{x : g_t . x >= 0 for every t}`
and the projections are averaged, so no task's loss goes up to first order.
Follows the paper and TorchJD's `UPGrad` with its default (mean)
preference. The projection is, by the paper's Proposition 1, the quadratic
program `min_{v >= u} v^T G v` on the Gram matrix; where TorchJD normalises
and regularises the Gram matrix (adding 1e-4 I) and hands it to `quadprog`,
here the program is solved exactly in the TensorFlow graph by enumerating
its active sets (one batched float64 solve; T <= 12), so there is no
regulariser.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from kerasmtl.weighting.gradient_balancer import GradientBalancer, mask_gram

MAX_TASKS = 12


@keras.saving.register_keras_serializable(package="kerasmtl")
class UPGrad(GradientBalancer):
    """Unconflicting projection of gradients (Quinton and Rey, 2024).

    Formula:
    ```
    C* = {x : g_t . x >= 0 for all t}          (the dual cone)
    update = mean_t  proj_{C*}(g_t)
    proj_{C*}(J^T u) = J^T v*,   v* = argmin_{v >= u} v^T G v,   G = J J^T
    ```
    For two tasks that conflict, each gradient loses its component along the
    other's: the update is half PCGrad's.

    Args:
        rep_grad: bool. Balance the gradients w.r.t. the shared
            representation. Defaults to `False`.

    Examples:

    >>> update = UPGrad().aggregate([[1.0, 0.0], [-1.0, 1.0]], [1.0, 1.0])
    >>> [round(float(v), 4) for v in update]
    [0.25, 0.75]
    """

    def weights_from_gram(self, gram, losses, active, step):
        mask = tf.cast(active, gram.dtype)
        count = tf.reduce_sum(mask)
        preferences = tf.linalg.diag(tf.math.divide_no_nan(mask, count))
        return tf.reduce_sum(dual_cone_weights(gram, preferences, active), axis=0)


def dual_cone_weights(gram, preferences, active):
    """Weights of the projections of `J^T u` onto the dual cone of the rows
    of J, for each row `u` of `preferences` (`[P, T]`), from `gram = J J^T`.

    Returns `[P, T]` weights `v` with `J^T v = proj(J^T u)`, 0 for inactive
    tasks. `v = u + a` where `a >= 0` minimises `(u + a)^T G (u + a)` (the
    projection onto the polar cone `{-J^T a}` removed, by Moreau). The KKT
    conditions are `a >= 0`, `G v >= 0`, `a_t (G v)_t = 0`; for each set S
    of tasks with `a_t > 0` they give the linear system `(G v)_S = 0`,
    `a_{not S} = 0`. Every S is solved at once and the candidate that
    violates the KKT conditions least wins; one whose rows of J are
    independent is exact, so the answer is exact up to rounding.
    """
    num_tasks = gram.shape[0]
    if num_tasks > MAX_TASKS:
        raise ValueError(
            f"The dual-cone projection enumerates task subsets; {num_tasks} tasks "
            f"are too many (at most {MAX_TASKS})."
        )
    out_dtype = gram.dtype
    mask = tf.cast(active, tf.float64)
    gram = tf.cast(mask_gram(gram, active), tf.float64)
    # Projection weights do not depend on the scale of J; unit scale keeps
    # the KKT tolerances meaningful.
    gram = tf.math.divide_no_nan(gram, tf.reduce_max(tf.linalg.diag_part(gram)))
    u = tf.cast(preferences, tf.float64) * mask[None, :]
    subsets = np.array(
        [[(s >> t) & 1 for t in range(num_tasks)] for s in range(2**num_tasks)],
        "float64",
    )
    free = tf.constant(subsets) * mask[None, :]  # [K, T]; inactive a_t stay 0
    fixed = 1.0 - free
    # [K, T, T]: rows of S are (G a)_S = -(G u)_S, other rows pin a_t = 0.
    system = gram[None] * free[:, :, None] * free[:, None, :] + tf.linalg.diag(fixed)
    rhs = -tf.einsum("tu,pu,kt->ktp", gram, u, free)  # [K, T, P]
    a = tf.linalg.lstsq(system, rhs, fast=False)  # [K, T, P]
    a = tf.transpose(a * free[:, :, None], [2, 0, 1])  # [P, K, T]
    v = u[:, None, :] + a
    gv = tf.einsum("tu,pku->pkt", gram, v)
    violation = tf.reduce_max(
        tf.maximum(
            tf.maximum(-a, -gv),
            tf.abs(gv) * free[None],  # stationarity on S (lstsq residual)
        ),
        axis=2,
    )  # [P, K]
    best = tf.argmin(violation, axis=1)
    weights = tf.gather(v, best, axis=1, batch_dims=1)  # [P, T]
    return tf.cast(weights * mask[None, :], out_dtype)
