"""Soft parameter sharing in a `MultiTaskModel`: the L2 penalty that pulls
corresponding layers of the task towers together (`kerasmtl.sharing.soft_sharing`
builds the towers and names the groups), and the check of its config. A mixin
of `MultiTaskModel`; `compute_loss` adds the penalty as `loss/soft_sharing`."""

from __future__ import annotations

from keras import ops


class SoftSharingMixin:
    """`soft_sharing_penalty` over the model's `soft_sharing` config."""

    def soft_sharing_penalty(self):
        """The soft-sharing L2 penalty (already multiplied by its strength).

        Formula:
        ```
        P = penalty * sum_groups sum_params sum_{t<u} ||W_t - W_u||^2
        ```
        """
        total = 0.0
        for group in self.soft_sharing["groups"]:
            layers = [self.get_layer(n) for n in group]
            for weights in zip(*(layer.trainable_weights for layer in layers)):
                for i in range(len(weights)):
                    for j in range(i + 1, len(weights)):
                        total = total + ops.sum(ops.square(weights[i] - weights[j]))
        return ops.cast(total, "float32") * self.soft_sharing["penalty"]


def check_soft_sharing(model, soft_sharing):
    """`soft_sharing` (`{"penalty": float >= 0, "groups": [[layer names]]}`)
    normalised, or None; a ValueError for a negative penalty or a layer name
    that `model` does not have."""
    if not soft_sharing:
        return None
    penalty = float(soft_sharing.get("penalty", 0.0))
    if penalty < 0:
        raise ValueError(
            f"Invalid soft-sharing penalty {penalty}. Expected a float >= 0."
        )
    groups = [list(g) for g in soft_sharing.get("groups", [])]
    for group in groups:
        for layer_name in group:
            model.get_layer(layer_name)  # raises a ValueError naming the layer
    return {"penalty": penalty, "groups": groups}
