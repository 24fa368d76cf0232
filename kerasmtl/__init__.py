"""kerasmtl: multi-task and multi-label learning for Keras 3.

The public API is what this module re-exports; everything else is importable
but not promised. `kerasmtl.serving` (the REST server and client) is imported
on its own, so that importing the library does not load the web stack.
"""

from kerasmtl import (
    boxes,
    calibration,
    data,
    evaluation,
    export,
    layers,
    losses,
    metrics,
    sharing,
    tasks,
    weighting,
)
from kerasmtl.model import MultiTaskModel

__version__ = "0.1.0"

__all__ = [
    "MultiTaskModel",
    "boxes",
    "calibration",
    "data",
    "evaluation",
    "export",
    "layers",
    "losses",
    "metrics",
    "sharing",
    "tasks",
    "weighting",
    "__version__",
]
