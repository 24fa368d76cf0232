"""Trained presets: zoo models saved with their weights, data and dev figures.

A preset is one directory:

    model.keras    architecture + weights; the preprocessors (vocabularies, tag
                   sets, label names, thresholds, feature normalisation) are
                   layers or config of the model, so they travel with it
    preset.json    the card: zoo model, data set, the exact command, kerasmtl
                   version, dev figures and their history, sha256 and size of
                   model.keras, an example input with its outputs, and the
                   recipe's export settings (`kerasmtl export --preset` uses
                   them where its flags are not given)
    README.md      optional notes

Shipped presets live in `zoo/presets/<name>/`. `load_preset` takes a shipped
preset's name, a local directory (or archive, or `.keras` file), or an
`http(s)://` / `file://` URL of a `.zip` / `.tar.gz` of a preset directory or
of a single `.keras` file (then its sha256 is required). Downloads follow
`keras.utils.get_file`: they are cached under `$KERAS_HOME/presets` (default
`~/.keras/presets`), checked against the sha256 given (argument `sha256=` or
a `#sha256=<hex>` URL fragment) and only renamed into the cache once complete.
Every `model.keras` is checked against the sha256 on its card before loading.

```python
import zoo
zoo.list_presets()                                   # ['multilabel_mlp_yeast', ...]
model = zoo.create_model("multilabel_mlp", preset="multilabel_mlp_yeast")
model = zoo.load_preset("https://example.org/p.tar.gz#sha256=<hex>")
zoo.save_preset(model, "my_preset", zoo_model="multilabel_mlp", data="yeast",
                command="kerasmtl train ...", dev_figures=report)
```
"""

from __future__ import annotations

import datetime
import json
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from zoo.preset_files import (
    CARD_FILE,
    MODEL_FILE,
    archive_kind,
    check_hash,
    download,
    expected_hash,
    extract,
    file_sha256,
    split_hash_fragment,
    write_deflated,
)

PRESETS_DIR = Path(__file__).parent / "presets"
# Examples bigger than this (an image) are left off the card: it stays readable.
_MAX_EXAMPLE_CHARS = 64_000


@dataclass(frozen=True)
class Preset:
    """A preset found and checked on disk: `path` (its directory, or None for
    a bare `.keras` file), `model_path` and `card` (the parsed preset.json;
    `{}` for a bare `.keras` file)."""

    name: str
    path: Path | None
    model_path: Path
    card: dict

    @property
    def export_settings(self) -> dict:
        """The card's `export`: the instance-mask settings of
        `export_saved_model` the preset was tuned with (`{}`: the defaults)."""
        from zoo.registry import check_export_settings

        return check_export_settings(self.card.get("export", {}),
                                     f"Preset '{self.name}': the card's `export`")

    def load(self):
        """The trained model (uncompiled: compile it before `fit`/`evaluate`)."""
        import keras

        import kerasmtl

        kerasmtl._import_all()  # registers the library's layers and tasks with Keras
        return keras.models.load_model(self.model_path, compile=False)


# -- finding presets -------------------------------------------------------------


def list_presets() -> list[str]:
    """Names of the presets shipped in `zoo/presets/`, sorted."""
    if not PRESETS_DIR.is_dir():
        return []
    return sorted(p.parent.name for p in PRESETS_DIR.glob(f"*/{CARD_FILE}"))


def get_preset_of(zoo_model: str, preset: str | os.PathLike, *,
                  given_as: str = "Preset") -> Preset:
    """`get_preset(preset)`, refused unless zoo model `zoo_model` made it
    (`given_as` names where the preset came from in the error)."""
    found = get_preset(preset)
    made_by = found.card.get("zoo_model")
    if made_by is not None and made_by != zoo_model:
        raise ValueError(
            f"{given_as} '{preset}' is a '{made_by}' model, not a '{zoo_model}' "
            f"one. Use zoo.create_model('{made_by}', preset=...) for it, or pick a "
            f"preset of '{zoo_model}' (`kerasmtl zoo presets`)."
        )
    return found


