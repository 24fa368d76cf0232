"""Random Loss Weighting (RLW).

Lin, Ye, Xu, Shi and Zhang, "Reasonable Effectiveness of Random Weighting: A
Litmus Test for Multi-Task Learning", TMLR 2022 (arXiv 2111.10603, 2021).
Follows the official LibMTL code: normal samples through a softmax, drawn anew
at every training step.
"""

from __future__ import annotations

import keras
from keras import ops

from kerasmtl.weighting.base import LossWeighting


@keras.saving.register_keras_serializable(package="kerasmtl")
class RandomLossWeighting(LossWeighting):
    """Random loss weighting (Lin et al., 2021/2022).

    Formula:
    ```
    z ~ N(0, I_T);  w = softmax(z);  L = sum_t w_t * L_t
    ```
    New weights are drawn at every training step; evaluation reuses the last
    drawn weights (uniform 1/T before the first step). The sampler's state is
    a weight of the layer (`sampler_state`): saved models and backups
    continue the same stream.

    Args:
        seed: int or None. Seed of the weight sampler. Defaults to `None`.

    Examples:

    >>> w = RandomLossWeighting(seed=0)
    >>> round(float(w({"a": 1.0, "b": 1.0})), 6)
    1.0
    """

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed

    def build_state(self, num_tasks):
        self.task_weights.assign(ops.full((num_tasks,), 1.0 / num_tasks))
        # A SeedGenerator's state is not among the variables a layer saves:
        # its `[seed, draws]` becomes a weight of this layer instead, so that
        # backups (BackupAndRestore) and `.keras` files carry it and a resumed
        # or reloaded model continues the same stream. Untracked, so that the
        # state is not listed twice.
        generator = keras.random.SeedGenerator(self.seed)
        initial = keras.ops.convert_to_numpy(generator.state)
        generator.state = self.add_weight(
            shape=(2,),
            dtype=generator.state.dtype,
            initializer=keras.initializers.Constant(initial.tolist()),
            trainable=False,
            name="sampler_state",
            # Every replica draws the same weights.
            aggregation="only_first_replica",
        )
        object.__setattr__(self, "_sampler", generator)

    def combine(self, losses, present, training=False):
        if training:
            z = keras.random.normal(ops.shape(losses), seed=self._sampler)
            weights = ops.softmax(z)
        else:
            weights = ops.cast(self.task_weights, "float32")
        return ops.sum(weights * losses), weights

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}
