"""Multi-label models: an MLP on tabular features and a small CNN on images.

- `multilabel_mlp`: features -> (standardization) -> Dense+ReLU trunk -> a
  `MultiLabel` head, independent sigmoids (binary relevance) or a
  label-attention head. Trains on `--data synthetic` (a multi-label task and a
  "how many labels" classification task on one trunk: multi-task and
  multi-label together) or on a MULAN folder (`../shared/data/yeast`).
- `multilabel_cnn`: images -> conv trunk -> a `MultiLabel` head, on the pooled
  vector (independent sigmoids) or, for the label-attention head, on the
  spatial map read as tokens (one query per label looks for its label
  anywhere in the image, as in ML-Decoder). Trains on `--data synthetic`
  (coloured shapes) or on a folder with `train.csv` and `dev.csv` label tables.

Every factory takes `tasks=` (a subset of its tasks, for single-task
baselines) and `extra_tasks=` (tasks trained beside the multi-label one).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np

import kerasmtl as mtl
from kerasmtl.data.vision.shape_presence import SHAPE_NAMES, synthetic_shape_images
from zoo.registry import register_model
from zoo.training_settings import TrainingData, cosine_adam

# The synthetic data's shapes: `create_model(name)` with no data builds a model
# that fits them.
SYNTHETIC_NUM_FEATURES = 16
SYNTHETIC_NUM_LABELS = 8
# Dev share of a MULAN folder without dev_split_seed0.txt: the shared folders'
# split files hold out about a fifth, but a user's folder may be the train
# part of a train/test download already, so keep most rows for training.
MULAN_DEV_FRACTION = 0.1


# `kerasmtl train multilabel_mlp` trains with these unless told otherwise;
# chosen on a validation split of yeast's train rows (see the card), and what
# benchmarks/multilabel.py reports. Threshold 0.5: on that split it gave the
# lowest Hamming loss, and a lower global threshold bought micro-F1 only at a
# larger Hamming loss.
# Adam 1e-3 decayed to 0 on a cosine: with a fixed budget and no early
# stopping, the decay keeps the last epochs from overfitting 1,200-row sets.
MLP_RECIPE = {"epochs": 60, "batch_size": 32, "optimizer": cosine_adam(1e-3)}


# -- tasks ---------------------------------------------------------------------


def multilabel_task(
    labels: Sequence[str] | None = None,
    num_labels: int | None = None,
    head: str = "independent",
    head_config: dict | None = None,
    loss: str = "bce",
    name: str = "labels",
) -> mtl.tasks.MultiLabel:
    """The zoo's multi-label task: `MultiLabel(name, ...)` named `"labels"`."""
    return mtl.tasks.MultiLabel(
        name, num_labels=None if labels is not None else num_labels,
        labels=None if labels is None else list(labels), loss=loss, head=head,
        head_config=head_config,
    )


def cardinality_task(num_buckets: int = 4, name: str = "cardinality") -> mtl.tasks.Task:
    """A classification task: how many labels a row has, `0 ... num_buckets-1`
    (the last bucket is "that many or more"). Labels from `cardinality_buckets`."""
    return mtl.tasks.Classification(name, num_classes=num_buckets)


def cardinality_buckets(labels, num_buckets: int = 4) -> np.ndarray:
    """Class labels of `cardinality_task`: `min(#present labels, num_buckets-1)`.

    A row with any unknown (-1) label gets -1 (a missing class label), even
    when its known positives already reach the last bucket: keeping those rows
    alone would over-represent the last bucket in training.

    Args:
        labels: int array `(N, L)` of 1, 0 and -1 (unknown).
        num_buckets: int >= 2. Number of classes. Defaults to `4`.

    Returns:
        int32 array `(N,)`.

    Examples:

    >>> cardinality_buckets([[1, 0, 0], [1, 1, 1], [0, 0, 0], [1, 1, -1]], 3).tolist()
    [1, 2, 0, -1]
    """
    if isinstance(num_buckets, bool) or not isinstance(num_buckets, int) or num_buckets < 2:
        raise ValueError(
            "Invalid value for argument `num_buckets`. Expected an int >= 2. "
            f"Received: num_buckets={num_buckets!r}"
        )
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(
            f"cardinality_buckets expects labels (N, L). Received shape {labels.shape}."
        )
    buckets = np.minimum((labels == 1).sum(axis=1), num_buckets - 1)
    return np.where((labels == -1).any(axis=1), -1, buckets).astype("int32")


