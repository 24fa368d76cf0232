"""`ModelManager`: loads the newest version of one model and watches for more.

TF Serving's layout and default version policy: a base path holds integer
version directories (`base/1/`, `base/2/`, ...; hidden and non-integer entries
are ignored) and the newest version that loads is served; older ones are
unloaded. A watcher thread polls the base path. A new version is loaded fully
(SavedModel, signatures, metadata) before it is swapped in, so requests never
see a half-loaded model; requests already running finish on the version they
started with. A version that fails to load is logged and reported in the
status (state `END` with the error), and the previous version keeps serving;
it is retried only when its files change. If the served version's directory
is removed, the newest remaining one is loaded, as TF Serving does; with none
left, the loaded version keeps serving.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from google.protobuf import json_format, text_format
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import saved_model_pb2

from kerasmtl.serving.codec import TensorInfo
from kerasmtl.serving.errors import ServingError

logger = logging.getLogger("kerasmtl.serving")

_VERSION_DIR = re.compile(r"^[0-9]{1,18}$")  # an int64, as TF Serving parses it


class Signature:
    """One callable signature of a loaded version.

    Args:
        name: str. The signature key, e.g. `"serving_default"`.
        function: the loaded concrete function (called with keyword tensors).
        inputs: dict of `TensorInfo` by input name.
        outputs: dict of `TensorInfo` by output name.
    """

    def __init__(self, name: str, function, inputs: dict, outputs: dict):
        self.name = name
        self.function = function
        self.inputs = inputs
        self.outputs = outputs

    def __call__(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs the signature on numpy inputs; returns numpy outputs."""
        try:
            tensors = {k: tf.convert_to_tensor(v) for k, v in arrays.items()}
            result = self.function(**tensors)
        except tf.errors.InvalidArgumentError as error:
            raise ServingError(f"Signature '{self.name}': {error.message}") from None
        except tf.errors.OpError as error:
            raise ServingError(
                f"Signature '{self.name}' failed: {error.message}", status_code=500
            ) from None
        except (TypeError, ValueError) as error:
            raise ServingError(f"Signature '{self.name}': {error}") from None
        return {k: v.numpy() for k, v in result.items()}


class LoadedVersion:
    """A fully loaded version of a model: its signatures and metadata."""

    def __init__(self, version: int, path: str, loaded, signature_defs):
        self.version = version
        self.path = path
        self._loaded = loaded  # keeps the variables alive while served
        self.signatures = {}
        for key, function in loaded.signatures.items():
            definition = signature_defs[key]
            self.signatures[key] = Signature(
                key,
                function,
                _tensor_infos(definition.inputs),
                _tensor_infos(definition.outputs),
            )
        # As TF Serving prints it: int64 sizes as strings, defaults included.
        self.signature_def_json = {
            key: json_format.MessageToDict(
                definition,
                always_print_fields_with_no_presence=True,
                preserving_proto_field_name=True,
            )
            for key, definition in signature_defs.items()
        }

    def metadata(self, model_name: str) -> dict:
        """TF Serving's GetModelMetadataResponse (signature_def) as JSON."""
        return {
            "model_spec": {
                "name": model_name,
                "signature_name": "",
                "version": str(self.version),
            },
            "metadata": {"signature_def": {"signature_def": self.signature_def_json}},
        }

    def signature(self, name: str) -> Signature:
        if name not in self.signatures:
            raise ServingError(
                f'Serving signature name: "{name}" not found in signature def. '
                f"Version {self.version} has {sorted(self.signatures)}."
            )
        return self.signatures[name]


def load_version(path: str, version: int) -> LoadedVersion:
    """Loads the SavedModel in `path` (raises if it cannot be loaded)."""
    loaded = tf.saved_model.load(path)
    return LoadedVersion(version, path, loaded, _read_signature_defs(path))


def _read_signature_defs(path: str):
    saved_model = saved_model_pb2.SavedModel()
    binary = os.path.join(path, "saved_model.pb")
    if os.path.exists(binary):
        with open(binary, "rb") as f:
            saved_model.ParseFromString(f.read())
    else:
        with open(os.path.join(path, "saved_model.pbtxt")) as f:
            text_format.Parse(f.read(), saved_model)
    # Exports hold one MetaGraph, tagged "serve", which TF Serving loads.
    for meta_graph in saved_model.meta_graphs:
        if "serve" in meta_graph.meta_info_def.tags:
            return meta_graph.signature_def
    return saved_model.meta_graphs[0].signature_def


def _tensor_infos(proto_map) -> dict[str, TensorInfo]:
    infos = {}
    for key, info in proto_map.items():
        shape = info.tensor_shape
        dims = None if shape.unknown_rank else tuple(int(d.size) for d in shape.dim)
        infos[key] = TensorInfo(key, types_pb2.DataType.Name(info.dtype), dims)
    return infos


@dataclass
class VersionStatus:
    state: str  # TF Serving's ManagerState: LOADING, AVAILABLE, END
    error_code: str = "OK"
    error_message: str = ""


