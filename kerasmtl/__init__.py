"""kerasmtl: multi-task and multi-label learning for Keras 3.

The public API is what this module re-exports; everything else is importable
but not promised. `kerasmtl.serving` (the REST server and client) is imported
on its own, so that importing the library does not load the web stack.

Importing the package imports every submodule (registering all classes with
Keras), except in the `kerasmtl` command line, where submodules load on first
use (PEP 562) so that `--help` does not wait for TensorFlow.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING

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
_SUBMODULES = __all__[1:-1]

if TYPE_CHECKING:  # what static analysers and IDEs see
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


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name == "MultiTaskModel":
        from kerasmtl.model import MultiTaskModel

        globals()["MultiTaskModel"] = MultiTaskModel
        return MultiTaskModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def _import_all() -> None:
    """Imports every public submodule: registers all of kerasmtl's layers,
    losses, metrics and tasks with Keras, for `keras.models.load_model`."""
    for name in (*_SUBMODULES, "MultiTaskModel"):  # the order eager imports had
        __getattr__(name)


def _started_as_command_line() -> bool:
    """True in the `kerasmtl` console script and `python -m kerasmtl`."""
    if os.path.basename(sys.argv[0] or "") == "kerasmtl":
        return True
    argv = getattr(sys, "orig_argv", [])
    return any(a == "-m" and b in ("kerasmtl", "kerasmtl.cli")
               for a, b in zip(argv, argv[1:]))


# A library import registers every serializable class with Keras at once, as
# eager imports did: `import kerasmtl` then `keras.models.load_model(...)`
# must find kerasmtl's layers, in whatever order the user imported Keras.
# Only the command line starts lazily (its `--help` needs no TensorFlow) and
# imports what each command uses.
if "keras" in sys.modules or not _started_as_command_line():
    _import_all()