def _default_tasks(tasks, labels, num_labels, head, head_config, loss, extra_tasks):
    if tasks is not None:
        return list(tasks)
    return [multilabel_task(labels, num_labels, head, head_config, loss), *extra_tasks]


# -- models ----------------------------------------------------------------------


def _mlp_example():
    data = mtl.data.synthetic_multilabel(
        16, SYNTHETIC_NUM_FEATURES, SYNTHETIC_NUM_LABELS, seed=1, missing_rate=0.2)
    return data.as_xy()


def _mlp_training_data(spec: str, *, batch_size: int, seed: int,
                       dev_fraction: float | None = None) -> TrainingData:
    """`--data synthetic` (labels + cardinality) or a MULAN folder, whose dev
    set is the rows its `dev_split_seed0.txt` lists or else a random
    `dev_fraction` (default `MULAN_DEV_FRACTION`) drawn with `seed`."""
    if spec == "synthetic":
        if dev_fraction is not None:
            raise ValueError(
                "--dev-fraction applies to MULAN folders without dev_split_seed0.txt; "
                "--data synthetic draws a dev set of its own. Leave it out."
            )
        train = mtl.data.synthetic_multilabel(
            2000, SYNTHETIC_NUM_FEATURES, SYNTHETIC_NUM_LABELS, seed=seed, missing_rate=0.1)
        dev = mtl.data.synthetic_multilabel(
            1000, SYNTHETIC_NUM_FEATURES, SYNTHETIC_NUM_LABELS, seed=seed + 10_000)
        tasks = [multilabel_task(train.label_names), cardinality_task()]
        train_xy, dev_xy = (
            (d.features, {"labels": d.labels, "cardinality": cardinality_buckets(d.labels)})
            for d in (train, dev)
        )
        summary = (f"synthetic multi-label data ({SYNTHETIC_NUM_LABELS} correlated "
                   f"labels, 10% unknown) + cardinality classes: {len(train)} train / "
                   f"{len(dev)} dev rows")
    elif os.path.isdir(spec):
        train, dev = mtl.data.load_mulan_benchmark(
            spec, dev_fraction=dev_fraction or MULAN_DEV_FRACTION, seed=seed)
        tasks = [multilabel_task(train.label_names)]
        train_xy, dev_xy = train.as_xy(), dev.as_xy()
        split = dev.metadata["dev_split"]
        if dev_fraction is not None and not split.startswith("random"):
            split += ", which wins over --dev-fraction"
        summary = (f"MULAN {Path(spec).name}: {len(train)} train / {len(dev)} dev rows "
                   f"(dev: {split}), {train.num_features} features, "
                   f"{train.num_labels} labels")
    else:
        raise ValueError(
            f"--data '{spec}' is neither 'synthetic' nor a MULAN folder (one holding "
            "<name>-train.arff or a single .arff, and <name>.xml; the dev rows are "
            "those dev_split_seed0.txt lists, else --dev-fraction of the rows drawn "
            "with --seed), e.g. ../shared/data/yeast."
        )
    kwargs = {
        "num_features": train.num_features,
        "labels": train.label_names,
        "feature_mean": train.features.mean(axis=0).tolist(),
        "feature_variance": train.features.var(axis=0).tolist(),
    }
    return TrainingData(train_xy, dev_xy, tasks, kwargs, summary)


