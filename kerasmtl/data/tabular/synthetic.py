"""A built-in synthetic multi-task tabular data set (no download).

Three tasks of different kinds read the same low-dimensional latent factors of
the features, so a shared trunk can learn them once from all tasks' labels:

- `species`: 3-class classification,
- `size`: regression,
- `tags`: 5 binary labels (multi-label),

with labels missing at random (per example, and per element for `tags`) to
exercise masking. Used by the quickstart, the tests and the benchmarks.
The tasks that fit these labels are `mtl.tasks.synthetic_tabular_tasks()`.
"""

from __future__ import annotations

import numpy as np


def synthetic_tabular(
    num_examples: int = 2000,
    num_features: int = 8,
    latent_dim: int = 3,
    missing_rate: float = 0.3,
    noise: float = 0.3,
    seed: int = 0,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Generates `(x, {"species", "size", "tags"})`.

    Args:
        num_examples: int. Number of rows.
        num_features: int. Width of `x` (at least `latent_dim`).
        latent_dim: int. Number of latent factors all tasks depend on.
        missing_rate: float in [0, 1). Probability that a label (an example's
            class or value, or one tag element) is missing: -1 for `species`
            and `tags`, NaN for `size`.
        noise: float >= 0. Label noise scale.
        seed: int. Seed; the same arguments give the same data.

    Returns:
        `x` float32 `(num_examples, num_features)` and a dict of labels:
        `species` int32 `(n,)`, `size` float32 `(n,)`, `tags` int32 `(n, 5)`.
    """
    if not 0.0 <= missing_rate < 1.0:
        raise ValueError(
            "Invalid value for argument `missing_rate`. Expected a float in [0, 1). "
            f"Received: missing_rate={missing_rate}"
        )
    if num_features < latent_dim:
        raise ValueError(
            f"num_features ({num_features}) must be >= latent_dim ({latent_dim})."
        )
    # The task parameters come from a fixed stream so that every split of the
    # same problem (seed only changes the rows) shares one ground truth.
    params = np.random.default_rng(12345 + 7 * num_features + latent_dim)
    mixing = params.normal(size=(num_features, latent_dim)) / np.sqrt(num_features)
    class_w = params.normal(size=(latent_dim, 3)) * 2.0
    size_w = params.normal(size=(latent_dim,))
    tag_w = params.normal(size=(latent_dim, 5)) * 1.5
    tag_b = params.normal(size=(5,)) * 0.3

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_examples, num_features)).astype("float32")
    z = np.tanh(x @ mixing * 2.0)
    species = np.argmax(
        z @ class_w + noise * rng.gumbel(size=(num_examples, 3)), axis=1
    ).astype("int32")
    size = (z @ size_w + np.sin(2.0 * z[:, 0]) + noise * rng.normal(size=num_examples))
    size = size.astype("float32")
    tags = (z @ tag_w + tag_b + noise * rng.normal(size=(num_examples, 5)) > 0)
    tags = tags.astype("int32")

    species[rng.random(num_examples) < missing_rate] = -1
    size[rng.random(num_examples) < missing_rate] = np.nan
    tags[rng.random(tags.shape) < missing_rate] = -1
    return x, {"species": species, "size": size, "tags": tags}

