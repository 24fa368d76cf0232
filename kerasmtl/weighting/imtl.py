"""IMTL-G: impartial multi-task learning, gradient part.

Liu, Li, Kuang, Xue, Chen, Yang, Liao and Zhang, "Towards Impartial
Multi-task Learning", ICLR 2021. The closed-form gradient balance (IMTL-G):
the update has equal projections onto every task's unit gradient. The
paper's loss-balance part (IMTL-L, learned loss scales) is not included: pair
it with a loss weighting if wanted. No official code was released; this
follows the paper's closed form, solved by least squares so that collinear
gradients (a singular system) still get the minimum-norm weights.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from kerasmtl.weighting.gradient_balancer import GradientBalancer


@keras.saving.register_keras_serializable(package="kerasmtl")
class IMTL(GradientBalancer):
    """Impartial MTL, gradient balance (Liu et al., ICLR 2021).

    Formula:
    ```
    u_t = g_t / ||g_t||;   D = [g_1 - g_t]_{t>1};   U = [u_1 - u_t]_{t>1}
    alpha_{2:T} = g_1 U^T (D U^T)^{-1};   alpha_1 = 1 - sum_{t>1} alpha_t
    update = sum_t alpha_t g_t      (so update . u_t is the same for every t)
    ```
    Solved as the equivalent `T x T` system (anchor: the first active task).

    Args:
        rep_grad: bool. Balance the gradients w.r.t. the shared
            representation. Defaults to `False`.

    Examples:

    >>> update = IMTL().aggregate([[1.0, 0.0], [0.0, 2.0]], [1.0, 1.0])
    >>> [round(float(v), 4) for v in update]
    [0.6667, 0.6667]
    """

    def weights_from_gram(self, gram, losses, active, step):
        num_tasks = gram.shape[0]
        mask = tf.cast(active, gram.dtype)
        norms = tf.sqrt(tf.linalg.diag_part(gram))
        # p[s, t] = g_s . u_t
        p = gram * tf.math.divide_no_nan(1.0, norms)[None, :]
        anchor = tf.argmax(mask)
        anchor_row = tf.one_hot(anchor, num_tasks, dtype=gram.dtype)
        # Active row t != anchor: sum_s alpha_s (g_s.u_t - g_s.u_anchor) = 0.
        balance = tf.transpose(p - tf.gather(p, anchor, axis=1)[:, None]) * mask
        eye = tf.eye(num_tasks, dtype=gram.dtype)
        rows = tf.where(
            tf.cast(anchor_row, tf.bool)[:, None],
            mask[None, :],
            tf.where(active[:, None], balance, eye),
        )
        rhs = anchor_row[:, None]
        alpha = tf.linalg.lstsq(rows, rhs, fast=False)[:, 0]
        return alpha * mask