@register_model(example_data=_mlp_example, data=_mlp_training_data, recipe=MLP_RECIPE)
def multilabel_mlp(
    num_features: int = SYNTHETIC_NUM_FEATURES,
    labels: Sequence[str] | None = None,
    num_labels: int = SYNTHETIC_NUM_LABELS,
    tasks: Sequence[mtl.tasks.Task] | None = None,
    hidden_units: Sequence[int] = (256,),
    dropout: float = 0.5,
    weight_decay: float = 3e-3,
    head: str = "independent",
    head_config: dict | None = None,
    loss: str = "bce",
    extra_tasks: Sequence[mtl.tasks.Task] = (),
    feature_mean: Sequence[float] | None = None,
    feature_variance: Sequence[float] | None = None,
    weighting: mtl.weighting.LossWeighting | None = None,
) -> mtl.MultiTaskModel:
    """Multi-label MLP on tabular features (input `"features"`).

    Args:
        num_features: int. Width of the feature vector. Defaults to `16`.
        labels: list of str or None. Label names (the export returns them
            for predicted labels); set `num_labels`. Defaults to `None`.
        num_labels: int. Number of labels when `labels` is None. Defaults to `8`.
        tasks: the tasks, or None: a `MultiLabel` task `"labels"` built from
            `labels`/`num_labels`/`head`/`head_config`/`loss`, then
            `extra_tasks`. Pass a subset for single-task baselines.
        hidden_units: sizes of the shared Dense+ReLU layers; `()` gives a
            linear model (binary-relevance logistic regression). Defaults to
            `(256,)`: with `weight_decay` and the recipe's 60-epoch cosine
            schedule, this beat 512-1024 units with heavier dropout on the yeast
            validation split (see the card).
        dropout: float. Dropout after each shared layer. Defaults to `0.5`.
        weight_decay: float >= 0. L2 penalty on the shared layers' kernels
            (`keras.regularizers.L2`). Defaults to `3e-3` (the MULAN sets have
            400-2,000 rows: dropout alone under-regularizes).
        head: `"independent"` (one sigmoid per label) or `"label_attention"`.
            Defaults to `"independent"`.
        head_config: dict or None. `LabelAttentionHead` arguments. Defaults to `None`.
        loss: `"bce"`, `"focal"` or `"asl"`. Defaults to `"bce"`.
        extra_tasks: tasks beside the multi-label one (e.g.
            `cardinality_task()`), when `tasks` is None. Defaults to `()`.
        feature_mean, feature_variance: per-feature statistics of the training
            data, or None. Set, the model standardizes its inputs itself, so
            the exported model takes raw features. Defaults to `None`.
        weighting: loss weighting. Defaults to `Equal()`.

    Examples:

    >>> from zoo import create_model
    >>> create_model("multilabel_mlp", hidden_units=(8,)).task_names
    ['labels']
    >>> create_model("multilabel_mlp", hidden_units=(8,),
    ...              extra_tasks=[cardinality_task()]).task_names
    ['labels', 'cardinality']
    """
    tasks = _default_tasks(tasks, labels, num_labels, head, head_config, loss, extra_tasks)
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) \
            or not weight_decay >= 0:
        raise ValueError(
            "Invalid value for argument `weight_decay` of multilabel_mlp. Expected a "
            f"float >= 0. Received: weight_decay={weight_decay!r}"
        )
    regularizer = keras.regularizers.L2(weight_decay) if weight_decay else None
    inputs = keras.Input((num_features,), name="features")
    x = inputs
    if (feature_mean is None) != (feature_variance is None):
        raise ValueError(
            "multilabel_mlp needs both `feature_mean` and `feature_variance` (the "
            "training data's per-feature statistics), or neither."
        )
    if feature_mean is not None:
        x = keras.layers.Normalization(mean=list(feature_mean),
                                       variance=list(feature_variance),
                                       name="standardize")(x)
    for i, units in enumerate(hidden_units):
        x = keras.layers.Dense(units, activation="relu", kernel_regularizer=regularizer,
                               name=f"trunk_{i}")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"trunk_dropout_{i}")(x)
    return mtl.sharing.hard_sharing(inputs, x, tasks, weighting=weighting,
                                    name="multilabel_mlp")


def _cnn_example():
    images, labels = synthetic_shape_images(4, (64, 64), seed=1)
    return {"image": images}, {"labels": labels}


def _cnn_training_data(spec: str, *, batch_size: int, seed: int) -> TrainingData:
    """`--data synthetic` (shapes) or a folder with `train.csv` and `dev.csv`."""
    if spec == "synthetic":
        size = (32, 32)  # small: the shapes stay visible and CPU training is quick
        train_x, train_y = synthetic_shape_images(2000, size, seed=seed)
        dev_x, dev_y = synthetic_shape_images(500, size, seed=seed + 10_000)
        return TrainingData(
            ({"image": train_x}, {"labels": train_y}), ({"image": dev_x}, {"labels": dev_y}),
            [multilabel_task(SHAPE_NAMES)],
            {"image_size": size, "labels": list(SHAPE_NAMES)},
            f"synthetic shapes {size[0]}x{size[1]}: 2000 train / 500 dev images, "
            f"labels {list(SHAPE_NAMES)}")
    folder = Path(spec)
    tables = [folder / "train.csv", folder / "dev.csv"]
    if not all(t.is_file() for t in tables):
        raise ValueError(
            f"--data '{spec}' is neither 'synthetic' nor an image folder with "
            "train.csv and dev.csv (columns: image, then one 0/1 column per label; "
            "image paths relative to the folder)."
        )
    # Read as `image_folder_with_labels` reads it (a BOM accepted, names
    # stripped), so that the label names match its header.
    with open(tables[0], newline="", encoding="utf-8-sig") as f:
        header = [h.strip() for h in next(csv.reader(f), [])]
    labels = [h for h in header if h != "image"]
    size = (64, 64)
    train, dev = (
        mtl.data.image_folder_with_labels(
            folder, table, label_columns=labels, image_size=size,
            batch_size=batch_size, shuffle=table is tables[0], seed=seed)
        for table in tables
    )
    return TrainingData(train, dev, [multilabel_task(labels)],
                        {"image_size": size, "labels": labels},
                        f"images in {folder}: labels {labels}")


