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
import numpy as np
from keras import ops

# -- plain functions ------------------------------------------------------------


def sigmoid_crossentropy(
    y_true,
    y_pred,
    from_logits: bool = False,
    label_smoothing: float = 0.0,
    pos_weight: float | Sequence[float] | None = None,
):
    """Binary cross-entropy per label element, with smoothing and positive weights.

    `pos_weight` multiplies the positive term, as in PyTorch's
    `BCEWithLogitsLoss(pos_weight=...)`: `pos_weight = n_neg / n_pos` of a label
    balances its positives and negatives.

    Formula:
    ```
    y    = y_true * (1 - label_smoothing) + label_smoothing / 2
    loss = -(pos_weight * y * log(p) + (1 - y) * log(1 - p))
    ```

    Args:
        y_true: tensor of 0/1 targets, shape `(..., num_labels)`.
        y_pred: tensor of probabilities (or logits), same shape.
        from_logits: bool. Whether `y_pred` holds logits. Defaults to `False`.
        label_smoothing: float in [0, 1). Defaults to `0.0`.
        pos_weight: float, sequence of `num_labels` floats, or None. Weight of
            the positive term, per label. Defaults to `None` (1 for every label).

    Returns:
        The loss per element, shape of `y_pred`.

    Examples:

    >>> y_true, y_pred = [[1.0, 0.0]], [[0.8, 0.4]]
    >>> # -ln 0.8 = 0.2231 and -ln 0.6 = 0.5108; pos_weight 2 doubles the first
    >>> print(np.round(np.asarray(sigmoid_crossentropy(y_true, y_pred), "float64"), 4))
    [[0.2231 0.5108]]
    >>> loss = sigmoid_crossentropy(y_true, y_pred, pos_weight=[2.0, 2.0])
    >>> print(np.round(np.asarray(loss, "float64"), 4))
    [[0.4463 0.5108]]
    """
    return _element_loss(
        y_true, y_pred, from_logits, label_smoothing, pos_weight,
        gamma_pos=0.0, gamma_neg=0.0, alpha=None, clip=0.0,
    )


def sigmoid_focal_loss(
    y_true,
    y_pred,
    gamma: float = 2.0,
    alpha: float | None = 0.25,
    from_logits: bool = False,
    label_smoothing: float = 0.0,
    pos_weight: float | Sequence[float] | None = None,
):
    """Focal loss per label element (Lin, Goyal, Girshick, He and Dollár, "Focal
    Loss for Dense Object Detection", ICCV 2017).

    Down-weights well-classified elements by `(1 - p_t)^gamma`. Defaults are
    the paper's best setting (`gamma=2`, `alpha=0.25`, also torchvision's);
    `gamma=0, alpha=None` is plain cross-entropy.

    Formula:
    ```
    loss = -(pos_weight * y * alpha * (1 - p)^gamma * log(p)
             + (1 - y) * (1 - alpha) * p^gamma * log(1 - p))
    ```

    Args:
        y_true: tensor of 0/1 targets, shape `(..., num_labels)`.
        y_pred: tensor of probabilities (or logits), same shape.
        gamma: float >= 0. Focusing parameter. Defaults to `2.0`.
        alpha: float in [0, 1] or None. Weight of positives (negatives get
            `1 - alpha`); None weights both by 1. Defaults to `0.25`.
        from_logits: bool. Whether `y_pred` holds logits. Defaults to `False`.
        label_smoothing: float in [0, 1). Defaults to `0.0`.
        pos_weight: float, sequence of `num_labels` floats, or None. Extra
            weight of the positive term, per label. Defaults to `None`.

    Returns:
        The loss per element, shape of `y_pred`.

    Examples:

    >>> # 0.25 * 0.2^2 * -ln 0.8 = 0.0022 and 0.75 * 0.4^2 * -ln 0.6 = 0.0613
    >>> loss = sigmoid_focal_loss([[1.0, 0.0]], [[0.8, 0.4]])
    >>> print(np.round(np.asarray(loss, "float64"), 4))
    [[0.0022 0.0613]]
    """
    _check_range("gamma", gamma, 0.0, None)
    if alpha is not None:
        _check_range("alpha", alpha, 0.0, 1.0)
    return _element_loss(
        y_true, y_pred, from_logits, label_smoothing, pos_weight,
        gamma_pos=gamma, gamma_neg=gamma, alpha=alpha, clip=0.0,
    )


