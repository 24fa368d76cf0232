"""`ServedModels`: the models one server serves, by name.

One `ModelManager` per model: from one base path and name (`kerasmtl serve
BASE --name NAME`), or from a TF Serving model config file
(`--model-config-file`, see `model_config`). The REST app and the gRPC
server share one `ServedModels`, so they serve the same versions.

A model config file is read again when it changes (checked every
`poll_seconds`, as TF Serving's `--model_config_file_poll_wait_seconds`):
version policies and labels change in place (a label moves only after the
version it names is loaded), new models are loaded, removed ones unloaded.
A file that no longer parses is logged and the running config kept.
"""

from __future__ import annotations

import logging
import os
import threading

from kerasmtl.serving.errors import ServingError
from kerasmtl.serving.model_config import ModelConfig, read_model_config
from kerasmtl.serving.model_manager import ModelManager

logger = logging.getLogger("kerasmtl.serving")


class ServedModels:
    """The models of one server, and the watcher of its model config file.

    Args:
        configs: list of `model_config.ModelConfig`. The models.
        poll_seconds: float. Seconds between scans of the base paths (and of
            the config file). Defaults to `1.0`.
        config_file: str or None. The model config file `configs` came from;
            it is read again when it changes. Defaults to `None`.

    Examples:

    ```python
    models = ServedModels.from_config_file("models.config")
    models.get("tagger", label="stable").signature("serving_default")
    ```
    """

    def __init__(self, configs: list[ModelConfig], poll_seconds: float = 1.0,
                 config_file: str | None = None):
        self.poll_seconds = float(poll_seconds)
        self.config_file = config_file
        self._config_stamp = _stamp(config_file) if config_file else None
        self._reload_lock = threading.Lock()  # one reload at a time
        # Replaced whole, never changed in place: requests read it without a lock.
        self.managers: dict[str, ModelManager] = {}
        for config in configs:
            self.managers[config.name] = self._manager(config)
        self._started = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_base_path(cls, base_path, name: str, poll_seconds: float = 1.0
                       ) -> ServedModels:
        """One model, its newest version (`kerasmtl serve BASE --name NAME`)."""
        return cls([ModelConfig(name, os.fspath(base_path))], poll_seconds)

    @classmethod
    def from_config_file(cls, path, poll_seconds: float = 1.0) -> ServedModels:
        """The models of a TF Serving model config file (see `model_config`)."""
        path = os.fspath(path)
        return cls(read_model_config(path), poll_seconds, config_file=path)

    def _manager(self, config: ModelConfig) -> ModelManager:
        return ModelManager(config.base_path, config.name, self.poll_seconds,
                            policy=config.policy, labels=config.labels)

    # -- serving --------------------------------------------------------------

    def manager(self, name: str, version: int | None = None,
                label: str | None = None, for_status: bool = False) -> ModelManager:
        """The manager of model `name`; TF Serving's 404 when none serves it."""
        managers = self.managers
        if name in managers:
            return managers[name]
        if for_status:
            raise ServingError(f"Could not find any versions of model {name[:64]}", 404)
        request = (f"Specific({name[:64]}, {version})" if version is not None
                   else f"Label({name[:64]}, {label[:64]})" if label is not None
                   else f"Latest({name[:64]})")
        names = sorted(managers)
        serves = f"model '{names[0]}'" if len(names) == 1 else f"models {names}"
        raise ServingError(
            f"Servable not found for request: {request}. This server serves {serves}.",
            404)

    def poll(self) -> None:
        """One scan: the config file (if changed), then every base path."""
        self.reload_if_changed()
        for manager in list(self.managers.values()):
            manager.poll()

    def health(self) -> tuple[bool, dict[str, list[int]]]:
        """`(every model has a version loaded, {name: served versions})`."""
        served = {name: m.served_versions() for name, m in self.managers.items()}
        return bool(served) and all(served.values()), served

    # -- config reload --------------------------------------------------------

    def reload_if_changed(self) -> bool:
        """Reads the config file again if it changed; returns whether it was
        applied. A bad file is logged and the running config kept."""
        if self.config_file is None:
            return False
        with self._reload_lock:
            stamp = _stamp(self.config_file)
            if stamp == self._config_stamp:
                return False
            self._config_stamp = stamp
            try:
                configs = read_model_config(self.config_file)
            except ValueError as error:
                logger.error("Model config not reloaded; still serving the previous "
                             "one. %s", error)
                return False
            self.apply(configs)
            return True

    def apply(self, configs: list[ModelConfig]) -> None:
        """Serves `configs`: changes policies and labels of models kept,
        loads new models, unloads the ones no longer listed."""
        managers = dict(self.managers)
        for config in configs:
            manager = managers.get(config.name)
            if manager is not None and manager.base_path == config.base_path:
                manager.configure(config.policy, config.labels)
                continue
            if manager is not None:
                manager.stop()
            managers[config.name] = manager = self._manager(config)
            manager.poll()
            if self._started:
                manager.start()
        names = {config.name for config in configs}
        for name in [n for n in managers if n not in names]:
            managers.pop(name).stop()
            logger.info("Model '%s' is no longer in the config; unloaded", name)
        self.managers = managers
        logger.info("Model config applied: serving %s", sorted(managers))

    # -- watching -------------------------------------------------------------

    def start(self) -> None:
        """Starts each model's watcher, and the config file's."""
        self._started = True
        for manager in self.managers.values():
            manager.start()
        if self.config_file is not None and (
            self._thread is None or not self._thread.is_alive()
        ):
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._watch, name="kerasmtl-watch-config", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stops the watchers (waits for scans in progress)."""
        self._started = False
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        for manager in self.managers.values():
            manager.stop()

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.reload_if_changed()
            except Exception:  # never let the watcher die
                logger.exception("Reloading %s failed", self.config_file)


def _stamp(path: str) -> tuple | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size
