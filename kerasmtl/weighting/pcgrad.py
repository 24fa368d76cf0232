"""PCGrad: projecting conflicting gradients.

Yu, Kumar, Gupta, Levine, Hausman and Finn, "Gradient Surgery for Multi-Task
Learning", NeurIPS 2020 (Algorithm 1). Each task gradient is projected, in a
random order of the other tasks, onto the normal plane of every gradient it
conflicts with; the update is the sum of the projected gradients. Follows the
paper (the other tasks only; the official TF code also visits the task
itself, a no-op unless its projection turned against it). The random order
is drawn in the graph from `(seed, optimizer step, task)`, so every replica
draws the same one.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from kerasmtl.weighting.gradient_balancer import GradientBalancer


@keras.saving.register_keras_serializable(package="kerasmtl")
class PCGrad(GradientBalancer):
    """Gradient surgery (Yu et al., NeurIPS 2020).

    Formula:
    ```
    for each task i:   g_i' = g_i
        for j != i in random order:
            if g_i' . g_j < 0:   g_i' -= (g_i' . g_j / ||g_j||^2) g_j
    update = sum_i g_i'
    ```
    Each `g_i'` stays a combination of the task gradients, so the update is
    computed from their Gram matrix (coefficients `C`, `g_i' = C_i G`).

    Args:
        seed: int. Seed of the random task order. Defaults to `0`.
        rep_grad: bool. Balance the gradients w.r.t. the shared
            representation. Defaults to `False`.

    Examples:

    >>> update = PCGrad().aggregate([[1.0, 0.0], [-1.0, 1.0]], [1.0, 1.0])
    >>> [round(float(v), 4) for v in update]
    [0.5, 1.5]
    """

    def __init__(self, seed: int = 0, rep_grad: bool = False, **kwargs):
        super().__init__(rep_grad=rep_grad, **kwargs)
        self.seed = int(seed)

    def weights_from_gram(self, gram, losses, active, step):
        num_tasks = gram.shape[0]
        norms_sq = tf.linalg.diag_part(gram)
        eye = tf.eye(num_tasks, dtype=gram.dtype)
        seed = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(step, tf.int64)])
        total = tf.zeros([num_tasks], gram.dtype)
        for i in range(num_tasks):
            coefficients = eye[i] * tf.cast(active[i], gram.dtype)
            task_seed = tf.random.experimental.stateless_fold_in(seed, i)
            order = tf.argsort(tf.random.stateless_uniform([num_tasks], task_seed))
            for k in range(num_tasks):
                j = order[k]
                dot = tf.tensordot(coefficients, gram[:, j], 1)  # g_i' . g_j
                conflict = tf.logical_and(dot < 0, tf.not_equal(j, i))
                step_size = tf.math.divide_no_nan(dot, tf.gather(norms_sq, j))
                coefficients -= tf.where(conflict, step_size, 0.0) * tf.gather(eye, j)
            total += coefficients
        return total

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}
