"""Aligned-MTL: aligning the principal components of the task gradients.

Senushkin, Patakin, Kuznetsov and Konushin, "Independent Component Alignment
for Multi-Task Learning", CVPR 2023. Follows the official code
(`ProcrustesSolver`): the eigendecomposition of the `T x T` Gram matrix gives
the stable linear system `B = sigma V Lambda^{-1/2} V^T` with the smallest
singular value as scale (`scale="min"`; also "median", "rmse"), eigenvalues
below `max(Lambda) * T * eps` dropped; the update is `sum_t (B 1)_t g_t`.
`rep_grad=True` is the paper's Aligned-MTL-UB.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from kerasmtl.weighting.arguments import check_choice
from kerasmtl.weighting.gradient_balancer import GradientBalancer, mask_gram

SCALES = ("min", "median", "rmse")


@keras.saving.register_keras_serializable(package="kerasmtl")
class AlignedMTL(GradientBalancer):
    """Aligned-MTL (Senushkin et al., CVPR 2023).

    Formula:
    ```
    G G^T = V Lambda V^T   (rank r: the eigenvalues above tolerance)
    B = sigma * V_r Lambda_r^{-1/2} V_r^T,  sigma = sqrt(min Lambda_r)  ("min")
    update = sum_t (B 1)_t g_t        (the aligned gradients G^T B, summed)
    ```
    The aligned gradients are orthogonal with equal norms `sigma`.

    Args:
        scale: str. "min", "median" or "rmse" (sigma from the smallest, the
            median or the root mean square singular value). Defaults to
            `"min"`.
        rep_grad: bool. Aligned-MTL-UB: align the gradients w.r.t. the shared
            representation. Defaults to `False`.

    Examples:

    >>> update = AlignedMTL().aggregate([[1.0, 0.0], [0.0, 2.0]], [1.0, 1.0])
    >>> [round(float(v), 4) for v in update]
    [1.0, 1.0]
    """

    def __init__(self, scale: str = "min", rep_grad: bool = False, **kwargs):
        super().__init__(rep_grad=rep_grad, **kwargs)
        self.scale = check_choice("scale", scale, SCALES)

    def weights_from_gram(self, gram, losses, active, step):
        num_tasks = gram.shape[0]
        gram = mask_gram(gram, active)
        eigenvalues, vectors = tf.linalg.eigh(gram)
        tolerance = tf.reduce_max(eigenvalues) * num_tasks * np.finfo("float32").eps
        kept = eigenvalues > tolerance
        kept_values = tf.where(kept, eigenvalues, 0.0)
        count = tf.reduce_sum(tf.cast(kept, gram.dtype))
        if self.scale == "min":
            square = tf.reduce_min(tf.where(kept, eigenvalues, np.inf))
        elif self.scale == "rmse":
            square = tf.math.divide_no_nan(tf.reduce_sum(kept_values), count)
        else:  # the median of the kept eigenvalues (they sort ascending)
            num_dropped = num_tasks - tf.cast(count, tf.int32)
            middle = num_dropped + (tf.cast(count, tf.int32) - 1) // 2
            upper = num_dropped + tf.cast(count, tf.int32) // 2
            square = (tf.gather(eigenvalues, middle) + tf.gather(eigenvalues, upper)) / 2
        sigma = tf.sqrt(tf.where(count > 0, square, 0.0))
        scales = tf.where(kept, sigma * tf.math.rsqrt(tf.where(kept, eigenvalues, 1.0)), 0.0)
        b = tf.matmul(vectors * scales[None, :], vectors, transpose_b=True)
        return tf.reduce_sum(b, axis=1) * tf.cast(active, gram.dtype)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}
