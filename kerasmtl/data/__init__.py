"""Data sources yielding `(features, {task_name: labels})`; missing labels are
marked (-1 / NaN), never dropped."""

from kerasmtl.data.synthetic_tabular import synthetic_tabular, synthetic_tabular_tasks

__all__ = ["synthetic_tabular", "synthetic_tabular_tasks"]
