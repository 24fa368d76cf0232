"""`ModelManager`: loads the versions of one model and watches for more.

TF Serving's layout and version policies: a base path holds integer version
directories (`base/1/`, `base/2/`, ...; hidden and non-integer entries are
ignored). By default the newest version that loads is served and older ones
are unloaded; a `VersionPolicy` (`model_config`) serves the N newest, all, or
specific versions instead, and version labels name served versions. A watcher thread polls the base path. A new version is loaded fully
(SavedModel, signatures, metadata) before it is swapped in, so requests never
see a half-loaded model; requests already running finish on the version they
started with. A version that fails to load is logged and reported in the
status (state `END` with the error), and the previous version keeps serving;
it is retried only when its files change. If the served version's directory
is removed, the newest remaining one is loaded, as TF Serving does; with none
left, the loaded version keeps serving.

Requests read the served versions and labels without a lock: both are
replaced whole (never changed in place) when a version loads or the config
changes.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import tensorflow as tf

from kerasmtl.serving.errors import ServingError
from kerasmtl.serving.loaded_version import (  # noqa: F401 (Signature: re-exported)
    LoadedVersion,
    Signature,
    load_version,
)
from kerasmtl.serving.model_config import VersionPolicy

logger = logging.getLogger("kerasmtl.serving")

_VERSION_DIR = re.compile(r"^[0-9]{1,18}$")  # an int64, as TF Serving parses it


@dataclass
class VersionStatus:
    state: str  # TF Serving's ManagerState: LOADING, AVAILABLE, END
    error_code: str = "OK"
    error_message: str = ""


class ModelManager:
    """Serves the versions under a base path that its policy names, and
    watches it.

    Args:
        base_path: str. The model's base path (integer version directories).
        name: str. The model name clients use in URLs.
        poll_seconds: float. Seconds between scans of the base path. Defaults
            to `1.0` (TF Serving's `--file_system_poll_wait_seconds`).
        loader: callable `(path, version) -> LoadedVersion`. Defaults to
            `load_version`.
        policy: `VersionPolicy`. Which versions to serve. Defaults to the
            newest version only.
        labels: dict of version label (str) to version (int). Defaults to
            none.
    """

    def __init__(
        self,
        base_path: str | os.PathLike,
        name: str,
        poll_seconds: float = 1.0,
        loader: Callable[[str, int], LoadedVersion] = load_version,
        policy: VersionPolicy | None = None,
        labels: Mapping[str, int] | None = None,
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
        self.policy = policy or VersionPolicy()
        self.labels: dict[str, int] = dict(labels or {})
        self._served: dict[int, LoadedVersion] = {}  # replaced whole, never changed
        self._states: dict[int, VersionStatus] = {}
        self._failed: dict[int, tuple] = {}  # version -> files when it failed
        self._lock = threading.Lock()  # guards _served and _states
        self._poll_lock = threading.Lock()  # one scan at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- serving --------------------------------------------------------------

    def get(self, version: int | None = None, label: str | None = None
            ) -> LoadedVersion:
        """A served version: `version`, the one `label` names, or (neither)
        the newest; 404 otherwise."""
        served = self._served
        if label is not None:
            version = self.version_of(label)
        if version is None and served:
            return served[max(served)]
        if version in served:
            return served[version]
        request = f"Latest({self.name})" if version is None else (
            f"Specific({self.name}, {version})"
        )
        if label is not None:
            request += f" for label '{label}'"
        if not served:
            loaded = "no version is loaded yet"
        elif len(served) == 1:
            loaded = (f"version {next(iter(served))} is the only one loaded: this "
                      f"server serves {self.policy.describe()}")
        else:
            loaded = (f"versions {sorted(served, reverse=True)} are loaded: this "
                      f"server serves {self.policy.describe()}")
        raise ServingError(
            f"Servable not found for request: {request} ({loaded}).", status_code=404
        )

    def version_of(self, label: str) -> int:
        """The version `label` names; 404 naming the known labels otherwise."""
        labels = self.labels
        if label not in labels:
            known = ", ".join(f"'{k}' (version {v})" for k, v in sorted(labels.items()))
            raise ServingError(
                f"Unknown version label '{label[:64]}' of model {self.name}; "
                + (f"its labels are {known}." if known else
                   "it has no version labels (set version_labels in a "
                   "--model-config-file)."),
                status_code=404,
            )
        return labels[label]

    def served_versions(self) -> list[int]:
        """The versions being served, newest first."""
        return sorted(self._served, reverse=True)

    def configure(self, policy: VersionPolicy, labels: Mapping[str, int]) -> None:
        """Sets a new version policy and labels (a model config reload), then
        scans: versions the policy now names are loaded, others unloaded. The
        labels change after the versions they name are loaded."""
        with self._poll_lock:
            self.policy = policy
        self.poll()
        self.labels = dict(labels)

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
        """One scan: loads the versions the policy names, unloads the others.

        Versions are tried newest first (for `latest`, until N are served);
        one that failed before is skipped until its files change. When none
        is left to serve, the loaded versions keep serving.
        """
        with self._poll_lock:
            candidates, limit = self.policy.candidates(self.versions_on_disk())
            keep = []
            for version in candidates:
                if limit is not None and len(keep) == limit:
                    break
                if version in self._served:
                    keep.append(version)
                    continue
                path = os.path.join(self.base_path, str(version))
                if version in self._failed and self._failed[version] == _files(path):
                    continue
                if self._try_load(version, path):
                    keep.append(version)
            if keep:
                self._unload([v for v in self._served if v not in keep])

    def _unload(self, versions: list[int]) -> None:
        if not versions:
            return
        with self._lock:
            self._served = {v: lv for v, lv in self._served.items() if v not in versions}
            for version in versions:
                self._states[version] = VersionStatus("END")
        logger.info("Unloaded version(s) %s of model '%s'", sorted(versions), self.name)

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
            served = self.served_versions()
            logger.error(
                "Version %d of model '%s' failed to load; %s. %s",
                version,
                self.name,
                f"still serving version {served[0]}" if len(served) == 1
                else f"still serving versions {served}" if served
                else "no version is served",
                message,
            )
            return False
        self._failed.pop(version, None)
        with self._lock:
            self._served = {**self._served, version: loaded}
            self._states[version] = VersionStatus("AVAILABLE")
        logger.info("Serving version %d of model '%s'", version, self.name)
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
