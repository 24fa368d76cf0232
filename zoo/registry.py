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
from dataclasses import dataclass, field
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
    # `data(spec, *, batch_size, seed) -> zoo.training_settings.TrainingData`: the
    # training recipe behind `kerasmtl train NAME --data SPEC`; None if none.
    data: Callable | None = None
    # `evaluate(model, dev) -> {task: {metric: value}}`: data-set metrics
    # Keras' evaluate cannot stream (box mAP), added to `kerasmtl train`'s and
    # `kerasmtl evaluate`'s dev report; None if none.
    evaluate: Callable | None = None
    # The model's training defaults (see `register_model`): the settings its
    # recipe was tuned with, used where `kerasmtl train` is given none.
    recipe: dict = field(default_factory=dict)


# Keys a recipe may hold, with what each must be.
_RECIPE_KEYS = {
    "epochs": "an int >= 1",
    "batch_size": "an int >= 1",
    "optimizer": "a callable `(steps_per_epoch, epochs) -> keras optimizer`",
    "model_kwargs": "a dict of factory arguments",
    "early_stopping": "an int >= 0 (patience in epochs on the monitored dev value; 0: off)",
    "weighting": "a str as --weighting takes (e.g. \"static:weights={'pos': 1.0, 'ner': 2.0}\")",
    "train_metrics": "a bool (compute the tasks' metrics in training steps too)",
    "monitor": "a str: 'val_loss', 'joint' or a value fit logs (e.g. 'val_ner/entity_f1')",
    "export": "a dict of export_saved_model's instance settings (instance_min_score, "
              "instance_overlap, instance_grow), e.g. {'instance_overlap': 'centre'}",
}
# The export settings a recipe (and a preset's card) may fix; `kerasmtl export
# --preset` uses them where its flags are not given.
EXPORT_SETTINGS = ("instance_min_score", "instance_overlap", "instance_grow")

_REGISTRY: dict[str, ZooEntry] = {}


def register_model(
    fn: Callable | None = None,
    *,
    example_data: Callable | None = None,
    data: Callable | None = None,
    evaluate: Callable | None = None,
    recipe: dict | None = None,
):
    """Registers a factory under its function name; usable with or without
    arguments. `data` is the model's data function (see `zoo.training`);
    `evaluate` adds data-set metrics to its dev report.

    `recipe` holds the model's training defaults, all optional: `epochs`
    and `batch_size` (ints), `optimizer` (a callable
    `(steps_per_epoch, epochs) -> keras.optimizers.Optimizer`, so that a
    recipe can use a learning-rate schedule; `steps_per_epoch` is None when
    the data does not know its length) and `model_kwargs` (factory arguments
    the recipe trains with, e.g. `{"lstm_units": 128}`) and `early_stopping`
    (patience in epochs on the dev loss, with the best epoch's weights
    restored; 0: off) and `monitor` (what early stopping watches instead of
    the dev loss: `"joint"` or a logged key) and `train_metrics` (False:
    the tasks' metrics on the dev pass only, see `MultiTaskModel.compile`)
    and `weighting` (the loss weighting or balancer, spelled as `--weighting`
    takes it, for the multi-task model) and `export` (the instance-mask
    settings of `export_saved_model` chosen on the recipe's dev data; a
    preset's card carries them to `kerasmtl export --preset`).
    `kerasmtl train` uses them where its flags are not given."""

    def register(factory: Callable) -> Callable:
        name = factory.__name__
        if name in _REGISTRY and _REGISTRY[name].factory is not factory:
            raise ValueError(f"A zoo model named '{name}' is already registered.")
        doc = inspect.getdoc(factory) or ""
        _REGISTRY[name] = ZooEntry(
            name, factory, example_data, doc.split("\n")[0], data, evaluate,
            _checked_recipe(name, recipe),
        )
        return factory

    return register(fn) if fn is not None else register


