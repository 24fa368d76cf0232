"""Writing presets: a trained zoo model as `model.keras` + `preset.json`.

`save_preset` writes a model held in memory (what `kerasmtl train ...
--save-preset DIR` calls); `save_trained_preset` writes a `.keras` file
trained earlier (`kerasmtl zoo save-preset`), with the same dev report and
card example `--save-preset` would have made. Reading presets is
`zoo.preset_loader`; the file-level helpers are `zoo.preset_files`.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

from zoo.preset_files import CARD_FILE, MODEL_FILE, file_sha256, write_deflated
from zoo.preset_loader import read_card

# A card's example (inputs and outputs as JSON) is dropped above this size.
_MAX_EXAMPLE_CHARS = 64_000


def save_preset(
    model,
    directory: str | os.PathLike,
    *,
    zoo_model: str,
    data: str,
    command: str,
    dev_figures: dict,
    preset_name: str | None = None,
    example_inputs=None,
    notes: str | None = None,
    readme: str | None = None,
    print_fn=print,
) -> Path:
    """Writes a trained model as a preset directory.

    Args:
        model: the trained zoo model (a `MultiTaskModel`).
        directory: str. The preset directory; created if needed. A preset
            already there is replaced and its dev figures go to the new
            card's `history`.
        zoo_model: str. The registered zoo model the model was built by.
        data: str. The data set it was trained on (e.g. `"MULAN yeast"`).
        command: str. The exact command that trained it.
        dev_figures: dict. `{task: {metric: value}}` on the dev set (as
            `kerasmtl.evaluation.task_report` gives).
        preset_name: str or None. Defaults to the directory's name.
        example_inputs: array, dict of arrays or None. A few raw inputs the
            model takes; saved on the card with the model's outputs on them,
            so that a loaded preset can be checked. Defaults to `None`.
        notes: str or None. A line for the card (e.g. weight precision).
        readme: str or None. Written as README.md beside the card.
        print_fn: where the comparison with the replaced preset goes.

    Returns:
        The directory's path.
    """
    import kerasmtl
    from zoo.registry import get_entry

    get_entry(zoo_model)  # a clear error for an unknown name
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    name = preset_name or directory.name
    old_card_path = directory / CARD_FILE
    old = read_card(old_card_path) if old_card_path.is_file() else None

    model_path = directory / MODEL_FILE
    write_deflated(_model_without_optimizer(model), model_path)
    card = {
        "preset": name,
        "zoo_model": zoo_model,
        "data": data,
        "command": command,
        "kerasmtl_version": kerasmtl.__version__,
        "date": datetime.date.today().isoformat(),
        "dev_figures": _plain(dev_figures),
        "headline": _headline(model, dev_figures),
        "sha256": file_sha256(model_path),
        "size_bytes": model_path.stat().st_size,
        "weights_dtype": _weights_dtype(model),
    }
    export = get_entry(zoo_model).recipe.get("export")
    if export:
        card["export"] = dict(export)
    if notes:
        card["notes"] = notes
    if example_inputs is not None:
        example = _example(model, example_inputs)
        if example is not None:
            card["example"] = example
    history = list(old.get("history", [])) if old else []
    if old:
        history.append({k: old[k] for k in ("date", "kerasmtl_version", "command",
                                            "dev_figures", "headline", "sha256")
                        if k in old})
        _print_comparison(old.get("headline", {}), card["headline"], print_fn)
    card["history"] = history
    (directory / CARD_FILE).write_text(json.dumps(card, indent=1) + "\n")
    if readme is not None:
        (directory / "README.md").write_text(readme)
    return directory


def _model_without_optimizer(model):
    # A preset is for prediction and a fresh fine-tuning run: the optimizer's
    # slots (Adam keeps two per weight) would triple the file for nothing.
    if getattr(model, "optimizer", None) is None:
        return model
    clone = model.__class__.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    return clone


def _weights_dtype(model) -> str:
    dtypes = sorted({str(getattr(w.dtype, "name", w.dtype)) for w in model.weights})
    return ",".join(dtypes)


def _headline(model, dev_figures: dict) -> dict:
    """Each task's primary dev figure: what "improves" means for a preset."""
    headline = {}
    for task in getattr(model, "tasks", []):
        value = dev_figures.get(task.name, {}).get(task.primary_metric)
        if value is not None:
            headline[task.name] = {"metric": task.primary_metric, "value": float(value),
                                   "higher_is_better": bool(task.higher_is_better)}
    return headline


