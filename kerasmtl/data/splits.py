"""Reproducible random splits shared by the in-memory data containers
(`TaggedCorpus`, `VisionData`)."""

from __future__ import annotations

import numpy as np


def split_indices(
    count: int, fraction: float, seed: int, unit: str
) -> tuple[np.ndarray, np.ndarray]:
    """`(rest, held_out)` index arrays, each sorted, for a seeded split of
    `count` items; `held_out` has `round(fraction * count)` of them (at least
    one, and at least one left in `rest`).

    Examples:

    >>> split_indices(5, 0.4, seed=0, unit="sentence")[1].size
    2
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(
            "Invalid value for argument `fraction`. Expected a float in (0, 1). "
            f"Received: fraction={fraction}"
        )
    if count < 2:
        raise ValueError(
            f"Cannot split {count} {unit}(s): a split needs at least 2, one per part."
        )
    held = min(max(int(round(fraction * count)), 1), count - 1)
    order = np.random.default_rng(seed).permutation(count)
    return np.sort(order[held:]), np.sort(order[:held])
