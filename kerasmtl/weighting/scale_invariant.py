"""The scale-invariant loss: the sum of the tasks' log-losses.

The baseline that Lin et al. call "scale-invariant (SI)" in "Dual-Balancing
Multi-Task Learning" (arXiv 2308.12029, 2023; DB-MTL's loss-scale part,
their Eq. 2), and the warm-up objective of LibMTL's STCH. Minimising
`sum_t log L_t` steps along `sum_t grad L_t / L_t`: each task weighted by
the inverse of its current loss, so multiplying one task's loss by a
constant (changing its units, its reduction) changes nothing but the value
of the total. LibMTL has no class for it; the official DB-MTL code takes
`log(L_t + 1e-8)` as here. The total returned is the sum of the log-losses
(it may be negative); a task with no known label in the batch is left out
(its `log(0 + epsilon)` would dominate).
"""

from __future__ import annotations

import keras
from keras import ops

from kerasmtl.weighting.arguments import check_float
from kerasmtl.weighting.base import LossWeighting


@keras.saving.register_keras_serializable(package="kerasmtl")
class ScaleInvariant(LossWeighting):
    """Sum of log-losses, the scale-invariant baseline (Lin et al., 2023).

    Formula:
    ```
    L = sum_t present_t * log(L_t + epsilon)
    dL/dL_t = 1 / (L_t + epsilon)         (reported as weight/<task>)
    ```

    Args:
        epsilon: float > 0. Added to each loss inside the log. Defaults to
            `1e-8` (the DB-MTL code's value).

    Examples:

    >>> w = ScaleInvariant()
    >>> round(float(w({"a": 1.0, "b": 4.0})), 4)
    1.3863
    >>> {k: round(v, 4) for k, v in w.current_weights().items()}
    {'a': 1.0, 'b': 0.25}
    """

    def __init__(self, epsilon: float = 1e-8, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = check_float("epsilon", epsilon, minimum=0, include_minimum=False)

    def combine(self, losses, present, training=False):
        known = present > 0
        # A zero placeholder for an absent task: log of it must not enter.
        safe = ops.where(known, losses, 1.0) + self.epsilon
        total = ops.sum(ops.where(known, ops.log(safe), 0.0))
        weights = ops.where(known, 1.0 / safe, 0.0)
        return total, weights

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}
