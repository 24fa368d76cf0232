"""`TaskAttention`: one task's soft-attention module on a shared feature map.

Liu, Johns and Davison, "End-to-End Multi-Task Learning with Attention", CVPR
2019 (MTAN). At block `j`, task `i` learns a mask over the shared features
`p_j` from those features and its own attended features of block `j - 1`:

```
a_ij = sigmoid(conv1x1(relu(bn(conv1x1([p_j ; f_j(â_i,j-1)])))))
â_ij = a_ij * p_j
```

`f_j` is the paper's "shared-like" 3x3 conv block (conv -> BN -> ReLU) followed
by max pooling to the resolution of `p_j`. The paper feeds an intermediate
activation `u_j` of block `j` to the mask and multiplies its output `p_j`;
kerasmtl's shared blocks are opaque layers, so `p_j` plays both roles.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kerasmtl")
class TaskAttention(keras.layers.Layer):
    """MTAN attention module; returns `(attended_features, mask)`.

    Called on `[shared]` (first block) or `[shared, previous]`, where `shared`
    is the shared feature map `(batch, height, width, channels)` of this block
    and `previous` the task's attended features of the previous block (same
    or an integer multiple of the resolution). The mask has the shape of
    `shared`, with values in [0, 1].

    Args:
        hidden_channels: int or None. Channels of the mask's first 1x1
            convolution. Defaults to `None` (the shared map's channels, as in
            the official code).
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Examples:

    >>> layer = TaskAttention(hidden_channels=4)
    >>> attended, mask = layer([ops.ones((2, 8, 8, 3))])
    >>> tuple(attended.shape), tuple(mask.shape)
    ((2, 8, 8, 3), (2, 8, 8, 3))
    """

    def __init__(self, hidden_channels: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if hidden_channels is not None and (
            isinstance(hidden_channels, bool)
            or not isinstance(hidden_channels, int)
            or hidden_channels < 1
        ):
            raise ValueError(
                f"Invalid value for argument `hidden_channels` of layer "
                f"'{self.name}'. Expected an int >= 1 or None. Received: "
                f"hidden_channels={hidden_channels!r}"
            )
        self.hidden_channels = hidden_channels

    def build(self, input_shape):
        shapes = [tuple(s) for s in input_shape]
        if not 1 <= len(shapes) <= 2 or any(len(s) != 4 for s in shapes):
            raise ValueError(
                f"Attention module '{self.name}' takes [shared] or [shared, "
                "previous], each an image feature map (batch, height, width, "
                f"channels). Received shapes {shapes}."
            )
        shared = shapes[0]
        channels = shared[-1]
        if channels is None:
            raise ValueError(
                f"Attention module '{self.name}' needs a known channel axis. "
                f"Received shape {shared}."
            )
        hidden = self.hidden_channels or channels
        mask_input_channels = channels
        self.previous_conv = None
        if len(shapes) == 2:
            previous = shapes[1]
            pool = _pool_size(self.name, previous[1:3], shared[1:3])
            self.previous_conv = keras.layers.Conv2D(
                channels, 3, padding="same", use_bias=False, name="shared_like_conv"
            )
            self.previous_norm = keras.layers.BatchNormalization(name="shared_like_bn")
            self.previous_pool = keras.layers.MaxPooling2D(pool, name="pool")
            self.previous_conv.build(previous)
            self.previous_norm.build((*previous[:3], channels))
            mask_input_channels = 2 * channels
        self.mask_conv_1 = keras.layers.Conv2D(hidden, 1, name="mask_conv_1")
        self.mask_norm = keras.layers.BatchNormalization(name="mask_bn")
        self.mask_conv_2 = keras.layers.Conv2D(channels, 1, name="mask_conv_2")
        self.mask_conv_1.build((*shared[:3], mask_input_channels))
        self.mask_norm.build((*shared[:3], hidden))
        self.mask_conv_2.build((*shared[:3], hidden))

    def call(self, inputs, training=False):
        shared = inputs[0]
        mask_input = shared
        if self.previous_conv is not None:
            previous = self.previous_conv(inputs[1])
            previous = ops.relu(self.previous_norm(previous, training=training))
            previous = self.previous_pool(previous)
            mask_input = ops.concatenate([shared, ops.cast(previous, shared.dtype)], -1)
        hidden = ops.relu(self.mask_norm(self.mask_conv_1(mask_input), training=training))
        mask = ops.sigmoid(self.mask_conv_2(hidden))
        return shared * mask, mask

    def compute_output_shape(self, input_shape):
        shared = tuple(input_shape[0])
        return shared, shared

    def get_config(self):
        return {**super().get_config(), "hidden_channels": self.hidden_channels}


def _pool_size(name, previous, current) -> tuple[int, int]:
    sizes = []
    for before, after in zip(previous, current):
        if before is None or after is None or before == after:
            sizes.append(1)
        elif before % after == 0:
            sizes.append(before // after)
        else:
            raise ValueError(
                f"Attention module '{name}': the previous block's map is "
                f"{tuple(previous)} pixels, this block's {tuple(current)}; the "
                "first must be an integer multiple of the second (pooling "
                "blocks), or equal."
            )
    return tuple(sizes)
