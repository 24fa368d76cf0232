"""Nash-MTL: the Nash bargaining solution of the task gradients.

Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik and Fetaya, "Multi-Task
Learning as a Bargaining Game", ICML 2022. Like the official code, the Gram
matrix is divided by its Frobenius norm and the weights solve
`(G G^T) alpha = 1 / alpha`. The official code approaches that with 20
sequential convex programs in cvxpy and updates the weights every step
(`update_weights_every=1`); here the same equation is the stationary point of
the strictly convex `f(a) = a^T M a / 2 - sum_t log a_t`, minimised in the
TensorFlow graph by damped Newton steps (which stay positive). The official
`max_norm` gradient clipping is left to the optimizer (`clipnorm=`).
Balances the shared parameters' gradients only (no `rep_grad`).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from kerasmtl.weighting.arguments import check_int
from kerasmtl.weighting.gradient_balancer import GradientBalancer, mask_gram


@keras.saving.register_keras_serializable(package="kerasmtl")
class NashMTL(GradientBalancer):
    """Nash bargaining MTL (Navon et al., ICML 2022).

    Formula:
    ```
    M = G G^T / ||G G^T||_F
    alpha > 0 with  M alpha = 1 / alpha   (element-wise)
    update = sum_t alpha_t g_t
    ```
    For orthogonal gradients `alpha_t = 1 / sqrt(M_tt)`: every task's term
    `alpha_t g_t` then has the same norm.

    Args:
        iterations: int. Damped Newton iterations. Defaults to `20`.

    Examples:

    >>> update = NashMTL().aggregate([[1.0, 0.0], [0.0, 2.0]], [1.0, 1.0])
    >>> [round(float(v), 4) for v in update]
    [2.0305, 2.0305]
    """

    supports_rep_grad = False
    trace_aggregate = True

    def __init__(self, iterations: int = 20, rep_grad: bool = False, **kwargs):
        super().__init__(rep_grad=rep_grad, **kwargs)
        self.iterations = check_int("iterations", iterations, minimum=1)

    def weights_from_gram(self, gram, losses, active, step):
        mask = tf.cast(active, gram.dtype)
        gram = mask_gram(gram, active)
        m = tf.math.divide_no_nan(gram, tf.norm(gram))
        # Inactive tasks decouple (identity rows): their alpha solves a = 1/a.
        m = m + tf.linalg.diag(1.0 - mask)
        alpha0 = tf.math.rsqrt(tf.maximum(tf.linalg.diag_part(m), 1e-12))

        def body(i, alpha):
            grad = tf.linalg.matvec(m, alpha) - 1.0 / alpha
            hessian = m + tf.linalg.diag(1.0 / tf.square(alpha))
            delta = tf.linalg.solve(hessian, grad[:, None])[:, 0]
            decrement = tf.sqrt(tf.maximum(tf.tensordot(grad, delta, 1), 0.0))
            return i + 1, alpha - delta / (1.0 + decrement)

        _, alpha = tf.while_loop(
            lambda i, a: i < self.iterations, body, (0, alpha0)
        )
        return alpha * mask

    def get_config(self):
        return {**super().get_config(), "iterations": self.iterations}