def get_preset(preset: str | os.PathLike, *, sha256: str | None = None,
               cache_dir: str | None = None) -> Preset:
    """Finds, downloads if needed, and checks a preset.

    Args:
        preset: a shipped preset's name (`list_presets()`), a local preset
            directory, `.zip`/`.tar.gz` archive or `.keras` file, or an
            `http://`, `https://` or `file://` URL of an archive or `.keras`
            file. A URL may end in `#sha256=<hex>`.
        sha256: str or None. Expected sha256 of the downloaded or local file
            (archive or `.keras`). Required for a `.keras` URL.
        cache_dir: str or None. Download cache. Defaults to
            `$KERAS_HOME/presets`, else `~/.keras/presets`.

    Returns:
        A `Preset`, whose `model.keras` matched the sha256 on its card.
    """
    text = os.fspath(preset)
    scheme = urllib.parse.urlsplit(text).scheme
    if scheme in ("http", "https", "file"):
        text, fragment_hash = split_hash_fragment(text)
        sha256 = expected_hash(sha256, fragment_hash, text)
        local = download(text, sha256, cache_dir)
        return _open_local(local, sha256=None, source=text, cache_dir=cache_dir)
    if scheme and len(scheme) > 1:  # one letter: a Windows drive
        raise ValueError(
            f"Cannot load preset '{text}': unsupported URL scheme '{scheme}'. Use "
            "https://, http:// or file://, a local path, or one of the shipped "
            f"presets {list_presets()}."
        )
    sha256 = expected_hash(sha256, None, text)
    shipped = PRESETS_DIR / text
    if os.sep not in text and "/" not in text and (shipped / CARD_FILE).is_file():
        return _open_local(shipped, sha256=sha256, source=text, cache_dir=cache_dir)
    if os.path.exists(text):
        return _open_local(Path(text), sha256=sha256, source=text, cache_dir=cache_dir)
    raise ValueError(
        f"No preset '{text}': it is not a shipped preset ({list_presets()}), an "
        "existing path, or an http(s):// or file:// URL."
    )


def load_preset(preset: str | os.PathLike, *, sha256: str | None = None,
                cache_dir: str | None = None):
    """The trained model of a preset (see `get_preset` for `preset`); the
    model comes uncompiled: compile it before `fit` or `evaluate`."""
    return get_preset(preset, sha256=sha256, cache_dir=cache_dir).load()


def preset_card(preset: str | os.PathLike, **kwargs) -> dict:
    """The card (preset.json) of a preset, checked like `get_preset`."""
    return get_preset(preset, **kwargs).card


def _open_local(path: Path, *, sha256: str | None, source: str,
                cache_dir: str | None) -> Preset:
    path = Path(path)
    if path.is_dir():
        return _open_directory(path, source)
    if sha256 is not None:
        check_hash(path, sha256, what="preset file")
    if path.suffix == ".keras":
        card_path = path.with_suffix(".json")
        card = _read_card(card_path) if card_path.is_file() else {}
        if card:
            check_hash(path, card.get("sha256"), what="model file", card=card_path)
        return Preset(card.get("preset", path.stem), None, path, card)
    if archive_kind(path) is None:
        raise ValueError(
            f"Cannot load preset '{source}': '{path}' is neither a preset directory "
            f"(holding {CARD_FILE} and {MODEL_FILE}), a .zip or .tar.gz of one, nor a "
            ".keras file."
        )
    return _open_directory(extract(path, cache_dir), source)


def _open_directory(directory: Path, source: str) -> Preset:
    card_path, model_path = directory / CARD_FILE, directory / MODEL_FILE
    for needed in (card_path, model_path):
        if not needed.is_file():
            raise ValueError(
                f"Preset '{source}' ({directory}) has no {needed.name}. A preset "
                f"directory holds {MODEL_FILE} and {CARD_FILE}; write one with "
                "zoo.save_preset or `kerasmtl train ... --save-preset DIR`."
            )
    card = _read_card(card_path)
    check_hash(model_path, card.get("sha256"), what="model file", card=card_path)
    return Preset(card.get("preset", directory.name), directory, model_path, card)


def _read_card(path: Path) -> dict:
    try:
        card = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"Cannot read the preset card '{path}': {error}") from None
    if not isinstance(card, dict):
        raise ValueError(f"The preset card '{path}' must hold a JSON object.")
    return card


# -- saving ---------------------------------------------------------------------


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
    old = _read_card(old_card_path) if old_card_path.is_file() else None

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


def example_inputs(card: dict):
    """The example inputs saved on a card, as numpy arrays, or string
    tensors for string inputs (Keras' predict takes no numpy strings); None
    if none."""
    import numpy as np
    import tensorflow as tf

    example = card.get("example")
    if not example:
        return None

    def decode(item):
        array = np.asarray(item["values"], dtype=item["dtype"])
        return tf.constant(array.astype(object).astype(str)) if array.dtype.kind in "USO" else array

    inputs = example["inputs"]
    if "values" in inputs and "dtype" in inputs:
        return decode(inputs)
    return {k: decode(v) for k, v in inputs.items()}


def example_outputs(card: dict):
    """The outputs saved with the card's example inputs (None if none)."""
    import numpy as np

    example = card.get("example")
    if not example:
        return None
    outputs = example["outputs"]
    if "values" in outputs and "dtype" in outputs:
        return np.asarray(outputs["values"], dtype=outputs["dtype"])
    return {k: np.asarray(v["values"], dtype=v["dtype"]) for k, v in outputs.items()}
