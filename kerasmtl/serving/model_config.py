"""TF Serving's `--model_config_file`: several models, version policies, labels.

The file is TF Serving's `ModelServerConfig` text proto (parsed with the
protos of `tensorflow-serving-api`), holding a `model_config_list`:

    model_config_list {
      config {
        name: "tagger"
        base_path: "/models/tagger"          # relative: to the file's directory
        model_platform: "tensorflow"
        model_version_policy { specific { versions: 1 versions: 2 } }
        version_labels { key: "stable" value: 1 }
        version_labels { key: "canary" value: 2 }
      }
      config { name: "vision" base_path: "/models/vision" }
    }

A version policy says which versions of a model are served:
`latest { num_versions: N }` the N newest (the default, N = 1), `all {}` every
version on disk, `specific { versions: ... }` the versions listed. A version
label names one served version; requests may ask for the label instead of a
number (`/v1/models/NAME/labels/LABEL:predict`, gRPC's
`model_spec.version_label`).

`read_model_config` checks what TF Serving checks and says where a problem is
(`file:line: what is wrong`), so a typo fails at start-up, not on a request.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from google.protobuf import text_format

_LABEL = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions of a model are served (TF Serving's
    `ServableVersionPolicy`).

    Args:
        kind: str. `"latest"`, `"all"` or `"specific"`.
        num_versions: int. For `"latest"`: how many of the newest versions.
            Defaults to `1`.
        versions: tuple of int. For `"specific"`: the versions served.

    Examples:

    >>> VersionPolicy("latest", num_versions=2).candidates([5, 4, 3])
    ([5, 4, 3], 2)
    >>> VersionPolicy("specific", versions=(1, 3)).candidates([5, 3, 1])
    ([3, 1], None)
    """

    kind: str = "latest"
    num_versions: int = 1
    versions: tuple = ()

    def candidates(self, on_disk: list[int]) -> tuple[list[int], int | None]:
        """The versions to try, newest first, and how many of them to serve
        (`None`: all that load). Newer versions that fail to load are passed
        over for older ones, down to the limit."""
        if self.kind == "latest":
            return list(on_disk), self.num_versions
        if self.kind == "specific":
            return [v for v in on_disk if v in self.versions], None
        return list(on_disk), None

    def describe(self) -> str:
        if self.kind == "latest":
            return ("the newest version only" if self.num_versions == 1
                    else f"the {self.num_versions} newest versions")
        if self.kind == "specific":
            return f"versions {sorted(self.versions)} only"
        return "every version on disk"


@dataclass(frozen=True)
class ModelConfig:
    """One model of a model config file.

    Args:
        name: str. The model name in URLs.
        base_path: str. Directory of integer version directories.
        policy: `VersionPolicy`. Defaults to the newest version only.
        labels: dict of version label to version number.
    """

    name: str
    base_path: str
    policy: VersionPolicy = VersionPolicy()
    labels: dict = field(default_factory=dict)


def read_model_config(path: str | os.PathLike) -> list[ModelConfig]:
    """Reads a TF Serving model config file (`model_config_list` text proto).

    Args:
        path: str or path-like. The file.

    Returns:
        A list of `ModelConfig`, in the file's order.

    Raises:
        ValueError: naming the file, the line and what is wrong (a syntax
            error, a missing or repeated name, a base path that is not a
            directory, an unsupported platform, a bad policy or label).
    """
    # Imported here: the protos come with tensorflow-serving-api, like gRPC's.
    from tensorflow_serving.config import model_server_config_pb2

    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"Cannot read the model config file {path}: {error}") from None
    proto = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, proto)
    except text_format.ParseError as error:
        line = error.GetLine() or "?"
        message = re.sub(r"^\d+:\d+ : ", "", str(error))
        raise ValueError(
            f"{path}:{line}: {message}. Expected TF Serving's model config text "
            'format: model_config_list { config { name: "NAME" base_path: "DIR" } }'
        ) from None
    if proto.WhichOneof("config") != "model_config_list":
        raise ValueError(
            f"{path}:1: the file has no model_config_list (custom_model_config is "
            "not supported). Expected: model_config_list { config { name: ... } }")
    configs = list(proto.model_config_list.config)
    if not configs:
        raise ValueError(f"{path}:1: model_config_list has no config; list at least "
                         "one model: config { name: \"NAME\" base_path: \"DIR\" }")
    models, seen = [], {}
    for index, config in enumerate(configs):
        models.append(_check_model(path, text, index, config, seen))
    return models


