"""Preset files: sha256 checks, downloads into the cache, and archives.

The file-level half of `zoo.preset_loader`: a preset's `model.keras` is
checked against the sha256 on its card, a URL is downloaded with
`keras.utils.get_file` into `$KERAS_HOME/presets` (default
`~/.keras/presets`) under a temporary name and renamed once checked, and a
`.zip`/`.tar.gz` is extracted once per content, refusing members outside its
folder or that are not plain files.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tarfile
import tempfile
import urllib.parse
import zipfile
from pathlib import Path

MODEL_FILE = "model.keras"
CARD_FILE = "preset.json"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


# -- writing -----------------------------------------------------------------------


def write_deflated(model, path: str | os.PathLike) -> None:
    """Saves `model` to `path` as a `.keras` zip whose members are deflated.

    `Model.save` stores the members uncompressed; float32 weights deflate by
    about 10% and the JSON config by ~90%, and `keras.saving.load_model` reads
    either (the same weights, the same loading time). Written next to `path`
    under a temporary name and renamed once complete.
    """
    path = Path(path)
    stored = path.with_name(f".{path.name}.stored.keras")
    packed = path.with_name(f".{path.name}.tmp")
    try:
        model.save(stored)
        with zipfile.ZipFile(stored) as source, zipfile.ZipFile(
                packed, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as target:
            for member in source.infolist():
                with source.open(member) as src, target.open(member.filename, "w") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(packed, path)
    finally:
        for leftover in (stored, packed):
            leftover.unlink(missing_ok=True)


# -- hashes ------------------------------------------------------------------------


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def expected_hash(given: str | None, fragment: str | None, source: str) -> str | None:
    for value in (given, fragment):
        if value is not None and not _HEX64.match(value.lower()):
            raise ValueError(
                f"Invalid sha256 for preset '{source}': expected 64 hex digits. "
                f"Received: {value!r}"
            )
    if given and fragment and given.lower() != fragment.lower():
        raise ValueError(
            f"Preset '{source}': the sha256 argument ({given}) and the URL's "
            f"#sha256= ({fragment}) differ. Give one."
        )
    value = given or fragment
    return value.lower() if value else None


def split_hash_fragment(url: str) -> tuple[str, str | None]:
    base, _, fragment = url.partition("#")
    if fragment.startswith("sha256="):
        return base, fragment[len("sha256="):]
    return url, None


def check_hash(path: Path, expected: str | None, *, what: str,
                card: Path | None = None) -> None:
    if expected is None:
        if card is not None:
            raise ValueError(
                f"The preset card '{card}' has no sha256 of its {path.name}; the "
                "file cannot be checked. Write the preset with zoo.save_preset."
            )
        return
    actual = file_sha256(path)
    if actual != expected.lower():
        where = f" (recorded in {card})" if card else ""
        raise ValueError(
            f"The {what} '{path}' is corrupted or not the expected one: its sha256 "
            f"is {actual}, expected {expected}{where}. Delete it and download or "
            "copy it again."
        )


# -- downloads and archives --------------------------------------------------------


def _cache_root(cache_dir: str | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    keras_home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return Path(keras_home) / "presets"


def download(url: str, sha256: str | None, cache_dir: str | None) -> Path:
    """The file at `url`, from the cache if already there (and matching
    `sha256`), else downloaded to a temporary name, checked and renamed."""
    name = os.path.basename(urllib.parse.urlsplit(url).path)
    if not name:
        raise ValueError(f"Preset URL '{url}' names no file; it must end in the "
                         "archive's or .keras file's name.")
    if name.endswith(".keras") and sha256 is None:
        raise ValueError(
            f"Preset URL '{url}' is a bare .keras file with no card: give its sha256 "
            "(sha256= or a '#sha256=<hex>' URL fragment) so that it can be checked."
        )
    root = _cache_root(cache_dir)
    # The hash in the cache name: two presets of one file name never collide.
    target = root / (f"{sha256[:12]}-{name}" if sha256 else name)
    if target.is_file() and (sha256 is None or file_sha256(target) == sha256):
        return target
    import keras

    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as tmp:
        try:
            fetched = Path(keras.utils.get_file(name, url, cache_dir=tmp,
                                                cache_subdir="."))
        except Exception as error:  # get_file raises bare Exceptions
            raise ValueError(f"Cannot download preset '{url}': {error}") from None
        if sha256 is not None:
            check_hash(fetched, sha256, what=f"download of '{url}'")
        os.replace(fetched, target)  # atomic: the cache never holds a partial file
    return target


def archive_kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith((".tar.gz", ".tgz", ".tar")):
        return "tar"
    return None


def extract(archive: Path, cache_dir: str | None) -> Path:
    """Extracts a preset archive into the cache (once per archive content) and
    returns the preset directory inside it."""
    digest = file_sha256(archive)
    stem = re.sub(r"(\.tar\.gz|\.tgz|\.tar|\.zip)$", "", archive.name, flags=re.I)
    target = _cache_root(cache_dir) / "extracted" / f"{stem}-{digest[:12]}"
    if not target.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".extract-"))
        try:
            _unpack(archive, tmp)
            try:
                os.replace(tmp, target)
            except OSError:  # another process extracted it first
                if not target.is_dir():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    cards = sorted(target.glob(f"**/{CARD_FILE}"))
    if len(cards) != 1:
        raise ValueError(
            f"The preset archive '{archive}' holds {len(cards)} {CARD_FILE} files; "
            "it must hold exactly one preset directory."
        )
    return cards[0].parent


def _unpack(archive: Path, into: Path) -> None:
    kind = archive_kind(archive)
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as z:
                for member in z.namelist():
                    _check_member(archive, member)
                bad = z.testzip()
                if bad is not None:
                    raise zipfile.BadZipFile(f"bad CRC in member '{bad}'")
                z.extractall(into)
        else:
            with tarfile.open(archive) as t:
                for member in t.getmembers():
                    _check_member(archive, member.name)
                    if not (member.isfile() or member.isdir()):
                        raise ValueError(
                            f"The preset archive '{archive}' holds '{member.name}', "
                            "which is not a plain file or folder; refusing it."
                        )
                t.extractall(into)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as error:
        raise ValueError(
            f"The preset archive '{archive}' is corrupted or not a {kind} archive "
            f"({error}). Delete it and download it again."
        ) from None


def _check_member(archive: Path, name: str) -> None:
    parts = Path(name).parts
    if Path(name).is_absolute() or ".." in parts:
        raise ValueError(
            f"The preset archive '{archive}' holds the path '{name}', outside the "
            "archive's folder; refusing it."
        )
