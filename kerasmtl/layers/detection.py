"""CenterNet head and its in-graph training targets ("Objects as Points", Zhou,
Wang and Krähenbühl, arXiv 2019; github.com/xingyizhou/CenterNet).

- `CenterNetHead`: a stride-`s` feature map -> `[B, h, w, num_classes + 4]`:
  class heat-map logits, box size `(w, h)` and center offset `(dx, dy)`, both
  in output-grid units (pixels / stride), as in CenterNet.
- `centernet_targets`: padded dict labels (xyxy pixels, `-1` classes, NaN
  boxes for a missing label) -> heat maps, center indices, size and offset
  targets. `keras.ops` only, so it runs inside `train_step` under
  `tf.function` with any batch size, grid size and number of boxes.

Decoding (peaks, top-k, NMS) is in `kerasmtl.layers.detection_decoding`.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from kerasmtl.autograph import skip_autograph


@keras.saving.register_keras_serializable(package="kerasmtl")
class CenterNetHead(keras.layers.Layer):
    """CenterNet's three output branches on one feature map, concatenated.

    Each branch is a 3x3 convolution with `head_channels` filters and ReLU,
    then a 1x1 convolution (CenterNet's `head_conv`; `head_channels=0` keeps
    only the 1x1). The heat-map bias starts at `log(p / (1 - p))` for
    `p = prior_probability` (CenterNet's -2.19 for 0.1), so the untrained
    focal loss is not swamped by background cells.

    Args:
        num_classes: int >= 1. Number of object classes.
        head_channels: int >= 0. Filters of each branch's 3x3 convolution.
            Defaults to `64` (CenterNet's ResNet/DLA setting).
        prior_probability: float in (0, 1). Initial heat-map probability.
            Defaults to `0.1`.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Examples:

    >>> import numpy as np
    >>> head = CenterNetHead(num_classes=3, head_channels=8)
    >>> tuple(head(np.zeros((2, 4, 6, 16), "float32")).shape)
    (2, 4, 6, 7)
    """

    def __init__(self, num_classes: int, head_channels: int = 64,
                 prior_probability: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        _check_int(self.name, "num_classes", num_classes, 1)
        _check_int(self.name, "head_channels", head_channels, 0)
        if isinstance(prior_probability, bool) or not (
            isinstance(prior_probability, (int, float)) and 0 < prior_probability < 1
        ):
            raise ValueError(
                f"Invalid value for argument `prior_probability` of layer "
                f"'{self.name}'. Expected a float in (0, 1). Received: "
                f"prior_probability={prior_probability!r}"
            )
        self.num_classes = int(num_classes)
        self.head_channels = int(head_channels)
        self.prior_probability = float(prior_probability)
        bias = math.log(self.prior_probability / (1 - self.prior_probability))
        self.branches = []
        for branch, units, init in (("heatmap", self.num_classes, bias),
                                    ("size", 2, 0.0), ("offset", 2, 0.0)):
            layers = []
            if self.head_channels:
                layers.append(keras.layers.Conv2D(
                    self.head_channels, 3, padding="same", activation="relu",
                    name=f"{branch}_conv", dtype=self.dtype_policy,
                ))
            layers.append(keras.layers.Conv2D(
                units, 1, bias_initializer=keras.initializers.Constant(init),
                name=f"{branch}_output", dtype=self.dtype_policy,
            ))
            self.branches.append(layers)

    def build(self, input_shape):
        for layers in self.branches:
            shape = tuple(input_shape)
            for layer in layers:
                layer.build(shape)
                shape = layer.compute_output_shape(shape)

    def call(self, inputs):
        outputs = []
        for layers in self.branches:
            x = inputs
            for layer in layers:
                x = layer(x)
            outputs.append(x)
        return ops.concatenate(outputs, axis=-1)

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape)[:-1], self.num_classes + 4)

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "head_channels": self.head_channels,
            "prior_probability": self.prior_probability,
        }


def gaussian_radius(height, width, min_overlap: float = 0.7):
    """CenterNet's heat-map radius for a box of `height` x `width` (grid units).

    The smallest of the three radii (CornerNet's cases: both corners inside,
    the ground truth inside, the prediction inside) at which a box whose
    corners move by the radius keeps IoU >= `min_overlap`. CenterNet's code
    is followed as is, including its well-known formula quirks, and the
    caller rounds down: `max(0, int(r))` of the radius of `ceil(h), ceil(w)`.

    Examples:

    >>> # 4 x 4 box: r1 = 7.6299, r2 = 14.6933, r3 = 1.0933
    >>> round(float(gaussian_radius(4.0, 4.0)), 4)
    1.0933
    """
    height = ops.cast(height, "float32")
    width = ops.cast(width, "float32")
    m = min_overlap
    b1 = height + width
    c1 = width * height * (1 - m) / (1 + m)
    r1 = (b1 + ops.sqrt(ops.maximum(b1 * b1 - 4 * c1, 0.0))) / 2
    b2 = 2 * (height + width)
    c2 = (1 - m) * width * height
    r2 = (b2 + ops.sqrt(ops.maximum(b2 * b2 - 16 * c2, 0.0))) / 2
    b3 = -2 * m * (height + width)
    c3 = (m - 1) * width * height
    r3 = (b3 + ops.sqrt(ops.maximum(b3 * b3 - 16 * m * c3, 0.0))) / 2
    return ops.minimum(ops.minimum(r1, r2), r3)


@skip_autograph
def centernet_targets(boxes, classes, grid_height, grid_width, num_classes: int,
                      stride: int, min_overlap: float = 0.7, heatmap: bool = True):
    """Training targets of a CenterNet head from padded dict labels.

    For each valid object (class in `[0, num_classes)`, box of positive size
    after clipping to the image `[0, grid_width * stride] x [0, grid_height *
    stride]`), in grid units `c = box center / stride`:

    - its class channel of the heat map gets a Gaussian peaked at 1 in the
      cell `floor(c)`, with CenterNet's radius `r = max(0, int(
      gaussian_radius(ceil(h), ceil(w))))`, `sigma = (2r + 1) / 6`, cut to
      the `(2r + 1)^2` window; overlapping Gaussians take the element-wise
      maximum;
    - its size target is `(w, h)` in grid units and its offset target
      `c - floor(c)`, regressed at the center cell (`indices`).

    Several objects with the same center cell (any class; the size and
    offset maps are shared by the classes): the largest box keeps the cell's
    size and offset targets (on a tie, the last in the label), the others get
    `center_mask` 0. Each still draws its heat-map peak.

    Padding rows (class `-1`), degenerate boxes and classes out of range are
    ignored. An example with any NaN coordinate has no label:
    `labelled` is 0 and it draws nothing.

    Args:
        boxes: float `[B, M, 4]`, xyxy pixels.
        classes: int `[B, M]`.
        grid_height: int or scalar tensor. Height of the output grid.
        grid_width: int or scalar tensor. Width of the output grid.
        num_classes: int. Number of heat-map channels.
        stride: int. Pixels per grid cell.
        min_overlap: float in (0, 1). IoU of the radius rule. Defaults to `0.7`.
        heatmap: bool. Whether to draw the heat map (metrics need only the
            centers). Defaults to `True`.

    Returns:
        A dict: `"heatmap"` float32 `[B, h, w, num_classes]` (if `heatmap`),
        `"indices"` int32 `[B, M]` (center cell `y * w + x`), `"size"` and
        `"offset"` float32 `[B, M, 2]`, `"center_mask"` float32 `[B, M]` (1
        where size and offset are regressed), `"labelled"` float32 `[B]`.

    Examples:

    >>> import numpy as np
    >>> # one 8 x 8 px box centred at (13, 9) px on an 8 x 8 grid of stride 4:
    >>> # center (3.25, 2.25) in grid units, cell x=3, y=2, index 2 * 8 + 3
    >>> t = centernet_targets(np.array([[[9., 5., 17., 13.]]]), np.array([[0]]),
    ...                       8, 8, num_classes=1, stride=4)
    >>> int(t["indices"][0, 0]), t["size"][0, 0].numpy().tolist()
    (19, [2.0, 2.0])
    >>> t["offset"][0, 0].numpy().tolist(), float(t["heatmap"][0, 2, 3, 0])
    ([0.25, 0.25], 1.0)
    """
    boxes = ops.cast(boxes, "float32")
    classes = ops.cast(classes, "int32")
    grid_h, grid_w = ops.cast(grid_height, "int32"), ops.cast(grid_width, "int32")
    grid = ops.cast(ops.stack([grid_w, grid_h]), "float32")  # (x, y) extent

    nan = ops.isnan(boxes)
    labelled = ops.logical_not(ops.any(nan, axis=(1, 2)))
    # Clip to the grid extent (= the image / stride); inf coordinates clip too.
    boxes = ops.where(nan, 0.0, boxes) * (1.0 / stride)
    boxes = ops.minimum(ops.maximum(boxes, 0.0), ops.concatenate([grid, grid]))
    size = boxes[..., 2:] - boxes[..., :2]  # (w, h)
    center = (boxes[..., :2] + boxes[..., 2:]) * 0.5
    cell = ops.minimum(ops.floor(center), grid - 1.0)  # (x, y), center >= 0
    valid = (labelled[:, None] & (classes >= 0) & (classes < num_classes)
             & ops.all(size > 0, axis=-1))
    cell_index = ops.cast(cell, "int32")
    indices = ops.where(valid, cell_index[..., 1] * grid_w + cell_index[..., 0], 0)

    # One center per cell for the shared size/offset maps: the largest box,
    # the last on ties.
    area = ops.where(valid, size[..., 0] * size[..., 1], -1.0)
    order = ops.arange(ops.shape(indices)[1])
    same_cell = ((indices[:, :, None] == indices[:, None, :])
                 & valid[:, :, None] & valid[:, None, :])
    beats = (area[:, None, :] > area[:, :, None]) | (
        (area[:, None, :] == area[:, :, None]) & (order[None, :] > order[:, None])
    )
    center_mask = valid & ops.logical_not(ops.any(same_cell & beats, axis=2))
    center_mask = ops.cast(center_mask, "float32")

    targets = {
        "indices": indices,
        "size": size * center_mask[..., None],
        "offset": (center - cell) * center_mask[..., None],
        "center_mask": center_mask,
        "labelled": ops.cast(labelled, "float32"),
    }
    if heatmap:
        targets["heatmap"] = _draw_heatmap(
            cell, size, classes, valid, grid_h, grid_w, num_classes, min_overlap
        )
    return targets


def _draw_heatmap(cell, size, classes, valid, grid_h, grid_w, num_classes,
                  min_overlap):
    radius = gaussian_radius(ops.ceil(size[..., 1]), ops.ceil(size[..., 0]), min_overlap)
    radius = ops.maximum(ops.floor(radius), 0.0)[..., None]
    sigma = (2.0 * radius + 1.0) * (1.0 / 6.0)
    scale = -0.5 / (sigma * sigma)
    # Separable Gaussian, [B, M, h, 1] x [B, M, 1, w], zero outside the window.

    def profile(length, position):
        d = ops.cast(ops.arange(length), "float32") - position[..., None]
        return ops.where(ops.abs(d) <= radius, ops.exp(d * d * scale), 0.0)

    gaussians = (profile(grid_h, cell[..., 1])[..., :, None]
                 * profile(grid_w, cell[..., 0])[..., None, :])

    # Element-wise max per (example, class): one segment each, plus one
    # segment that swallows padding and invalid rows.
    batch, m = ops.shape(classes)[0], ops.shape(classes)[1]
    dump = batch * num_classes
    segments = ops.where(valid, ops.arange(batch)[:, None] * num_classes + classes, dump)
    flat = ops.reshape(gaussians, (batch * m, grid_h * grid_w))
    peaks = ops.segment_max(flat, ops.reshape(segments, (-1,)), num_segments=dump + 1)
    peaks = ops.maximum(peaks[:-1], 0.0)  # empty segments hold the lowest float
    peaks = ops.reshape(peaks, (batch, num_classes, grid_h, grid_w))
    return ops.transpose(peaks, (0, 2, 3, 1))


def _check_int(owner, argument, value, low):
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(
            f"Invalid value for argument `{argument}` of layer '{owner}'. Expected "
            f"an int >= {low}. Received: {argument}={value!r}"
        )