def _check_model(path: str, text: str, index: int, config, seen: dict) -> ModelConfig:
    line = _line_of(text, index, config.name)
    where = f"{path}:{line}: model config #{index + 1}"
    if not config.name:
        raise ValueError(f"{where} has no name; add name: \"NAME\" (used in URLs).")
    where += f" '{config.name}'"
    if "/" in config.name or ":" in config.name or not config.name.isprintable() or (
        " " in config.name or config.name in (".", "..")
    ):
        raise ValueError(f"{where}: invalid name; use letters, digits, '-', '_', '.'.")
    if config.name in seen:
        raise ValueError(f"{where}: the name is used twice (first at line "
                         f"{seen[config.name]}); give each model its own name.")
    seen[config.name] = line
    if config.model_platform not in ("", "tensorflow"):
        raise ValueError(f"{where}: model_platform \"{config.model_platform}\" is not "
                         "served; kerasmtl serves SavedModels: \"tensorflow\".")
    if not config.base_path:
        raise ValueError(f"{where} has no base_path; add base_path: \"DIR\" (the "
                         "directory of integer version directories).")
    base_path = os.path.join(os.path.dirname(os.path.abspath(path)), config.base_path)
    if not os.path.isdir(base_path):
        raise ValueError(f"{where}: base_path '{base_path}' is not a directory. Give "
                         "the directory holding the version directories (DIR/1/, ...); "
                         "a relative one is read from the config file's directory.")
    policy = _policy(where, config.model_version_policy)
    labels = dict(config.version_labels)
    for label, version in sorted(labels.items()):
        if not _LABEL.match(label):
            raise ValueError(f"{where}: version label {label!r} is invalid; use 1-64 "
                             "letters, digits, '-' or '_', e.g. \"stable\".")
        if version < 0 or (policy.kind == "specific" and version not in policy.versions):
            raise ValueError(
                f"{where}: version label '{label}' names version {version}, which "
                f"the version policy does not serve (it serves {policy.describe()}); "
                "label a served version.")
    return ModelConfig(config.name, os.path.normpath(base_path), policy, labels)


def _policy(where: str, proto) -> VersionPolicy:
    kind = proto.WhichOneof("policy_choice")
    if kind is None:
        return VersionPolicy()
    if kind == "latest":
        count = proto.latest.num_versions or 1  # TF Serving's default
        if count < 1:
            raise ValueError(f"{where}: latest {{ num_versions: {count} }}; expected "
                             "num_versions >= 1.")
        return VersionPolicy("latest", num_versions=count)
    if kind == "specific":
        versions = tuple(proto.specific.versions)
        if not versions or min(versions) < 0:
            raise ValueError(f"{where}: specific {{ versions: {list(versions)} }}; list "
                             "at least one version >= 0, e.g. specific { versions: 1 }.")
        return VersionPolicy("specific", versions=tuple(sorted(set(versions))))
    return VersionPolicy("all")


def _line_of(text: str, index: int, name: str) -> int:
    """The line of the `index`-th model's `name:` (else of its `config {`)."""
    starts = [m.start() for m in re.finditer(r"\bconfig\s*[:{]", text)]
    start = starts[index] if index < len(starts) else 0
    if name:
        pattern = r'\bname\s*:\s*["\']' + re.escape(name) + r'["\']'
        found = re.compile(pattern).search(text, start) or re.search(pattern, text)
        if found:
            return text.count("\n", 0, found.start()) + 1
    return text.count("\n", 0, start) + 1