def asymmetric_loss(
    y_true,
    y_pred,
    gamma_pos: float = 0.0,
    gamma_neg: float = 4.0,
    clip: float = 0.05,
    from_logits: bool = False,
    label_smoothing: float = 0.0,
    pos_weight: float | Sequence[float] | None = None,
    stop_focusing_gradient: bool = False,
):
    """Asymmetric loss, ASL (Ridnik, Ben-Baruch, Zamir, Noy, Friedman, Protter
    and Zelnik-Manor, "Asymmetric Loss For Multi-Label Classification", ICCV
    2021).

    Focuses positives and negatives differently (`gamma_pos`, `gamma_neg`) and
    shifts negative probabilities by a margin `clip` (`p_m = max(p - clip, 0)`),
    which discards easy negatives and mislabeled ones with a very high `p`.
    Follows the official code (Alibaba-MIIL/ASL, `AsymmetricLoss`):
    `1 - p_m = min(1 - p + clip, 1)`, focusing weight `(1 - p_t)^gamma` with
    `p_t = p` for positives and `1 - p_m` for negatives; defaults are those of
    its training script (`gamma_neg=4, gamma_pos=0, clip=0.05`). Differences:
    logs come from log-sigmoids or `eps`-clipped probabilities instead of a
    clamp at 1e-8, and no sum over the batch (the task takes a masked mean).

    Formula:
    ```
    p_m  = max(p - clip, 0)
    loss = -(pos_weight * y * (1 - p)^gamma_pos * log(p)
             + (1 - y) * p_m^gamma_neg * log(1 - p_m))
    ```

    Args:
        y_true: tensor of 0/1 targets, shape `(..., num_labels)`.
        y_pred: tensor of probabilities (or logits), same shape.
        gamma_pos: float >= 0. Focusing of positives. Defaults to `0.0`.
        gamma_neg: float >= 0. Focusing of negatives. Defaults to `4.0`.
        clip: float in [0, 1). Probability margin of negatives. Defaults to `0.05`.
        from_logits: bool. Whether `y_pred` holds logits. Defaults to `False`.
        label_smoothing: float in [0, 1). Defaults to `0.0`.
        pos_weight: float, sequence of `num_labels` floats, or None. Extra
            weight of the positive term, per label. Defaults to `None`.
        stop_focusing_gradient: bool. Treat the focusing weights as constants
            in backpropagation, as the official training script does
            (`disable_torch_grad_focal_loss=True`). Defaults to `False` (the
            loss as written, differentiated everywhere).

    Returns:
        The loss per element, shape of `y_pred`.

    Examples:

    >>> # positive: -ln 0.8 = 0.2231 (gamma_pos 0);
    >>> # negative: p_m = 0.35, 0.35^4 * -ln 0.65 = 0.0065
    >>> loss = asymmetric_loss([[1.0, 0.0]], [[0.8, 0.4]])
    >>> print(np.round(np.asarray(loss, "float64"), 4))
    [[0.2231 0.0065]]
    """
    _check_range("gamma_pos", gamma_pos, 0.0, None)
    _check_range("gamma_neg", gamma_neg, 0.0, None)
    _check_range("clip", clip, 0.0, 1.0, high_inclusive=False)
    return _element_loss(
        y_true, y_pred, from_logits, label_smoothing, pos_weight,
        gamma_pos=gamma_pos, gamma_neg=gamma_neg, alpha=None, clip=clip,
        stop_focusing_gradient=stop_focusing_gradient,
    )