@register_model(example_data=_cnn_example, data=_cnn_training_data)
def multilabel_cnn(
    image_size: tuple[int, int] = (64, 64),
    labels: Sequence[str] | None = None,
    num_labels: int | None = None,
    tasks: Sequence[mtl.tasks.Task] | None = None,
    filters: Sequence[int] = (16, 32, 64),
    dense_units: int = 128,
    dropout: float = 0.3,
    head: str = "independent",
    head_config: dict | None = None,
    loss: str = "bce",
    extra_tasks: Sequence[mtl.tasks.Task] = (),
    weighting: mtl.weighting.LossWeighting | None = None,
) -> mtl.MultiTaskModel:
    """Small multi-label CNN on RGB images in [0, 1] (input `"image"`).

    Each conv block is `Conv2D(3x3, relu) -> MaxPool(2)`. Tasks with an
    independent head (and other kinds of task) read the global max-pooled map
    through `Dense(dense_units)`: a label is present if its pattern is
    anywhere. A `MultiLabel` task with `head="label_attention"` reads the last
    map as `h*w` tokens instead, so each label's query attends to where its
    label is.

    Args:
        image_size: `(height, width)`. Defaults to `(64, 64)`.
        labels: list of str or None. Label names. Defaults to `None`: the
            synthetic shapes (`SHAPE_NAMES`) unless `num_labels` is set.
        num_labels: int or None. Number of (unnamed) labels when `labels` is
            None. Defaults to `None`.
        tasks: the tasks, or None: a `MultiLabel` task `"labels"`, then
            `extra_tasks`. Pass a subset for single-task baselines.
        filters: filters of each conv block. Defaults to `(16, 32, 64)`.
        dense_units: int. Width of the pooled features. Defaults to `128`.
        dropout: float. Dropout on the pooled features. Defaults to `0.3`.
        head: `"independent"` or `"label_attention"`. Defaults to `"independent"`.
        head_config: dict or None. `LabelAttentionHead` arguments. Defaults to `None`.
        loss: `"bce"`, `"focal"` or `"asl"`. Defaults to `"bce"`.
        extra_tasks: tasks beside the multi-label one. Defaults to `()`.
        weighting: loss weighting. Defaults to `Equal()`.

    Examples:

    >>> from zoo import create_model
    >>> create_model("multilabel_cnn", image_size=(16, 16), filters=(4,)).task_names
    ['labels']
    """
    if labels is None and num_labels is None:
        labels = SHAPE_NAMES
    tasks = _default_tasks(tasks, labels, num_labels, head, head_config, loss, extra_tasks)
    inputs = keras.Input((int(image_size[0]), int(image_size[1]), 3), name="image")
    x = inputs
    for i, n in enumerate(filters):
        x = keras.layers.Conv2D(n, 3, padding="same", activation="relu",
                                name=f"conv_{i}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool_{i}")(x)
    tokens = keras.layers.Reshape((-1, x.shape[-1]), name="spatial_tokens")(x)
    pooled = keras.layers.GlobalMaxPooling2D(name="global_pool")(x)
    pooled = keras.layers.Dense(dense_units, activation="relu", name="pooled_dense")(pooled)
    if dropout:
        pooled = keras.layers.Dropout(dropout, name="pooled_dropout")(pooled)
    features = {
        t.name: tokens if getattr(t, "head", None) == "label_attention" else pooled
        for t in tasks
    }
    # A dict input: the image pipelines (`image_folder_with_labels`) yield
    # `{"image": ...}`, and the export's signature input is named by the key.
    return mtl.sharing.hard_sharing({"image": inputs}, features, tasks,
                                    weighting=weighting, name="multilabel_cnn")
