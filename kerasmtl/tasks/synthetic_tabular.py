"""The tasks of the built-in synthetic tabular data set.

`kerasmtl.data.synthetic_tabular` yields the labels (the data side never
imports tasks); this module holds the tasks that fit them, for the
quickstart, the tests and the benchmarks.
"""

from __future__ import annotations

from kerasmtl.tasks.base import Task
from kerasmtl.tasks.classification import Classification
from kerasmtl.tasks.multilabel import MultiLabel
from kerasmtl.tasks.regression import Regression


def synthetic_tabular_tasks() -> list[Task]:
    """The tasks that fit `kerasmtl.data.synthetic_tabular` labels:
    `species` (3 classes), `size` (regression) and `tags` (5 labels).

    Examples:

    >>> [task.name for task in synthetic_tabular_tasks()]
    ['species', 'size', 'tags']
    """
    return [
        Classification("species", num_classes=3),
        Regression("size"),
        MultiLabel("tags", num_labels=5),
    ]
