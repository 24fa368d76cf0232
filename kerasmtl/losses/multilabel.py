"""Multi-label losses: sigmoid cross-entropy, focal loss and asymmetric loss.

Each loss comes as a plain function that returns one value per label element
(no reduction, no masking: a task masks unknown labels element by element) and
as a `keras.losses.Loss` wrapper usable in `keras.Model.compile`, whose `call`
gives each example's mean over its known labels (`-1` marks an unknown one).

Inputs are probabilities by default, because every kerasmtl model outputs
probabilities (serving relies on it). They are clipped to `[eps, 1 - eps]`
(`eps = keras.config.epsilon()`, 1e-7, as Keras' own cross-entropy) before the
logs are taken, so the loss is finite and its gradient too, also at `p = 0`
or `p = 1`. With `from_logits=True` every log is a log-sigmoid of the logits:
exact and stable for any logit. Each loss is written once in terms of `p`,
`log(p)` and `log(1 - p)`, so the two input kinds share the same formula.

All three share one form, linear in the (possibly smoothed) target `y`:

```
loss = -(pos_weight * y * w_pos * log(p) + (1 - y) * w_neg * log(1 - p_neg))
```

with `w_pos = w_neg = 1, p_neg = p` for cross-entropy; `w_pos = alpha (1-p)^gamma,
w_neg = (1-alpha) p^gamma` for focal loss; `w_pos = (1-p)^gamma_pos,
w_neg = p_m^gamma_neg, p_neg = p_m = max(p - clip, 0)` for the asymmetric loss.
For 0/1 targets this is exactly the papers' losses; label smoothing mixes the
positive and the negative term of each element.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

from kerasmtl.losses.multilabel_functions import (
    asymmetric_loss,
    check_pos_weight,
    check_range,
    sigmoid_crossentropy,
    sigmoid_focal_loss,
)


class MultiLabelLoss(keras.losses.Loss):
    """Base of the multi-label loss wrappers.

    `elementwise(y_true, y_pred)` is the loss per label element (what a
    `MultiLabel` task masks and averages); `call` masks targets of `-1` and
    returns each example's mean over its known labels (0 if none), which Keras
    then reduces over the batch.

    Args:
        from_logits: bool. Whether predictions are logits. Defaults to `False`.
        label_smoothing: float in [0, 1). Defaults to `0.0`.
        pos_weight: float, list of floats (one per label), or None. Weight of
            the positive term. Defaults to `None`.
        reduction, name, dtype: as for `keras.losses.Loss`.
    """

    def __init__(
        self,
        from_logits: bool = False,
        label_smoothing: float = 0.0,
        pos_weight: float | Sequence[float] | None = None,
        reduction: str = "sum_over_batch_size",
        name: str | None = None,
        dtype=None,
    ):
        super().__init__(reduction=reduction, name=name, dtype=dtype)
        check_range("label_smoothing", label_smoothing, 0.0, 1.0, high_inclusive=False)
        self.from_logits = bool(from_logits)
        self.label_smoothing = float(label_smoothing)
        self.pos_weight = check_pos_weight(pos_weight)

    def elementwise(self, y_true, y_pred):
        raise NotImplementedError

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        known = ops.cast(y_true >= 0, "float32")
        values = ops.cast(self.elementwise(ops.where(y_true >= 0, y_true, 0.0), y_pred),
                          "float32")
        values = ops.where(known > 0, values, 0.0)
        return ops.divide_no_nan(ops.sum(values, axis=-1), ops.sum(known, axis=-1))

    def get_config(self):
        return {
            **super().get_config(),
            "from_logits": self.from_logits,
            "label_smoothing": self.label_smoothing,
            "pos_weight": self.pos_weight,
        }


@keras.saving.register_keras_serializable(package="kerasmtl")
class SigmoidCrossentropy(MultiLabelLoss):
    """Binary cross-entropy over independent labels; see `sigmoid_crossentropy`.

    Args:
        from_logits, label_smoothing, pos_weight, reduction, name, dtype: see
            `MultiLabelLoss`.

    Examples:

    >>> loss = SigmoidCrossentropy()
    >>> # the second label is unknown: the mean is -ln 0.8 alone
    >>> round(float(loss([[1.0, -1.0]], [[0.8, 0.3]])), 4)
    0.2231
    """

    def __init__(self, from_logits=False, label_smoothing=0.0, pos_weight=None,
                 reduction="sum_over_batch_size", name="sigmoid_crossentropy",
                 dtype=None):
        super().__init__(from_logits, label_smoothing, pos_weight, reduction, name, dtype)

    def elementwise(self, y_true, y_pred):
        return sigmoid_crossentropy(
            y_true, y_pred, self.from_logits, self.label_smoothing, self.pos_weight
        )


@keras.saving.register_keras_serializable(package="kerasmtl")
class SigmoidFocalLoss(MultiLabelLoss):
    """Focal loss over independent labels; see `sigmoid_focal_loss`.

    Args:
        gamma: float >= 0. Defaults to `2.0`.
        alpha: float in [0, 1] or None. Defaults to `0.25`.
        from_logits, label_smoothing, pos_weight, reduction, name, dtype: see
            `MultiLabelLoss`.

    Examples:

    >>> # (0.25 * 0.2^2 * -ln 0.8 + 0.75 * 0.4^2 * -ln 0.6) / 2 = 0.0635 / 2
    >>> round(float(SigmoidFocalLoss()([[1.0, 0.0]], [[0.8, 0.4]])), 4)
    0.0318
    """

    def __init__(self, gamma=2.0, alpha=0.25, from_logits=False, label_smoothing=0.0,
                 pos_weight=None, reduction="sum_over_batch_size",
                 name="sigmoid_focal_loss", dtype=None):
        super().__init__(from_logits, label_smoothing, pos_weight, reduction, name, dtype)
        check_range("gamma", gamma, 0.0, None)
        if alpha is not None:
            check_range("alpha", alpha, 0.0, 1.0)
        self.gamma = float(gamma)
        self.alpha = None if alpha is None else float(alpha)

    def elementwise(self, y_true, y_pred):
        return sigmoid_focal_loss(
            y_true, y_pred, self.gamma, self.alpha, self.from_logits,
            self.label_smoothing, self.pos_weight,
        )

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma, "alpha": self.alpha}


@keras.saving.register_keras_serializable(package="kerasmtl")
class AsymmetricLoss(MultiLabelLoss):
    """Asymmetric loss (ASL) over independent labels; see `asymmetric_loss`.

    Args:
        gamma_pos: float >= 0. Defaults to `0.0`.
        gamma_neg: float >= 0. Defaults to `4.0`.
        clip: float in [0, 1). Defaults to `0.05`.
        stop_focusing_gradient: bool. Defaults to `False`.
        from_logits, label_smoothing, pos_weight, reduction, name, dtype: see
            `MultiLabelLoss`.

    Examples:

    >>> # (0.2231 + 0.0065) / 2
    >>> round(float(AsymmetricLoss()([[1.0, 0.0]], [[0.8, 0.4]])), 4)
    0.1148
    """

    def __init__(self, gamma_pos=0.0, gamma_neg=4.0, clip=0.05,
                 stop_focusing_gradient=False, from_logits=False, label_smoothing=0.0,
                 pos_weight=None, reduction="sum_over_batch_size",
                 name="asymmetric_loss", dtype=None):
        super().__init__(from_logits, label_smoothing, pos_weight, reduction, name, dtype)
        check_range("gamma_pos", gamma_pos, 0.0, None)
        check_range("gamma_neg", gamma_neg, 0.0, None)
        check_range("clip", clip, 0.0, 1.0, high_inclusive=False)
        self.gamma_pos = float(gamma_pos)
        self.gamma_neg = float(gamma_neg)
        self.clip = float(clip)
        self.stop_focusing_gradient = bool(stop_focusing_gradient)

    def elementwise(self, y_true, y_pred):
        return asymmetric_loss(
            y_true, y_pred, self.gamma_pos, self.gamma_neg, self.clip,
            self.from_logits, self.label_smoothing, self.pos_weight,
            self.stop_focusing_gradient,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "gamma_pos": self.gamma_pos,
            "gamma_neg": self.gamma_neg,
            "clip": self.clip,
            "stop_focusing_gradient": self.stop_focusing_gradient,
        }