class ModelManager:
    """Serves the newest loadable version under a base path, and watches it.

    Args:
        base_path: str. The model's base path (integer version directories).
        name: str. The model name clients use in URLs.
        poll_seconds: float. Seconds between scans of the base path. Defaults
            to `1.0` (TF Serving's `--file_system_poll_wait_seconds`).
        loader: callable `(path, version) -> LoadedVersion`. Defaults to
            `load_version`.
    """

    def __init__(
        self,
        base_path: str | os.PathLike,
        name: str,
        poll_seconds: float = 1.0,
        loader: Callable[[str, int], LoadedVersion] = load_version,
    ):
        base_path = os.fspath(base_path)
        if not os.path.isdir(base_path):
            raise ValueError(
                f"Model base path '{base_path}' is not a directory. Pass the "
                "directory that holds the integer version directories, e.g. "
                "exported/quickstart (with exported/quickstart/1/ inside)."
            )
        if poll_seconds <= 0:
            raise ValueError(
                f"Invalid value for argument `poll_seconds`. Expected a float > 0. "
                f"Received: poll_seconds={poll_seconds}"
            )
        self.base_path = base_path
        self.name = name
        self.poll_seconds = float(poll_seconds)
        self._loader = loader
        self._current: LoadedVersion | None = None
        self._states: dict[int, VersionStatus] = {}
        self._failed: dict[int, tuple] = {}  # version -> files when it failed
        self._lock = threading.Lock()  # guards _current and _states
        self._poll_lock = threading.Lock()  # one scan at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- serving --------------------------------------------------------------

    def get(self, version: int | None = None) -> LoadedVersion:
        """The served version (`version=None`: the newest); 404 otherwise."""
        current = self._current
        if current is not None and version in (None, current.version):
            return current
        request = f"Latest({self.name})" if version is None else (
            f"Specific({self.name}, {version})"
        )
        served = (
            f"version {current.version} is the only one loaded: like TF Serving, "
            "this server serves the newest version only"
            if current else "no version is loaded yet"
        )
        raise ServingError(
            f"Servable not found for request: {request} ({served}).", status_code=404
        )

    def status(self, version: int | None = None) -> dict:
        """TF Serving's GetModelStatusResponse as JSON, newest version first."""
        with self._lock:
            states = dict(self._states)
        if version is not None:
            if version not in states:
                raise ServingError(
                    f"Could not find version {version} of model {self.name}",
                    status_code=404,
                )
            states = {version: states[version]}
        if not states:
            raise ServingError(
                f"Could not find any versions of model {self.name}", status_code=404
            )
        return {
            "model_version_status": [
                {
                    "version": str(v),
                    "state": s.state,
                    "status": {
                        "error_code": s.error_code,
                        "error_message": s.error_message,
                    },
                }
                for v, s in sorted(states.items(), reverse=True)
            ]
        }

    # -- watching -------------------------------------------------------------

    def versions_on_disk(self) -> list[int]:
        """Integer version directories under the base path, newest first."""
        try:
            entries = os.listdir(self.base_path)
        except OSError as error:
            logger.warning("Cannot list model base path %s: %s", self.base_path, error)
            return []
        return sorted(
            (
                int(e)
                for e in entries
                if _VERSION_DIR.match(e) and os.path.isdir(os.path.join(self.base_path, e))
            ),
            reverse=True,
        )

    def poll(self) -> None:
        """One scan: loads the newest version that loads, if not served yet.

        Versions are tried newest first, down to the served one; one that
        failed before is skipped until its files change.
        """
        with self._poll_lock:
            for version in self.versions_on_disk():
                current = self._current
                if current is not None and version == current.version:
                    return
                path = os.path.join(self.base_path, str(version))
                if version in self._failed and self._failed[version] == _files(path):
                    continue
                if self._try_load(version, path):
                    return

    def _try_load(self, version: int, path: str) -> bool:
        self._set_state(version, VersionStatus("LOADING"))
        logger.info("Loading version %d of model '%s' from %s", version, self.name, path)
        files = _files(path)
        try:
            loaded = self._loader(path, version)
        except Exception as error:  # any failure: keep serving the old version
            self._failed[version] = files
            code = getattr(error, "error_code", None)
            code = _ERROR_CODES.get(code, "UNKNOWN")
            message = f"{type(error).__name__}: {error}".strip()
            self._set_state(version, VersionStatus("END", code, message))
            logger.error(
                "Version %d of model '%s' failed to load; %s. %s",
                version,
                self.name,
                f"still serving version {self._current.version}"
                if self._current else "no version is served",
                message,
            )
            return False
        self._failed.pop(version, None)
        with self._lock:
            previous, self._current = self._current, loaded
            self._states[version] = VersionStatus("AVAILABLE")
            if previous is not None:
                self._states[previous.version] = VersionStatus("END")
        logger.info(
            "Serving version %d of model '%s'%s",
            version,
            self.name,
            f" (unloaded version {previous.version})" if previous else "",
        )
        return True

    def _set_state(self, version: int, status: VersionStatus) -> None:
        with self._lock:
            self._states[version] = status

    def start(self) -> None:
        """Starts the watcher thread (a no-op when it runs)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._watch, name=f"kerasmtl-watch-{self.name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stops the watcher thread and waits for a scan in progress."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll()
            except Exception:  # never let the watcher die
                logger.exception("Scanning %s failed", self.base_path)


def _files(path: str) -> tuple:
    """What identifies a version directory's content: names, sizes, times."""
    found = []
    for root, _, names in os.walk(path):
        for name in names:
            full = os.path.join(root, name)
            try:
                stat = os.stat(full)
            except OSError:
                continue
            found.append((os.path.relpath(full, path), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(found))


# tf.errors codes -> TF Serving's error_code names in the status.
_ERROR_CODES = {
    tf.errors.NOT_FOUND: "NOT_FOUND",
    tf.errors.INVALID_ARGUMENT: "INVALID_ARGUMENT",
    tf.errors.FAILED_PRECONDITION: "FAILED_PRECONDITION",
    tf.errors.DATA_LOSS: "DATA_LOSS",
    tf.errors.PERMISSION_DENIED: "PERMISSION_DENIED",
    tf.errors.RESOURCE_EXHAUSTED: "RESOURCE_EXHAUSTED",
    tf.errors.UNIMPLEMENTED: "UNIMPLEMENTED",
    tf.errors.INTERNAL: "INTERNAL",
}
