"""Training one model on several data sets with disjoint labels.

A POS corpus and a separate NER corpus each label one task; `mix` draws
examples from them into one stream whose label dicts hold every task, the
labels an example lacks filled with the missing marker (-1 for integer labels,
NaN for float labels), so the masked losses skip them. How often each data set
is drawn is the sampling strategy:

- `"proportional"`: by data-set size, `p_i = n_i / sum_j n_j`;
- `"temperature"`: `p_i ~ n_i ** (1 / T)`, flattening the size imbalance
  (`T = 1` is proportional, `T -> inf` uniform; as in multilingual BERT/XLM
  and Arivazhagan et al. 2019);
- `"uniform"`: `p_i = 1 / k`;
- `"dynamic"`: weights held in a `tf.Variable` read at every draw, which the
  `DynamicSampling` callback moves at each epoch end toward the data sets of
  the tasks furthest below their targets (Gottumukkala, Dua, Singh and
  Gardner, "Dynamic Sampling Strategies for Multi-Task Reading
  Comprehension", ACL 2020; also Sharma and Ravindran, "Learning to Multi-Task
  by Active Sampling", ICLR 2018).

By default one pass over the mixture yields every example of every data set
once (an epoch of `fit`): the strategy sets the order, and once a data set is
exhausted the draws go to the others. With `repeat=True` (always so for
`"dynamic"`) every data set is repeated forever and the strategy holds
throughout (oversampling the small data sets under `"temperature"` or
`"uniform"`); train with `steps_per_epoch`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf

from kerasmtl.data.dynamic_sampling import DynamicSampling

STRATEGIES = ("proportional", "temperature", "uniform", "dynamic")


def mix(
    datasets: Mapping[str, tf.data.Dataset] | Sequence[tf.data.Dataset],
    *,
    strategy: str = "proportional",
    weights: Mapping[str, float] | Sequence[float] | None = None,
    temperature: float = 2.0,
    sampler: DynamicSampling | None = None,
    repeat: bool | None = None,
    seed: int | None = None,
) -> tf.data.Dataset:
    """Mixes data sets that label different tasks into one example stream.

    Args:
        datasets: dict `{name: dataset}` or list of datasets (named
            `dataset_<i>`). Each yields *unbatched* `(features, {task: label})`
            examples; the features have the same structure, dtypes and
            compatible shapes in every data set. A label may be a tensor or a
            dict of tensors (e.g. detection's `{"boxes", "classes"}`).
        strategy: `"proportional"`, `"temperature"`, `"uniform"` or
            `"dynamic"`. Defaults to `"proportional"`.
        weights: per data set (dict by name, or list), or None. For
            `"proportional"` and `"temperature"`: the sizes to use instead of
            the data sets' cardinalities (needed when a cardinality is unknown);
            for `"dynamic"`: the initial sampling weights (default uniform).
            Not used by `"uniform"`. Defaults to `None`.
        temperature: float > 0. `T` of the temperature strategy. Defaults to
            `2.0`.
        sampler: `DynamicSampling` or None. Required by `"dynamic"`: the
            callback that owns the weights; give the same object to `fit()`,
            with `steps_per_epoch` (the dynamic mixture is endless, so the
            callback refuses a `fit()` without it). Defaults to `None`.
        repeat: bool or None. Repeat every data set forever, so the draws
            follow the strategy throughout (sizes are still read before
            repeating); the mixture is then infinite. Defaults to `None`:
            `True` for `"dynamic"`, else `False` (one pass over all examples
            of the data sets with a weight above zero).
        seed: int or None. Seed of the draws (each epoch draws anew, the same
            way for the same seed). Defaults to `None`.

    Returns:
        A `tf.data.Dataset` of unbatched `(features, {task: label})` with every
        task of every data set. A missing label has the shape of the task's
        labels; a dimension unknown in the label spec takes the size of the
        same axis of the first feature whose size on that axis varies (a
        tagging example's length), or 1. Batch with `.batch()`, or with
        `.padded_batch(n, padding_values=padding_values(ds))` for sequences.

    Examples:

    >>> pos = tf.data.Dataset.from_tensor_slices(([[1.0], [2.0]], {"pos": [3, 4]}))
    >>> ner = tf.data.Dataset.from_tensor_slices(([[5.0]], {"ner": [[0.5, 1.5]]}))
    >>> ds = mix({"pos": pos, "ner": ner}, strategy="uniform", seed=0)
    >>> sorted(ds.element_spec[1])
    ['ner', 'pos']
    >>> only_pos = mix({"pos": pos, "ner": ner}, weights={"pos": 1, "ner": 0})
    >>> for x, y in only_pos:
    ...     print(float(x[0]), int(y["pos"]), y["ner"].numpy().tolist())
    1.0 3 [nan, nan]
    2.0 4 [nan, nan]
    """
    names, sets = _named(datasets)
    if strategy not in STRATEGIES:
        raise ValueError(
            f"Invalid value for argument `strategy`. Expected one of {STRATEGIES}. "
            f"Received: strategy={strategy!r}"
        )
    label_specs, tasks_of = _label_specs(names, sets)
    _check_features(names, sets)
    # Axes of each (flattened) feature that vary in some data set: a missing
    # label's unknown dimension is read from the first such feature.
    varying = [
        {axis for spec in specs for axis, dim in enumerate(spec.shape) if dim is None}
        for specs in zip(*(tf.nest.flatten(ds.element_spec[0]) for ds in sets))
    ]
    filled = [
        ds.map(_filler(label_specs, varying), num_parallel_calls=tf.data.AUTOTUNE)
        for ds in sets
    ]
    probabilities = _probabilities(names, sets, strategy, weights, temperature)
    if strategy == "dynamic":
        if not isinstance(sampler, DynamicSampling):
            raise ValueError(
                "strategy='dynamic' needs `sampler=DynamicSampling(targets=...)`, the "
                f"callback that updates the weights (pass it to fit() too). "
                f"Received: sampler={sampler!r}"
            )
        if repeat is False:
            raise ValueError(
                "strategy='dynamic' draws from repeated data sets (a data set whose "
                "weight drops to zero would otherwise never be drained); leave "
                "`repeat` unset and train with `steps_per_epoch`."
            )
        sampler.bind(names, tasks_of, probabilities)
        probabilities, repeat = sampler.weights, True
    elif sampler is not None:
        raise ValueError(
            f"`sampler` is only used by strategy='dynamic'; strategy={strategy!r}."
        )
    else:
        # A data set of weight zero is never drawn, so it is left out: waiting
        # for it to be drained would never end.
        kept = [i for i, p in enumerate(probabilities) if p > 0]
        filled = [filled[i] for i in kept]
        sets = [sets[i] for i in kept]
        probabilities = tf.constant(probabilities[kept], tf.float32)
    sizes = [int(ds.cardinality()) for ds in sets]
    if repeat:
        filled = [ds.repeat() for ds in filled]
    # Not stopping at the first exhausted data set keeps every epoch the same
    # length (all examples), which Keras expects of a finite dataset.
    mixed = tf.data.Dataset.choose_from_datasets(
        filled, _selector(probabilities, seed), stop_on_empty_dataset=False
    )
    if not repeat and min(sizes) >= 0:
        # Known length: Keras shows progress and needs no first pass to learn it.
        mixed = mixed.apply(tf.data.experimental.assert_cardinality(sum(sizes)))
    return mixed


def padding_values(dataset: tf.data.Dataset):
    """`padding_values` for `dataset.padded_batch`: labels padded with their
    missing marker (-1 / NaN), features with 0 (`""` for strings).

    Examples:

    >>> ds = tf.data.Dataset.from_tensor_slices(([[1, 2]], {"ner": [[0, 1]]}))
    >>> ds = ds.map(lambda x, y: (x[:1], y))
    >>> padded = ds.padded_batch(1, padded_shapes=([3], {"ner": [3]}),
    ...                          padding_values=padding_values(ds))
    >>> next(iter(padded))[1]["ner"].numpy().tolist()
    [[0, 1, -1]]
    """
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) != 2:
        raise ValueError(
            "padding_values expects a dataset of (features, labels) pairs. "
            f"Received element spec {spec}."
        )
    features = tf.nest.map_structure(
        lambda s: tf.constant("" if s.dtype == tf.string else 0, s.dtype), spec[0]
    )
    labels = {
        task: tf.nest.map_structure(
            lambda s, task=task: tf.constant(_marker(s, task), s.dtype), label_spec
        )
        for task, label_spec in spec[1].items()
    }
    return features, labels


def _named(datasets) -> tuple[list[str], list[tf.data.Dataset]]:
    if isinstance(datasets, Mapping):
        names, sets = [str(k) for k in datasets], list(datasets.values())
    elif isinstance(datasets, Sequence):
        names, sets = [f"dataset_{i}" for i in range(len(datasets))], list(datasets)
    else:
        raise ValueError(
            "Invalid value for argument `datasets`. Expected a dict {name: "
            f"tf.data.Dataset}} or a list of datasets. Received: {datasets!r}"
        )
    if not sets:
        raise ValueError("mix needs at least one data set; `datasets` is empty.")
    for name, ds in zip(names, sets):
        spec = getattr(ds, "element_spec", None)
        if not (isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[1], dict)):
            raise ValueError(
                f"Data set '{name}' must yield (features, {{task: label}}) pairs; its "
                f"element spec is {spec}. Map it to that form first."
            )
    return names, sets


def _label_specs(names, sets):
    specs, tasks_of = {}, {}
    for name, ds in zip(names, sets):
        labels = ds.element_spec[1]
        tasks_of[name] = list(labels)
        for task, spec in labels.items():
            if task not in specs:
                specs[task] = (name, spec)
                continue
            first, known = specs[task]
            same = _same_structure(known, spec) and all(
                a.dtype == b.dtype
                for a, b in zip(tf.nest.flatten(known), tf.nest.flatten(spec))
            )
            if not same:
                raise ValueError(
                    f"Task '{task}' has labels {spec} in data set '{name}' but "
                    f"{known} in data set '{first}'. Labels of one task need the "
                    "same structure and dtype in every data set."
                )
    return {task: spec for task, (_, spec) in specs.items()}, tasks_of


def _check_features(names, sets):
    reference = sets[0].element_spec[0]
    for name, ds in zip(names[1:], sets[1:]):
        spec = ds.element_spec[0]
        ok = _same_structure(reference, spec) and all(
            a.dtype == b.dtype and a.shape.is_compatible_with(b.shape)
            for a, b in zip(tf.nest.flatten(reference), tf.nest.flatten(spec))
        )
        if not ok:
            raise ValueError(
                f"The features of data set '{name}' ({spec}) do not match those of "
                f"data set '{names[0]}' ({reference}). Every data set must yield "
                "features of the same structure, dtypes and compatible shapes: "
                "map them to one format before mixing."
            )


def _same_structure(a, b) -> bool:
    try:
        tf.nest.assert_same_structure(a, b)
    except (ValueError, TypeError):
        return False
    return True


def _marker(spec: tf.TensorSpec, task: str):
    if spec.dtype.is_floating:
        return float("nan")
    if spec.dtype.is_integer and not spec.dtype.is_unsigned:
        return -1
    raise ValueError(
        f"Labels of task '{task}' have dtype {spec.dtype.name}; mix can mark a "
        "missing label only in signed integer (-1) or float (NaN) labels."
    )


def _filler(label_specs, varying):
    for task, spec in label_specs.items():
        tf.nest.map_structure(lambda s, task=task: _marker(s, task), spec)

    def fill(features, labels):
        flat_features = tf.nest.flatten(features)
        out = {}
        for task, spec in label_specs.items():
            if task in labels:
                out[task] = labels[task]
            else:
                out[task] = tf.nest.map_structure(
                    lambda s, task=task: _missing(s, task, flat_features, varying), spec
                )
        return features, out

    return fill


def _missing(spec: tf.TensorSpec, task: str, flat_features, varying):
    shape = []
    for axis, dim in enumerate(spec.shape):
        if dim is not None:
            shape.append(dim)
            continue
        size = 1
        for feature, axes in zip(flat_features, varying):
            if axis in axes:
                size = tf.shape(feature)[axis]
                break
        shape.append(size)
    return tf.fill(tf.stack(shape) if shape else [], tf.constant(_marker(spec, task), spec.dtype))


def _probabilities(names, sets, strategy, weights, temperature):
    k = len(sets)
    if strategy == "uniform":
        return np.full(k, 1.0 / k)
    if weights is not None:
        values = weights
        if isinstance(weights, Mapping):
            if set(weights) != set(names):
                raise ValueError(
                    f"`weights` has keys {sorted(weights)}, the data sets are "
                    f"{names}. Give one weight per data set."
                )
            values = [weights[n] for n in names]
        values = np.asarray(values, "float64")
        if values.shape != (k,) or np.any(values < 0) or not values.sum() > 0:
            raise ValueError(
                "Invalid value for argument `weights`. Expected one non-negative "
                f"number per data set ({k}), not all zero. Received: weights={weights!r}"
            )
    elif strategy == "dynamic":
        values = np.ones(k)
    else:
        values = np.array([_size(n, ds, strategy) for n, ds in zip(names, sets)], "float64")
    if strategy == "temperature":
        if not temperature > 0:
            raise ValueError(
                "Invalid value for argument `temperature`. Expected a float > 0. "
                f"Received: temperature={temperature!r}"
            )
        values = values ** (1.0 / temperature)
    return values / values.sum()


def _size(name, ds, strategy) -> int:
    size = int(ds.cardinality())
    if size < 0:
        what = "infinite (repeated)" if size == tf.data.INFINITE_CARDINALITY else "unknown"
        raise ValueError(
            f"strategy={strategy!r} samples by data-set size, but the size of data "
            f"set '{name}' is {what}. Pass `weights=` the sizes, or mix the finite "
            "data sets and repeat the mixture (or use "
            "`ds.apply(tf.data.experimental.assert_cardinality(n))`)."
        )
    return size


def _selector(probabilities, seed):
    def draw(random_value):
        logits = tf.math.log(tf.reshape(tf.cast(probabilities, tf.float32), (1, -1)))
        seed_pair = tf.stack([random_value, tf.constant(0, tf.int64)])
        choice = tf.random.stateless_categorical(logits, 1, seed=seed_pair, dtype=tf.int64)
        return tf.reshape(choice, ())

    # A map over a random stream: the probabilities (a variable for "dynamic")
    # are read at every draw, so weight updates apply from the next element on.
    return tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).map(draw)
