"""Tabular multi-task models."""

from __future__ import annotations

from collections.abc import Sequence

import keras

import kerasmtl as mtl
from zoo.registry import register_model
from zoo.training_settings import TrainingData


def _synthetic_example():
    return mtl.data.synthetic_tabular(16, seed=0)


def _training_data(spec: str, *, batch_size: int, seed: int) -> TrainingData:
    if spec != "synthetic":
        raise ValueError(
            f"tabular_mtl_mlp trains on --data synthetic only. Received: '{spec}'. "
            "For your own table, build the model with zoo.create_model("
            "'tabular_mtl_mlp', num_features=..., tasks=[...]) and call fit."
        )
    train = mtl.data.synthetic_tabular(1500, seed=seed)
    dev = mtl.data.synthetic_tabular(1000, seed=seed + 10_000)
    return TrainingData(train, dev, mtl.tasks.synthetic_tabular_tasks(),
                        {"num_features": train[0].shape[1]},
                        "synthetic tabular data, 1500 train / 1000 dev rows")


@register_model(example_data=_synthetic_example, data=_training_data)
def tabular_mtl_mlp(
    num_features: int = 8,
    tasks: Sequence[mtl.tasks.Task] | None = None,
    hidden_units: Sequence[int] = (64, 64),
    dropout: float = 0.0,
    weighting: mtl.weighting.LossWeighting | None = None,
) -> mtl.MultiTaskModel:
    """Hard-sharing MLP for tabular features: a ReLU trunk, one head per task.

    Args:
        num_features: int. Width of the input feature vector. Defaults to `8`.
        tasks: the tasks. Defaults to the synthetic tabular tasks (`species`
            classification, `size` regression, `tags` multi-label).
        hidden_units: sizes of the shared Dense layers. Defaults to `(64, 64)`.
        dropout: float. Dropout after each shared layer. Defaults to `0.0`.
        weighting: loss weighting. Defaults to `Equal()`.

    Examples:

    >>> from zoo import create_model
    >>> create_model("tabular_mtl_mlp", hidden_units=(8,)).task_names
    ['species', 'size', 'tags']
    """
    tasks = list(tasks) if tasks is not None else mtl.tasks.synthetic_tabular_tasks()
    inputs = keras.Input((num_features,), name="features")
    x = inputs
    for i, units in enumerate(hidden_units):
        x = keras.layers.Dense(units, activation="relu", name=f"trunk_{i}")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"trunk_dropout_{i}")(x)
    return mtl.sharing.hard_sharing(
        inputs, x, tasks, weighting=weighting, name="tabular_mtl_mlp"
    )
