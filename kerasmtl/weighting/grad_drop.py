"""GradDrop: gradient sign dropout.

Chen, Ngiam, Huang, Luong, Kretzschmar, Chai and Anguelov, "Just Pick a Sign:
Optimizing Deep Multitask Models with Gradient Sign Dropout", NeurIPS 2020.
At each entry of the shared gradient, the tasks' gradients may disagree in
sign. GradDrop measures the entry's sign purity
`P = (1 + sum_t g_t / sum_t |g_t|) / 2`, draws `U ~ uniform(0, 1)`, and keeps
only the positive gradients there if `P > U`, only the negative ones
otherwise; so an entry where all tasks agree is kept whole, and a conflicted
one follows one sign, chosen with probability proportional to its mass.

Not a Gram-matrix method: it overrides `combine_gradients`, which the
balanced train step applies to the `[T, n]` task gradients (parameter mode)
or to the gradients of the shared representation (`rep_grad=True`, as in
LibMTL and the paper, which puts the GradDrop layer on an activation). It
follows TorchJD's `GradDrop` aggregator (purity per entry of the matrix it
is given, an optional leak) and LibMTL's port (scalar `leak`). Departures:
with `rep_grad=True`, the paper and LibMTL first multiply the activation
gradients by `sign(activation)` and sum them over the batch, so that one
mask serves all examples; here the purity is taken per entry (per example
and feature), as TorchJD does on any matrix, and not marginalised over the
batch; the purity has no `1e-7` in its denominator (an entry where every
gradient is zero is 0 whatever the mask), which keeps the update exactly
proportional to the loss scale of mixed precision. `U` is drawn from a
Keras `SeedGenerator` (saved with the model); under `tf.distribute` every
replica draws the same `U`, and in parameter mode sees the same all-reduced
gradients, so the update equals the single-device one. A task with no
known label in the batch is left out.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from kerasmtl.weighting.arguments import check_float
from kerasmtl.weighting.gradient_balancer import GradientBalancer

SEED_STATE_KEY = "seed_generator_state"


@keras.saving.register_keras_serializable(package="kerasmtl")
class GradDrop(GradientBalancer):
    """Gradient sign dropout (Chen et al., NeurIPS 2020).

    Formula:
    ```
    P = (1 + sum_t g_t / sum_t |g_t|) / 2          (per entry)
    U ~ uniform(0, 1)                               (per entry)
    M_t = [P > U] [g_t > 0] + [P < U] [g_t < 0]
    update = sum_t (leak + (1 - leak) M_t) g_t
    ```
    In expectation (leak 0) an entry gets `P sum_{g_t > 0} g_t +
    (1 - P) sum_{g_t < 0} g_t`.

    Args:
        leak: float in [0, 1]. Fraction of each task gradient kept whatever
            the mask (1: the plain sum). Defaults to `0.0` (the paper's and
            LibMTL's default).
        seed: int or None. Seed of the random draws. Defaults to `None`
            (a random seed).
        rep_grad: bool. Drop entries of the gradients w.r.t. the shared
            representation instead of the shared parameters. Defaults to
            `False`.

    Examples:

    >>> update = GradDrop(seed=0).aggregate([[1.0, 2.0], [3.0, 0.0]], [1.0, 1.0])
    >>> [round(float(v), 4) for v in update]  # no conflict: the plain sum
    [4.0, 2.0]
    """

    def __init__(
        self, leak: float = 0.0, seed: int | None = None, rep_grad: bool = False, **kwargs
    ):
        super().__init__(rep_grad=rep_grad, **kwargs)
        self.leak = check_float("leak", leak, minimum=0, maximum=1)
        if seed is not None and int(seed) != seed:
            raise ValueError(
                f"Invalid value for argument `seed`. Expected an int or None. Received: seed={seed!r}"
            )
        self.seed = None if seed is None else int(seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed, name="graddrop_seed")

    def weights_from_gram(self, gram, losses, active, step):
        return tf.cast(active, gram.dtype)

    def combine_gradients(self, grads, weights):
        grads = grads * tf.cast(weights, grads.dtype)[:, None]  # absent tasks: 0
        purity = 0.5 * (
            1.0
            + tf.math.divide_no_nan(
                tf.reduce_sum(grads, axis=0), tf.reduce_sum(tf.abs(grads), axis=0)
            )
        )
        uniform = tf.random.stateless_uniform(
            tf.shape(purity), seed=self.seed_generator.next(), dtype=purity.dtype
        )
        keep = tf.where(purity[None, :] > uniform[None, :], grads > 0, grads < 0)
        kept = tf.where(keep, grads, tf.zeros_like(grads))
        return tf.reduce_sum(self.leak * grads + (1.0 - self.leak) * kept, axis=0)

    # Keras saves a layer's own variables, not its SeedGenerator's state:
    # saved here, so that a loaded model goes on with the same draws.
    def save_own_variables(self, store):
        super().save_own_variables(store)
        store[SEED_STATE_KEY] = self.seed_generator.state

    def load_own_variables(self, store):
        keys = list(store.keys())
        super().load_own_variables({k: store[k] for k in keys if k != SEED_STATE_KEY})
        if SEED_STATE_KEY in keys:
            self.seed_generator.state.assign(store[SEED_STATE_KEY])

    def get_config(self):
        return {**super().get_config(), "leak": self.leak, "seed": self.seed}
