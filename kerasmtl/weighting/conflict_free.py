"""ConFIG: the conflict-free direction of the unit task gradients.

Liu, Chu and Thuerey, "ConFIG: Towards Conflict-free Training of Physics
Informed Neural Networks", ICLR 2025. The update points along the direction
with the same positive cosine to every task gradient (the pseudo-inverse of
the unit gradients applied to the ones vector) and has the length of the sum
of the gradients' projections onto it. Follows the official code and
TorchJD's `ConFIG` (sum preference); the momentum variant (M-ConFIG) is not
included. The pseudo-inverse is taken on the `T x T` Gram matrix of the
unit gradients (`pinv(U) = U^T pinv(U U^T)`), in float64, dropping its
eigenvalues below 1e-6 of the largest: a float32 Gram matrix carries no
information below that, and inverting its rounding noise would blow up
nearly collinear gradients.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from kerasmtl.weighting.gradient_balancer import GradientBalancer, mask_gram

EIGENVALUE_CUTOFF = 1e-6


@keras.saving.register_keras_serializable(package="kerasmtl")
class ConFIG(GradientBalancer):
    """Conflict-free inverse gradients (Liu et al., ICLR 2025).

    Formula:
    ```
    u_t = g_t / ||g_t||;   U = [u_1; ...; u_T]
    d = U^+ 1;   d_u = d / ||d||          (u_t . d_u is the same for all t)
    update = (sum_t g_t . d_u) d_u
    ```

    Args:
        rep_grad: bool. Balance the gradients w.r.t. the shared
            representation. Defaults to `False`.

    Examples:

    >>> update = ConFIG().aggregate([[1.0, 0.0], [0.0, 2.0]], [1.0, 1.0])
    >>> [round(float(v), 4) for v in update]
    [1.5, 1.5]
    """

    def weights_from_gram(self, gram, losses, active, step):
        out_dtype = gram.dtype
        mask = tf.cast(active, tf.float64)
        gram = tf.cast(mask_gram(gram, active), tf.float64)
        inverse_norms = tf.math.divide_no_nan(1.0, tf.sqrt(tf.linalg.diag_part(gram)))
        unit_gram = gram * inverse_norms[:, None] * inverse_norms[None, :]
        values, vectors = tf.linalg.eigh(unit_gram)
        keep = values > EIGENVALUE_CUTOFF * tf.reduce_max(values)
        inverse_values = tf.where(keep, 1.0 / tf.where(keep, values, 1.0), 0.0)
        pinv = tf.matmul(vectors * inverse_values[None, :], vectors, transpose_b=True)
        # d = U^T beta = J^T alpha with alpha = beta / ||g||.
        alpha = tf.linalg.matvec(pinv, mask) * inverse_norms
        g_alpha = tf.linalg.matvec(gram, alpha)
        length = tf.reduce_sum(g_alpha)  # sum_t g_t . d, times ||d||
        norm_sq = tf.tensordot(alpha, g_alpha, 1)  # ||d||^2
        return tf.cast(alpha * tf.math.divide_no_nan(length, norm_sq), out_dtype)