def _checked_recipe(name: str, recipe: dict | None) -> dict:
    recipe = dict(recipe or {})
    unknown = sorted(set(recipe) - set(_RECIPE_KEYS))
    if unknown:
        raise ValueError(
            f"Invalid recipe for zoo model '{name}': unknown keys {unknown}. "
            f"A recipe may hold {sorted(_RECIPE_KEYS)}."
        )
    for key, value in recipe.items():
        if key in ("epochs", "batch_size", "early_stopping"):
            least = 0 if key == "early_stopping" else 1
            valid = isinstance(value, int) and not isinstance(value, bool) and value >= least
        elif key == "optimizer":
            valid = callable(value)
        elif key == "monitor":
            valid = isinstance(value, str) and bool(value)
        elif key == "train_metrics":
            valid = isinstance(value, bool)
        elif key == "export":
            check_export_settings(value, f"Invalid recipe for zoo model '{name}': `export`")
            valid = True
        elif key == "weighting":
            valid = isinstance(value, str) and bool(value)
            if valid:  # a bad name or argument fails at registration, not in a run
                from kerasmtl.weighting_spec import weighting_factory

                try:
                    weighting_factory(value)
                except ValueError as error:
                    raise ValueError(
                        f"Invalid recipe for zoo model '{name}': `weighting` "
                        f"{value!r}: {error}") from error
        else:
            valid = isinstance(value, dict)
        if not valid:
            raise ValueError(
                f"Invalid recipe for zoo model '{name}': `{key}` must be "
                f"{_RECIPE_KEYS[key]}. Received: {key}={value!r}"
            )
    return recipe


def check_export_settings(settings, where: str) -> dict:
    """`settings` (a recipe's or a card's `export`), checked: a dict of
    `EXPORT_SETTINGS` keys with valid values."""
    from kerasmtl.metrics.instance import check_instance_rule

    if not isinstance(settings, dict):
        raise ValueError(f"{where} must be a dict of {EXPORT_SETTINGS}. "
                         f"Received: {settings!r}")
    unknown = sorted(set(settings) - set(EXPORT_SETTINGS))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; it may hold {EXPORT_SETTINGS}.")
    check_instance_rule(settings.get("instance_overlap", "score"),
                        settings.get("instance_grow", 0.0), where)
    score = settings.get("instance_min_score", 0.0)
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not 0 <= score <= 1:
        raise ValueError(f"{where}: `instance_min_score` must be a number in [0, 1]. "
                         f"Received: instance_min_score={score!r}")
    return dict(settings)


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


def create_model(name: str, preset: str | None = None, **overrides):
    """Builds the registered model `name`, passing `overrides` to its factory.

    With `preset` (a shipped preset's name, a path or a URL; see
    `zoo.load_preset`), returns that preset's trained model instead, after
    checking that the preset was made by zoo model `name`."""
    entry = get_entry(name)
    if preset is not None:
        return _preset_model(name, preset, overrides)
    params = inspect.signature(entry.factory).parameters
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
    unknown = sorted(set(overrides) - set(params))
    if unknown and not takes_kwargs:
        raise ValueError(
            f"Zoo model '{name}' does not take {unknown}. Its arguments are "
            f"{list(params)}."
        )
    return entry.factory(**overrides)


def _preset_model(name: str, preset: str, overrides: dict):
    from zoo.preset_loader import get_preset_of

    if overrides:
        raise ValueError(
            f"create_model('{name}', preset='{preset}') takes no factory arguments: "
            f"the preset fixes the architecture. Received: {sorted(overrides)}. To "
            "change it, fine-tune: `kerasmtl train NAME --preset P --data D`."
        )
    return get_preset_of(name, preset).load()


def model_card(name: str) -> str:
    """The model card (measured results) of `name`, or a note that it has none."""
    get_entry(name)
    path = _CARDS / f"{name}.md"
    return path.read_text() if path.exists() else f"No model card for '{name}' yet."