def _element_loss(
    y_true, y_pred, from_logits, label_smoothing, pos_weight,
    gamma_pos, gamma_neg, alpha, clip, stop_focusing_gradient=False,
):
    _check_range("label_smoothing", label_smoothing, 0.0, 1.0, high_inclusive=False)
    y_pred = ops.convert_to_tensor(y_pred)
    if not str(y_pred.dtype).startswith("float"):
        y_pred = ops.cast(y_pred, "float32")
    y = ops.cast(y_true, y_pred.dtype)
    if label_smoothing:
        y = y * (1.0 - label_smoothing) + 0.5 * label_smoothing
    p, log_p, log_1mp = _log_probabilities(y_pred, from_logits)
    one_minus_p = ops.exp(log_1mp)  # sigmoid(-z) from logits: exact near p = 1

    # Negative side: ASL's shifted probability p_m; log(1 - p_m) >= log(clip)
    # is finite, so taking the log of the sum is safe.
    if clip:
        p_neg = ops.maximum(p - clip, 0.0)
        log_1m_pneg = ops.log(ops.minimum(one_minus_p + clip, 1.0))
    else:
        p_neg, log_1m_pneg = p, log_1mp

    w_pos = _safe_power(one_minus_p, gamma_pos)
    w_neg = _safe_power(p_neg, gamma_neg)
    if stop_focusing_gradient:
        w_pos, w_neg = ops.stop_gradient(w_pos), ops.stop_gradient(w_neg)
    if alpha is not None:
        w_pos, w_neg = alpha * w_pos, (1.0 - alpha) * w_neg
    if pos_weight is not None:
        w_pos = w_pos * ops.cast(ops.convert_to_tensor(pos_weight), y_pred.dtype)
    return -(y * w_pos * log_p + (1.0 - y) * w_neg * log_1m_pneg)


def _log_probabilities(y_pred, from_logits):
    """`(p, log p, log(1 - p))` from logits (exact) or probabilities (clipped)."""
    if from_logits:
        return ops.sigmoid(y_pred), ops.log_sigmoid(y_pred), ops.log_sigmoid(-y_pred)
    eps = keras.config.epsilon()
    p = ops.clip(y_pred, eps, 1.0 - eps)
    return p, ops.log(p), ops.log1p(-p)


def _safe_power(x, gamma):
    """`x ** gamma` for x >= 0 with a finite gradient at x = 0 for any gamma."""
    if gamma == 0:
        return ops.ones_like(x)  # x^0: no d/dx 0^-1 = inf times 0 = NaN
    if gamma == 1:
        return x
    positive = x > 0
    # Double where: the untaken branch must not produce an infinite gradient.
    return ops.where(positive, ops.power(ops.where(positive, x, 1.0), gamma), 0.0)


def _check_range(name, value, low, high, high_inclusive=True):
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, bool
    )
    ok = ok and value >= low and (
        high is None or (value <= high if high_inclusive else value < high)
    )
    if not ok:
        if high is None:
            expected = f"a float >= {low}"
        else:
            expected = f"a float in [{low}, {high}{']' if high_inclusive else ')'}"
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected {expected}. "
            f"Received: {name}={value!r}"
        )


def _check_pos_weight(pos_weight):
    if pos_weight is None:
        return None
    values = np.asarray(pos_weight, dtype="float64")
    if values.ndim > 1 or values.size == 0 or not np.all(np.isfinite(values)) or np.any(
        values <= 0
    ):
        raise ValueError(
            "Invalid value for argument `pos_weight`. Expected a float > 0 or a "
            f"list of floats > 0 (one per label). Received: pos_weight={pos_weight!r}"
        )
    return float(values) if values.ndim == 0 else [float(v) for v in values]


# -- Loss wrappers ---------------------------------------------------------------


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
        _check_range("label_smoothing", label_smoothing, 0.0, 1.0, high_inclusive=False)
        self.from_logits = bool(from_logits)
        self.label_smoothing = float(label_smoothing)
        self.pos_weight = _check_pos_weight(pos_weight)

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
        _check_range("gamma", gamma, 0.0, None)
        if alpha is not None:
            _check_range("alpha", alpha, 0.0, 1.0)
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
        _check_range("gamma_pos", gamma_pos, 0.0, None)
        _check_range("gamma_neg", gamma_neg, 0.0, None)
        _check_range("clip", clip, 0.0, 1.0, high_inclusive=False)
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
