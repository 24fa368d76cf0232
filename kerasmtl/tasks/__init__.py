"""Task kinds: each knows its head, masked loss, metrics and serving output."""

import keras

from kerasmtl.tasks.base import Task
from kerasmtl.tasks.classification import Classification
from kerasmtl.tasks.detection import Detection
from kerasmtl.tasks.instances import instance_ids_function
from kerasmtl.tasks.multilabel import MultiLabel
from kerasmtl.tasks.regression import Regression
from kerasmtl.tasks.segmentation import Segmentation
from kerasmtl.tasks.synthetic_tabular import synthetic_tabular_tasks
from kerasmtl.tasks.tagging import Tagging


def serialize(task: Task) -> dict:
    return keras.saving.serialize_keras_object(task)


def deserialize(config) -> Task:
    if isinstance(config, Task):
        return config
    task = keras.saving.deserialize_keras_object(config)
    if not isinstance(task, Task):
        raise ValueError(f"Expected a serialized kerasmtl Task, got {config!r}.")
    return task


__all__ = [
    "Task",
    "Classification",
    "Regression",
    "MultiLabel",
    "Tagging",
    "Segmentation",
    "Detection",
    "serialize",
    "deserialize",
    "instance_ids_function",
    "synthetic_tabular_tasks",
]
