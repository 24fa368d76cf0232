"""kerasmtl: multi-task and multi-label learning for Keras 3.

The public API is what this module re-exports; everything else is importable
but not promised.
"""

from kerasmtl import data, evaluation, export, sharing, tasks, weighting
from kerasmtl.model import MultiTaskModel

__version__ = "0.1.0"

__all__ = [
    "MultiTaskModel",
    "data",
    "evaluation",
    "export",
    "sharing",
    "tasks",
    "weighting",
    "__version__",
]
