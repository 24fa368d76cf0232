"""CenterNet's detection loss ("Objects as Points", Zhou, Wang and Krähenbühl,
arXiv 2019), following the official code (xingyizhou/CenterNet, `_neg_loss`
and `RegL1Loss`).

- Heat map: the penalty-reduced pixel-wise focal loss of CornerNet, summed
  over cells and classes and divided by the number of peaks (cells whose
  target is exactly 1); with no peak in the batch the sum is divided by 1,
  as the official code's `num_pos == 0` branch (only the negatives' term).
- Size `(w, h)` and offset: L1 at the object centers, divided by the number
  of regressed coordinates (CenterNet's `mask.sum()`).
- `loss = heatmap + size_weight * size + offset_weight * offset`, with the
  paper's weights 0.1 and 1. No GIoU term: CenterNet's L1 needs no box
  decoding in the loss and matches the published recipe.

Heat-map terms are computed from logits with log-sigmoids (finite for any
logit) instead of the official code's probabilities clamped to
`[1e-4, 1 - 1e-4]`. Examples whose label is missing (NaN boxes) are masked
out; a batch of only missing labels gives exactly 0.
"""

from __future__ import annotations

import keras
from keras import ops

from kerasmtl.autograph import skip_autograph
from kerasmtl.layers.detection import centernet_targets


def centernet_focal_loss(heatmap_true, logits, alpha: float = 2.0, beta: float = 4.0):
    """Penalty-reduced focal loss per heat-map cell (CornerNet / CenterNet).

    Formula:
    ```
    p    = sigmoid(logits)
    loss = -(1 - p)^alpha * log(p)                    where y == 1
           -(1 - y)^beta * p^alpha * log(1 - p)       elsewhere
    ```

    Args:
        heatmap_true: float tensor of Gaussian targets in [0, 1].
        logits: float tensor, same shape.
        alpha: float >= 1. Focusing exponent. Defaults to `2.0`.
        beta: float >= 0. Penalty reduction near peaks. Defaults to `4.0`.

    Returns:
        The loss per cell, shape of `logits`.

    Examples:

    >>> # peak, p = 0.5: 0.25 * ln 2 = 0.1733; y = 0.5, p = 0.5:
    >>> # 0.5^4 * 0.25 * ln 2 = 0.0108
    >>> loss = centernet_focal_loss([[1.0, 0.5]], [[0.0, 0.0]])
    >>> [round(float(v), 4) for v in loss[0]]
    [0.1733, 0.0108]
    """
    _check_exponents(alpha, beta)
    logits = ops.cast(ops.convert_to_tensor(logits), "float32")
    y = ops.cast(ops.convert_to_tensor(heatmap_true), "float32")
    p, one_minus_p = ops.sigmoid(logits), ops.sigmoid(-logits)
    positive = -ops.power(one_minus_p, alpha) * ops.log_sigmoid(logits)
    negative = -ops.power(1.0 - y, beta) * ops.power(p, alpha) * ops.log_sigmoid(-logits)
    return ops.where(y >= 1.0, positive, negative)


@skip_autograph
def centernet_loss_terms(targets: dict, y_pred, alpha: float = 2.0,
                         beta: float = 4.0) -> dict:
    """Per-example sums of CenterNet's loss terms (before normalisation).

    Args:
        targets: dict from `kerasmtl.layers.detection.centernet_targets`.
        y_pred: float `[B, h, w, num_classes + 4]`: heat-map logits, size,
            offset.
        alpha, beta: focal-loss exponents (see `centernet_focal_loss`).

    Returns:
        A dict of float32 `[B]` tensors: `"heatmap"` (focal loss summed over
        cells and classes), `"peaks"` (cells with target 1), `"size"` and
        `"offset"` (L1 summed over the regressed centers and both
        coordinates), `"centers"` (regressed centers).
    """
    y_pred = ops.cast(y_pred, "float32")
    num_classes = y_pred.shape[-1] - 4
    heatmap = targets["heatmap"]
    focal = centernet_focal_loss(heatmap, y_pred[..., :num_classes], alpha, beta)
    batch = ops.shape(y_pred)[0]
    regression = ops.reshape(y_pred[..., num_classes:], (batch, -1, 4))
    at_centers = ops.take_along_axis(
        regression, ops.expand_dims(targets["indices"], -1), axis=1
    )
    mask = ops.expand_dims(targets["center_mask"], -1)
    return {
        "heatmap": ops.sum(focal, axis=(1, 2, 3)),
        "peaks": ops.sum(ops.cast(heatmap >= 1.0, "float32"), axis=(1, 2, 3)),
        "size": ops.sum(ops.abs(at_centers[..., :2] - targets["size"]) * mask, axis=(1, 2)),
        "offset": ops.sum(
            ops.abs(at_centers[..., 2:] - targets["offset"]) * mask, axis=(1, 2)
        ),
        "centers": ops.sum(targets["center_mask"], axis=1),
    }