def _print_comparison(old: dict, new: dict, print_fn) -> None:
    for task_name, figure in new.items():
        before = old.get(task_name, {}).get("value")
        if before is None:
            continue
        delta = figure["value"] - before
        better = delta > 0 if figure["higher_is_better"] else delta < 0
        verdict = ("better than" if better else
                   "the same as" if delta == 0 else "WORSE than")
        print_fn(f"preset {task_name} {figure['metric']}: {before:.4f} -> "
                 f"{figure['value']:.4f} ({verdict} the preset it replaces)")


def _plain(value):
    """`value` with numpy and TF scalars turned into Python ones (for JSON)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        return value.item()
    return value


def _example(model, inputs) -> dict | None:
    import numpy as np

    def encode(array):
        array = np.asarray(array)
        if array.dtype.kind in "SO":
            array = np.vectorize(
                lambda v: v.decode() if isinstance(v, bytes) else str(v),
                otypes=[str])(array)
        if array.dtype in (np.float32, np.float16):
            # The shortest decimal that reads back as the same float32/16
            # (tolist() would write float64 digits): about half the JSON.
            return {"dtype": array.dtype.name,
                    "values": array.astype(str).astype("float64").tolist()}
        return {"dtype": "str" if array.dtype.kind == "U" else array.dtype.name,
                "values": array.tolist()}

    outputs = model.predict(inputs, verbose=0)
    encoded_in = ({k: encode(v) for k, v in inputs.items()} if isinstance(inputs, dict)
                  else encode(inputs))
    encoded_out = ({k: encode(v) for k, v in outputs.items()} if isinstance(outputs, dict)
                   else encode(outputs))
    example = {"inputs": encoded_in, "outputs": encoded_out}
    if len(json.dumps(example)) > _MAX_EXAMPLE_CHARS:
        return None
    return example


def save_trained_preset(
    zoo_model: str,
    model_path: str | os.PathLike,
    directory: str | os.PathLike,
    spec: str,
    *,
    seed: int = 0,
    dev_fraction: float | None = None,
    command: str,
    notes: str | None = None,
    print_fn=print,
) -> Path:
    """Writes a trained `.keras` file of zoo model `zoo_model` as a preset.

    The dev figures and the card's example come from the data `spec` names,
    split as `kerasmtl train` splits it with the same `seed` and
    `dev_fraction`, so the card says what `--save-preset` would have said
    had the run written the preset itself.

    Args:
        zoo_model: str. The registered zoo model the file was trained as.
        model_path: str. The trained model (`kerasmtl train ... --save`).
        directory: str. The preset directory (see `save_preset`).
        spec: str. The data it was trained on, as given to `--data`.
        seed, dev_fraction: the training run's (they draw the dev split
            of data without one of its own).
        command: str. The command that trained the model, for the card.
        notes: str or None. A line for the card.
        print_fn: where the dev figures and the comparison go.

    Returns:
        The directory's path.
    """
    import keras

    import kerasmtl
    from zoo import training
    from zoo.registry import get_entry

    get_entry(zoo_model)  # a clear error for an unknown name, before loading
    kerasmtl._import_all()  # registers the library's layers and tasks with Keras
    try:
        model = keras.saving.load_model(model_path, compile=False)
    except (OSError, TypeError, ValueError) as error:
        raise ValueError(
            f"Cannot load '{model_path}' as a trained '{zoo_model}' model: {error} "
            "Pass the .keras file `kerasmtl train ... --save FILE` wrote.") from None
    settings = training.training_settings(zoo_model)
    data = training.load_training_data(zoo_model, spec, batch_size=settings.batch_size,
                                       seed=seed, dev_fraction=dev_fraction)
    model.compile()  # the tasks' metrics, for the dev report (no optimizer state)
    expected = sorted(task.name for task in data.tasks)
    if sorted(getattr(model, "task_names", [])) != expected:
        raise ValueError(
            f"'{model_path}' predicts tasks {sorted(getattr(model, 'task_names', []))}, "
            f"but '{zoo_model}' on '{spec}' has tasks {expected}: pass the file "
            "trained on this data, as this zoo model.")
    report = training.dev_report(zoo_model, model, data.dev)
    training.print_report(report, print_fn)
    return save_preset(model, directory, zoo_model=zoo_model,
                       data=f"{spec}: {data.summary}", command=command,
                       dev_figures=report, example_inputs=training.example_rows(data.dev),
                       notes=notes, print_fn=print_fn)
