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
    file_sha256,  # noqa: F401  (re-exported: a preset's hash, as its card records it)
    split_hash_fragment,
)

PRESETS_DIR = Path(__file__).parent / "presets"
# Examples bigger than this (an image) are left off the card: it stays readable.


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
        card = read_card(card_path) if card_path.is_file() else {}
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
    card = read_card(card_path)
    check_hash(model_path, card.get("sha256"), what="model file", card=card_path)
    return Preset(card.get("preset", directory.name), directory, model_path, card)


def read_card(path: Path) -> dict:
    try:
        card = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"Cannot read the preset card '{path}': {error}") from None
    if not isinstance(card, dict):
        raise ValueError(f"The preset card '{path}' must hold a JSON object.")
    return card


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