@keras.saving.register_keras_serializable(package="kerasmtl")
class CenterNetLoss(keras.losses.Loss):
    """CenterNet's detection loss on padded dict labels.

    `y_true` is a detection label `{"boxes": [B, M, 4] xyxy pixels,
    "classes": [B, M]}` (`-1` padding, NaN boxes for a missing label);
    `y_pred` the head's raw output `[B, h, w, num_classes + 4]`. Targets are
    encoded in the graph (`centernet_targets`). The loss is normalised over
    the batch, as CenterNet: `batch_loss` returns it with the number of
    labelled examples; `call` returns each example's share of it times the
    batch size, so that Keras' mean over the batch is the same number.

    Formula:
    ```
    loss = sum_b focal_b / max(peaks, 1)
           + size_weight * sum_b L1size_b / (2 * centers)
           + offset_weight * sum_b L1offset_b / (2 * centers)
    ```
    over labelled examples `b` (a size or offset term is 0 without centers).

    Args:
        stride: int >= 1. Pixels per output cell. Defaults to `4`.
        size_weight: float >= 0. Defaults to `0.1`.
        offset_weight: float >= 0. Defaults to `1.0`.
        alpha: float >= 1. Focal exponent. Defaults to `2.0`.
        beta: float >= 0. Penalty reduction exponent. Defaults to `4.0`.
        min_overlap: float in (0, 1). IoU of the Gaussian radius rule.
            Defaults to `0.7`.
        reduction, name, dtype: as for `keras.losses.Loss`.

    Examples:

    >>> import numpy as np
    >>> loss = CenterNetLoss(stride=4)
    >>> y_true = {"boxes": np.full((1, 2, 4), np.nan, "float32"),
    ...           "classes": np.full((1, 2), -1, "int32")}   # missing label
    >>> value, count, _ = loss.batch_loss(y_true, np.zeros((1, 2, 2, 5), "float32"))
    >>> float(value), float(count)
    (0.0, 0.0)
    """

    def __init__(self, stride: int = 4, size_weight: float = 0.1,
                 offset_weight: float = 1.0, alpha: float = 2.0, beta: float = 4.0,
                 min_overlap: float = 0.7, reduction="sum_over_batch_size",
                 name="centernet_loss", dtype=None):
        super().__init__(reduction=reduction, name=name, dtype=dtype)
        if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
            raise ValueError(
                "Invalid value for argument `stride`. Expected an int >= 1. "
                f"Received: stride={stride!r}"
            )
        for argument, value in (("size_weight", size_weight),
                                ("offset_weight", offset_weight)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(
                    f"Invalid value for argument `{argument}`. Expected a float "
                    f">= 0. Received: {argument}={value!r}"
                )
        _check_exponents(alpha, beta)
        if isinstance(min_overlap, bool) or not isinstance(min_overlap, (int, float)) or not (
            0 < min_overlap < 1
        ):
            raise ValueError(
                "Invalid value for argument `min_overlap`. Expected a float in "
                f"(0, 1). Received: min_overlap={min_overlap!r}"
            )
        self.stride = stride
        self.size_weight = float(size_weight)
        self.offset_weight = float(offset_weight)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.min_overlap = float(min_overlap)

    @skip_autograph
    def terms(self, y_true, y_pred, example_weights=None):
        """Per-example loss terms (`centernet_loss_terms`) and each example's
        weight (`labelled` times `example_weights`)."""
        y_pred = ops.cast(y_pred, "float32")
        shape = ops.shape(y_pred)
        targets = centernet_targets(
            y_true["boxes"], y_true["classes"], shape[1], shape[2],
            num_classes=y_pred.shape[-1] - 4, stride=self.stride,
            min_overlap=self.min_overlap,
        )
        weights = targets["labelled"]
        if example_weights is not None:
            weights = weights * ops.reshape(ops.cast(example_weights, "float32"), (-1,))
        terms = centernet_loss_terms(targets, y_pred, self.alpha, self.beta)
        # where(): a masked example adds exactly 0, whatever its terms hold.
        terms = {k: ops.where(weights > 0, v * weights, 0.0) for k, v in terms.items()}
        return terms, weights

    @skip_autograph
    def batch_loss(self, y_true, y_pred, example_weights=None):
        """Returns `(loss, count, parts)`: the batch's CenterNet loss, the
        (weighted) number of labelled examples, and the dict of the loss's
        `"heatmap"`, `"size"` and `"offset"` parts (unweighted)."""
        terms, weights = self.terms(y_true, y_pred, example_weights)
        parts = self._parts({k: ops.sum(v) for k, v in terms.items()})
        return self._combine(parts), ops.sum(weights), parts

    @skip_autograph
    def call(self, y_true, y_pred):
        terms, weights = self.terms(y_true, y_pred)
        batch = ops.cast(ops.shape(weights)[0], "float32")
        # Each example's share: its own terms over the batch's normalisers.
        shares = self._parts({**terms, "peaks": ops.sum(terms["peaks"]),
                              "centers": ops.sum(terms["centers"])})
        return self._combine(shares) * batch

    def _parts(self, sums):
        peaks = sums["peaks"]
        return {
            "heatmap": sums["heatmap"] / ops.where(peaks > 0, peaks, 1.0),
            "size": ops.divide_no_nan(sums["size"], 2.0 * sums["centers"]),
            "offset": ops.divide_no_nan(sums["offset"], 2.0 * sums["centers"]),
        }

    def _combine(self, parts):
        return (parts["heatmap"] + self.size_weight * parts["size"]
                + self.offset_weight * parts["offset"])

    def get_config(self):
        return {
            **super().get_config(),
            "stride": self.stride,
            "size_weight": self.size_weight,
            "offset_weight": self.offset_weight,
            "alpha": self.alpha,
            "beta": self.beta,
            "min_overlap": self.min_overlap,
        }


def _check_exponents(alpha, beta):
    for argument, value, low in (("alpha", alpha, 1.0), ("beta", beta, 0.0)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low:
            raise ValueError(
                f"Invalid value for argument `{argument}`. Expected a float >= {low} "
                f"(alpha >= 1 keeps the gradient finite at p = 0 and 1). Received: "
                f"{argument}={value!r}"
            )
