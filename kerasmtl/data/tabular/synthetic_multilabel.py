"""A synthetic multi-label data set whose labels are correlated (no download).

Labels depend on the features only through a few latent factors, and on each
other through fixed co-occurrence rules, so a model that captures label
correlation (a correlation head, a classifier chain) has something to learn
that independent sigmoids do not.

The generator, for `L` labels:

1. `z ~ N(0, I_4)`: four latent factors per example.
2. Features: `x = z @ M + 0.5 * noise`, `M` a fixed `(4, F)` matrix.
3. Base labels: `b_j ~ Bernoulli(sigmoid(2 * z @ W_j + c_j))`, fixed `W`, `c`
   (the Bernoulli draw is label noise that the features cannot explain).
4. Rules, applied in label order:

   - implication: each odd label `j` (except the last label when `L >= 4`)
     requires label `j - 1`: `y_j = b_j AND y_{j-1}` ("label 3 implies label 2");
   - conjunction (when `L >= 4`): the last label is on exactly when labels 0
     and 2 both are: `y_{L-1} = y_0 AND y_2`.

5. With `missing_rate > 0`, label elements are marked unknown (-1) at random,
   after the rules (the known entries still obey them).

`M`, `W` and `c` come from a stream fixed by the shapes, not by `seed`: the
same problem for every seed, so two seeds give a train and a test set. With
the defaults the label cardinality is about 2.5.
"""

from __future__ import annotations

import numpy as np

from kerasmtl.data.tabular.container import MultiLabelData

_LATENT_DIM = 4


def synthetic_multilabel_rules(num_labels: int) -> list[str]:
    """The co-occurrence rules `synthetic_multilabel` applies, in words."""
    last = num_labels - 1 if num_labels >= 4 else None
    rules = [
        f"label_{j} implies label_{j - 1}"
        for j in range(1, num_labels, 2)
        if j != last
    ]
    if last is not None:
        rules.append(f"label_{last} = label_0 and label_2")
    return rules


def synthetic_multilabel(
    n: int = 1000,
    num_features: int = 16,
    num_labels: int = 8,
    seed: int = 0,
    missing_rate: float = 0.0,
    task_name: str = "labels",
    feature_key: str | None = None,
) -> MultiLabelData:
    """Generates features and correlated multi-label labels.

    Args:
        n: int. Number of examples.
        num_features: int. Width of the features, at least 4.
        num_labels: int. Number of labels, at least 2.
        seed: int. Seed of the examples; the same arguments give the same data.
            Defaults to `0`.
        missing_rate: float in [0, 1). Probability that a label element is
            unknown (-1). Defaults to `0.0`.
        task_name: str. Key of the labels. Defaults to `"labels"`.
        feature_key: str or None. See `MultiLabelData`. Defaults to `None`.

    Returns:
        A `MultiLabelData`: features float32 `[n, num_features]`, labels int32
        `[n, num_labels]` named `label_0`..., and `metadata["rules"]`.

    Examples:

    >>> data = synthetic_multilabel(200, num_labels=4, seed=1)
    >>> data.features.shape, data.labels.shape, data.metadata["rules"]
    ((200, 16), (200, 4), ['label_1 implies label_0', 'label_3 = label_0 and label_2'])
    >>> bool(((data.labels[:, 1] == 1) <= (data.labels[:, 0] == 1)).all())
    True
    """
    if not 0.0 <= missing_rate < 1.0:
        raise ValueError(
            "Invalid value for argument `missing_rate`. Expected a float in [0, 1). "
            f"Received: missing_rate={missing_rate}"
        )
    if num_features < _LATENT_DIM:
        raise ValueError(
            f"Invalid value for argument `num_features`. Expected an int >= "
            f"{_LATENT_DIM}. Received: num_features={num_features}"
        )
    if num_labels < 2:
        raise ValueError(
            "Invalid value for argument `num_labels`. Expected an int >= 2. "
            f"Received: num_labels={num_labels}"
        )
    params = np.random.default_rng(4242 + 101 * num_features + num_labels)
    mixing = params.normal(size=(_LATENT_DIM, num_features))
    weights = params.normal(size=(_LATENT_DIM, num_labels)) / np.sqrt(_LATENT_DIM)
    # Biases chosen so that about 2.5 labels are on with 8 labels: children
    # (odd labels) are easier to switch on since they also need their parent.
    bias = np.where(np.arange(num_labels) % 2 == 0, -0.6, 0.4)
    bias = bias + 0.3 * params.normal(size=num_labels)

    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, _LATENT_DIM))
    x = z @ mixing + 0.5 * rng.normal(size=(n, num_features))
    logits = 2.0 * z @ weights + bias
    y = rng.random(size=(n, num_labels)) < 1.0 / (1.0 + np.exp(-logits))

    last = num_labels - 1 if num_labels >= 4 else None
    for j in range(1, num_labels, 2):
        if j != last:
            y[:, j] &= y[:, j - 1]
    if last is not None:
        y[:, last] = y[:, 0] & y[:, 2]

    labels = y.astype("int32")
    if missing_rate > 0:
        labels[rng.random(size=labels.shape) < missing_rate] = -1
    return MultiLabelData(
        features=x.astype("float32"),
        labels=labels,
        feature_names=[f"x_{i}" for i in range(num_features)],
        label_names=[f"label_{j}" for j in range(num_labels)],
        task_name=task_name,
        feature_key=feature_key,
        metadata={"rules": synthetic_multilabel_rules(num_labels), "seed": seed},
    )
