"""The zoo's registry: plain factory functions registered by name (timm-style).

```python
@register_model(example_data=...)
def my_model(**kwargs) -> kerasmtl.MultiTaskModel: ...

list_models()                      # ['my_model', ...]
create_model("my_model", units=8)  # calls the factory with overrides
```
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_CARDS = Path(__file__).parent / "cards"


@dataclass(frozen=True)
class ZooEntry:
    name: str
    factory: Callable
    # Builds a small (x, y) batch that fits a model from `factory()`; used by
    # the test that runs every registered model.
    example_data: Callable | None
    summary: str
    # `data(spec, *, batch_size, seed) -> zoo.training.TrainingData`: the
    # training recipe behind `kerasmtl train NAME --data SPEC`; None if none.
    data: Callable | None = None
    # `evaluate(model, dev) -> {task: {metric: value}}`: data-set metrics
    # Keras' evaluate cannot stream (box mAP), added to `kerasmtl train`'s and
    # `kerasmtl evaluate`'s dev report; None if none.
    evaluate: Callable | None = None


_REGISTRY: dict[str, ZooEntry] = {}


def register_model(
    fn: Callable | None = None,
    *,
    example_data: Callable | None = None,
    data: Callable | None = None,
    evaluate: Callable | None = None,
):
    """Registers a factory under its function name; usable with or without
    arguments. `data` is the model's data function (see `zoo.training`);
    `evaluate` adds data-set metrics to its dev report."""

    def register(factory: Callable) -> Callable:
        name = factory.__name__
        if name in _REGISTRY and _REGISTRY[name].factory is not factory:
            raise ValueError(f"A zoo model named '{name}' is already registered.")
        doc = inspect.getdoc(factory) or ""
        _REGISTRY[name] = ZooEntry(
            name, factory, example_data, doc.split("\n")[0], data, evaluate
        )
        return factory

    return register(fn) if fn is not None else register


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_REGISTRY)


def get_entry(name: str) -> ZooEntry:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f" Did you mean {close}?" if close else ""
        raise ValueError(
            f"No zoo model named '{name}'.{hint} Available: {list_models()}."
        )
    return _REGISTRY[name]


def create_model(name: str, **overrides):
    """Builds the registered model `name`, passing `overrides` to its factory."""
    entry = get_entry(name)
    params = inspect.signature(entry.factory).parameters
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
    unknown = sorted(set(overrides) - set(params))
    if unknown and not takes_kwargs:
        raise ValueError(
            f"Zoo model '{name}' does not take {unknown}. Its arguments are "
            f"{list(params)}."
        )
    return entry.factory(**overrides)


def model_card(name: str) -> str:
    """The model card (measured results) of `name`, or a note that it has none."""
    get_entry(name)
    path = _CARDS / f"{name}.md"
    return path.read_text() if path.exists() else f"No model card for '{name}' yet."
