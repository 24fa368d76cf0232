"""The multi-label losses as plain functions: one value per label element,
no reduction, no masking (see `multilabel.py` for the formulas they share
and the `keras.losses.Loss` wrappers)."""

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
    check_range("gamma", gamma, 0.0, None)
    if alpha is not None:
        check_range("alpha", alpha, 0.0, 1.0)
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
    check_range("gamma_pos", gamma_pos, 0.0, None)
    check_range("gamma_neg", gamma_neg, 0.0, None)
    check_range("clip", clip, 0.0, 1.0, high_inclusive=False)
    return _element_loss(
        y_true, y_pred, from_logits, label_smoothing, pos_weight,
        gamma_pos=gamma_pos, gamma_neg=gamma_neg, alpha=None, clip=clip,
        stop_focusing_gradient=stop_focusing_gradient,
    )


def _element_loss(
    y_true, y_pred, from_logits, label_smoothing, pos_weight,
    gamma_pos, gamma_neg, alpha, clip, stop_focusing_gradient=False,
):
    check_range("label_smoothing", label_smoothing, 0.0, 1.0, high_inclusive=False)
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


def check_range(name, value, low, high, high_inclusive=True):
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


def check_pos_weight(pos_weight):
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
