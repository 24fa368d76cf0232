"""`kerasmtl serve`: TF Serving's REST API in front of exported SavedModels.

An ASGI app (Starlette, run by uvicorn) with TF Serving's paths and JSON:

    GET  /v1/models/NAME[/versions/N]             model status
    GET  /v1/models/NAME[/versions/N]/metadata    signature_def metadata
    POST /v1/models/NAME[/versions/N]:predict     row or columnar predict
    (`/labels/LABEL` in place of `/versions/N`: the version a label names)
    GET  /monitoring/prometheus/metrics           request counts and latencies
    GET  /healthz                                 200 when every model is served

One model from a base path, or several from a TF Serving model config file
(`served_models`, `model_config`: version policies and labels). Requests are
counted (`monitoring`); with `access_log=True` each one is also logged as a
JSON line on the `kerasmtl.serving.access` logger.

Clients written for TF Serving work unchanged, and the same export directory
can move to `tensorflow/serving` when one Python process is not enough (see
DESIGN.md: serving at scale is TF Serving's job). Errors are TF Serving's
`{"error": "..."}` with a 4xx status (5xx for a failure of the model itself);
the server keeps serving after any of them.

Request bodies are read up to `max_body_bytes` (413 past it); decoding the
JSON, running the signature and encoding the answer happen in a worker thread,
so the event loop keeps accepting requests and TensorFlow runs requests
concurrently. Versions are loaded and swapped by `ModelManager`.

What one client can cost is bounded: at most `max_requests` predict requests
are worked on at once (503 past it, with `Retry-After`); at most
`DECODE_SLOTS` of them decode JSON at once, and decoding costs at most
`codec.MEMORY_PER_BODY_BYTE` (64) times the body's size, so decoding needs at
most 4 x 64 x 4 MiB = 1 GiB with the defaults. Connections are capped and
slow clients timed out (`connection_guard`), and `serve` drops repeats of
identical log lines.

With `batching` (`serve --enable-batching`), concurrent predict requests to
the same signature are merged into one call after each is decoded and checked
(`batching`); REST and gRPC share the batcher.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import threading
import time

import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from kerasmtl.serving import codec, examples, monitoring
from kerasmtl.serving.batching import Batcher, BatchingParameters, batching_from_flags
from kerasmtl.serving.connection_guard import (
    ConnectionLimits,
    guarded_protocol,
    install_repeat_filter,
)
from kerasmtl.serving.errors import ServingError
from kerasmtl.serving.served_models import ServedModels

logger = logging.getLogger("kerasmtl.serving")

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024  # 4 MiB: ~100k float values in JSON
DEFAULT_PORT = 8501  # TF Serving's REST port
# Predict requests worked on at once: more than the worker threads (40), so
# the threads stay busy, few enough that a burst is answered 503 at once
# rather than queued for minutes.
DEFAULT_MAX_REQUESTS = 64
# Requests decoding JSON at once. Decoding holds the GIL, so more would not
# run faster; this bounds its memory (see the module docstring).
DECODE_SLOTS = 4
# File descriptors kept for TensorFlow, the model's files and the logs, besides
# one per connection.
_SPARE_FILES = 256
# Connections waiting to be accepted. asyncio accepts up to this many at once
# before the connection guard sees any (uvicorn's 2048 would let a burst pass
# the cap by that much).
_BACKLOG = 128

# TF Serving's URL grammar (http_rest_api_handler.cc), case-insensitive.
_MODEL_URL = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[0-9]+)|/labels/(?P<label>[^/:]+))?"
    r"(?:(?P<metadata>/metadata)|:(?P<verb>[A-Za-z]+))?$",
    re.IGNORECASE,
)
_BAD_NAME = re.compile(r"^\.\.?$|[\\\x00-\x20\x7f%]")


def create_app(
    base_path: str | os.PathLike | None = None,
    name: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    poll_seconds: float = 1.0,
    max_requests: int = DEFAULT_MAX_REQUESTS,
    *,
    model_config_file: str | os.PathLike | None = None,
    access_log: bool = False,
    batching: BatchingParameters | None = None,
) -> Starlette:
    """The ASGI app serving the model under `base_path` as `name`, or the
    models of `model_config_file`.

    The served versions are loaded before this returns (when they load);
    watcher threads, started with the app's lifespan, pick up new versions
    (and changes to the model config file).

    Args:
        base_path: str or path-like. Directory of integer version directories,
            as written by `kerasmtl.export.export_saved_model`. Not with
            `model_config_file`.
        name: str. The model name in URLs (`/v1/models/NAME`).
        max_body_bytes: int. Largest request body accepted; larger ones get
            413. Defaults to 4 MiB.
        poll_seconds: float. Seconds between scans for new versions.
            Defaults to `1.0`.
        max_requests: int. Most predict requests worked on at once (their
            body read); more get 503 with `Retry-After: 1`. Defaults to `64`.
        model_config_file: str or path-like. A TF Serving model config file
            (`model_config_list` text proto): several models, version
            policies and labels. Defaults to `None`.
        access_log: bool. Log one JSON line per request on the
            `kerasmtl.serving.access` logger (at INFO). Defaults to `False`.
        batching: `batching.BatchingParameters` or None. Merge concurrent
            predict requests (`batching.Batcher`). Defaults to `None`: each
            request runs alone.

    Returns:
        A `starlette.applications.Starlette` app; its `state.models` is the
        `ServedModels`, `state.manager` the first model's `ModelManager`,
        `state.metrics` the request `monitoring.Metrics`, and `state.batcher`
        the `Batcher` (None without `batching`).
    """
    if model_config_file is not None:
        if base_path is not None or name is not None:
            raise ValueError(
                "Pass either `base_path` and `name` or `model_config_file`, not "
                f"both. Received: base_path={base_path!r}, name={name!r}, "
                f"model_config_file={model_config_file!r}")
    elif base_path is None or name is None:
        raise ValueError(
            "Pass the model's `base_path` and `name`, or a `model_config_file`. "
            f"Received: base_path={base_path!r}, name={name!r}")
    else:
        _check_name(name)
    if not isinstance(max_body_bytes, int) or max_body_bytes < 1:
        raise ValueError(
            "Invalid value for argument `max_body_bytes`. Expected an int >= 1. "
            f"Received: max_body_bytes={max_body_bytes!r}"
        )
    if isinstance(max_requests, bool) or not isinstance(max_requests, int) or (
        max_requests < 1
    ):
        raise ValueError(
            "Invalid value for argument `max_requests`. Expected an int >= 1. "
            f"Received: max_requests={max_requests!r}"
        )
    if model_config_file is not None:
        models = ServedModels.from_config_file(model_config_file, poll_seconds)
    else:
        models = ServedModels.from_base_path(base_path, name, poll_seconds)
    models.poll()
    batcher = None if batching is None else Batcher(batching)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        models.start()
        if batcher is not None:
            batcher.start()
        try:
            yield
        finally:
            models.stop()
            if batcher is not None:
                batcher.stop()

    limits = _RequestLimits(max_body_bytes, max_requests, batcher)
    metrics = monitoring.Metrics()
    access = logging.getLogger(monitoring.ACCESS_LOGGER) if access_log else None

    async def dispatch(request: Request) -> Response:
        path = request.url.path
        if request.method == "GET" and path == "/healthz":
            return _health(models)
        if request.method == "GET" and path == "/monitoring/prometheus/metrics":
            text = metrics.exposition()
            if batcher is not None:
                text += batcher.metrics.exposition()
            return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")
        record = monitoring.RequestRecord("REST")
        response = await answer(request, record)
        if path.lower().startswith("/v1/"):
            seconds = metrics.record(
                record, monitoring.STATUS_NAMES.get(response.status_code, "UNKNOWN"))
        else:
            seconds = time.perf_counter() - record.start
        if access is not None:
            declared = request.headers.get("content-length", "0")
            access.info(monitoring.access_line(
                request.method, path, record, response.status_code, seconds,
                int(declared) if declared.isdigit() else 0, len(response.body)))
        return response

    async def answer(request: Request, record: monitoring.RequestRecord) -> Response:
        try:
            return await _dispatch(request, models, limits, record)
        except ServingError as error:
            response = _error(error.message, error.status_code)
            if error.status_code == 503:
                response.headers["Retry-After"] = "1"
            return response
        except ClientDisconnect:  # gone, or closed by the connection guard
            return Response(status_code=400)  # nobody reads it
        except Exception as error:  # the server keeps serving
            logger.exception("Internal error on %s %s", request.method, request.url.path)
            return _error(f"Internal error: {type(error).__name__}: {error}", 500)

    methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
    app = Starlette(
        routes=[Route("/{path:path}", dispatch, methods=methods)], lifespan=lifespan
    )
    app.state.models = models
    app.state.manager = next(iter(models.managers.values()))
    app.state.metrics = metrics
    app.state.limits = limits
    app.state.batcher = batcher
    return app


class _RequestLimits:
    """One app's request limits, and its count of requests being worked on
    (changed only on the event loop)."""

    def __init__(self, max_body_bytes: int, max_requests: int,
                 batcher: Batcher | None = None):
        self.max_body_bytes = max_body_bytes
        self.max_requests = max_requests
        self.batcher = batcher
        self.in_progress = 0
        self.decoding = threading.BoundedSemaphore(DECODE_SLOTS)


def serve(
    base_path: str | os.PathLike,
    name: str,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    poll_seconds: float = 1.0,
    log_level: str = "info",
    max_requests: int = DEFAULT_MAX_REQUESTS,
    max_connections: int = ConnectionLimits.max_connections,
    header_timeout: float = ConnectionLimits.header_timeout,
    body_timeout: float = ConnectionLimits.body_timeout,
    keep_alive_timeout: float = ConnectionLimits.keep_alive_timeout,
    grpc_port: int | None = None,
    model_config_file: str | os.PathLike | None = None,
    access_log: bool = False,
    enable_batching: bool = False,
    batching_parameters_file: str | os.PathLike | None = None,
) -> None:
    """Serves the model under `base_path` (or the models of
    `model_config_file`) until interrupted (Ctrl-C).

    Binds to the loopback interface unless `host` says otherwise (e.g.
    `"0.0.0.0"` to accept other machines; the server has no authentication).

    Args:
        base_path: str or path-like. The model's base path; `None` with
            `model_config_file`.
        name: str. The model name in URLs; `None` with `model_config_file`.
        host: str. Interface to bind. Defaults to `"127.0.0.1"`.
        port: int. TCP port. Defaults to `8501`, TF Serving's REST port.
        max_body_bytes: int. Largest request body. Defaults to 4 MiB.
        poll_seconds: float. Seconds between scans for new versions.
        log_level: str. uvicorn's and the version watcher's log level.
        max_requests: int. Most predict requests worked on at once; more get
            503. Defaults to `64`.
        max_connections: int. Most connections open at once (see
            `connection_guard`); lowered to fit the open-file limit if that
            cannot be raised. Defaults to `1000`.
        header_timeout: float. Seconds a client has to send a request's
            headers; then 408. Defaults to `10.0`.
        body_timeout: float. Seconds a client has to send a request's body
            after its headers; then 408. Defaults to `60.0`.
        keep_alive_timeout: float. Seconds an idle connection stays open.
            Defaults to `5.0`.
        grpc_port: int or None. Also serve TF Serving's gRPC API
            (`kerasmtl.serving.grpc_server`) on this port, from the same model
            manager; `max_body_bytes` is then also the gRPC message limit and
            `max_requests` also caps gRPC calls at once. Defaults to `None`:
            REST only.
        model_config_file: str or path-like. A TF Serving model config file
            (several models, version policies and labels; read again when
            it changes) instead of `base_path` and `name`. Defaults to `None`.
        access_log: bool. Write one JSON line per REST request (method, path,
            model, version, status, latency, bytes) to stderr, on the
            `kerasmtl.serving.access` logger. Defaults to `False`: TF Serving
            logs no requests, and a line each costs throughput.
        enable_batching: bool. Merge concurrent predict requests (REST and
            gRPC) into one call of the signature (`batching`). Defaults to
            `False`, as TF Serving.
        batching_parameters_file: str or path-like. TF Serving's batching
            parameters text file (`max_batch_size { value: 32 }` ...); only
            with `enable_batching`. Defaults to TF Serving's parameters.
    """
    limits = ConnectionLimits(max_connections, header_timeout, body_timeout,
                              keep_alive_timeout)
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logger.setLevel(log_level.upper())
    if access_log:
        _log_access_lines()
    limits = _fit_open_files(limits)
    batching = batching_from_flags(enable_batching, batching_parameters_file)
    app = create_app(base_path, name, max_body_bytes, poll_seconds, max_requests,
                     model_config_file=model_config_file, access_log=access_log,
                     batching=batching)
    server = uvicorn.Server(uvicorn_config(app, limits, host=host, port=port,
                                           log_level=log_level))
    if grpc_port is None:
        server.run()
        return
    # grpcio is imported only when gRPC is asked for.
    from kerasmtl.serving.grpc_server import create_grpc_server

    grpc_server, bound = create_grpc_server(
        app.state.models, host, grpc_port, max_body_bytes, max_requests,
        metrics=app.state.metrics, batcher=app.state.batcher)
    grpc_server.start()
    logger.info("gRPC server (TF Serving's PredictionService) on %s:%d", host, bound)
    try:
        server.run()  # uvicorn's lifespan starts and stops the version watcher
    finally:
        grpc_server.stop(grace=5).wait(10)


def uvicorn_config(app, limits: ConnectionLimits, **kwargs) -> uvicorn.Config:
    """The `uvicorn.Config` that `serve` runs `app` with, under `limits`.

    `kwargs` go to `uvicorn.Config` (host, port, log_level). Identical log
    lines from uvicorn, asyncio and this package are let through once a
    minute (`connection_guard.RepeatFilter`).
    """
    # No access log: TF Serving logs no requests, and one line each costs
    # throughput. Our own h11 protocol, whatever else is installed.
    config = uvicorn.Config(
        app, access_log=False, http=guarded_protocol(limits), backlog=_BACKLOG,
        timeout_keep_alive=limits.keep_alive_timeout, **kwargs,
    )
    # After uvicorn.Config, which configures its loggers.
    install_repeat_filter("uvicorn.error", "asyncio", "kerasmtl.serving")
    return config


def _log_access_lines() -> None:
    """Access lines go to stderr as bare JSON, one per line, unless the
    application configured the access logger itself."""
    access = logging.getLogger(monitoring.ACCESS_LOGGER)
    access.setLevel(logging.INFO)
    if not access.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        access.addHandler(handler)
        access.propagate = False


def _fit_open_files(limits: ConnectionLimits) -> ConnectionLimits:
    """Raises the open-file limit to fit `limits.max_connections`, or lowers
    the cap to fit it: at the limit, every accept fails and asyncio logs it."""
    try:
        import resource
    except ImportError:  # not a Unix
        return limits
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = limits.max_connections + _BACKLOG + _SPARE_FILES
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft < needed:
            fitted = max(1, soft - _BACKLOG - _SPARE_FILES)
            logger.warning(
                "The open-file limit is %d, too low for --max-connections %d; "
                "serving at most %d connections. Raise it (ulimit -n) to serve more.",
                soft, limits.max_connections, fitted)
            limits = dataclasses.replace(limits, max_connections=fitted)
    return limits


async def _dispatch(request: Request, models: ServedModels, limits: _RequestLimits,
                    record: monitoring.RequestRecord) -> Response:
    path, method = request.url.path, request.method
    if not path.lower().startswith("/v1/"):
        raise ServingError(f"Not found: {path}. The API is under /v1/models/.", 404)
    match = _MODEL_URL.match(path)
    if match is None:
        raise ServingError(f"Malformed request: {method} {path}")
    name = match["name"]
    if _BAD_NAME.search(name):
        raise ServingError(f"Invalid model name '{name}' in {path}.")
    version = int(match["version"]) if match["version"] else None
    label = match["label"]
    if label is not None and _BAD_NAME.search(label):
        raise ServingError(f"Invalid version label '{label[:64]}' in {path}.")
    verb = (match["verb"] or "").lower()
    record.api = _APIS.get(verb, "") if verb else (
        "GetModelMetadata" if match["metadata"] else "GetModelStatus")
    is_status = not (verb or method == "POST" or match["metadata"])
    manager = models.manager(name, version, label, for_status=is_status)
    record.model = name

    if method == "POST" and verb in ("predict", "classify", "regress"):
        body = await _read_body(request, limits.max_body_bytes)
        if limits.in_progress >= limits.max_requests:
            raise ServingError(
                f"Server busy: {limits.max_requests} requests are in progress (the "
                "--max-requests limit). Retry later.",
                503,
            )
        limits.in_progress += 1
        try:
            if verb == "predict":
                payload = await run_in_threadpool(
                    _predict, manager, version, label, body, limits, record)
            else:
                payload = await run_in_threadpool(_classify_or_regress, verb, manager,
                                                  version, label, body, limits, record)
        finally:
            limits.in_progress -= 1
        return Response(payload, media_type="application/json")
    if method == "GET" and not verb:
        if match["metadata"]:
            loaded = manager.get(version, label)
            record.version = str(loaded.version)
            return _json(loaded.metadata(manager.name))
        if label is not None:
            version = manager.version_of(label)
        return _json(manager.status(version))
    raise ServingError(f"Malformed request: {method} {path}")


def _predict(manager, version: int | None, label: str | None, body: bytes,
             limits: _RequestLimits, record: monitoring.RequestRecord) -> bytes:
    with limits.decoding:
        request = codec.parse_predict_request(body)
        loaded = manager.get(version, label)
        record.version = str(loaded.version)
        signature = loaded.signature(request.signature_name)
        record.signature = signature.name
        fmt, arrays = codec.decode_inputs(request, signature.inputs)
        del request  # the parsed JSON, 10-40x the body: not kept while the model runs
    if limits.batcher is None:
        outputs = signature(arrays)
    else:
        outputs = limits.batcher.run(signature, arrays, manager.name)
    return codec.dumps(codec.encode_outputs(outputs, fmt))


def _classify_or_regress(verb: str, manager, version: int | None, label: str | None,
                         body: bytes, limits: _RequestLimits,
                         record: monitoring.RequestRecord) -> bytes:
    with limits.decoding:
        signature_name, protos = examples.parse_example_request(body, verb)
        loaded = manager.get(version, label)
        record.version = str(loaded.version)
        signature = example_signature(loaded, signature_name, verb)
        record.signature = signature.name
    outputs = signature({"inputs": np.array(protos, dtype=object)})
    return codec.dumps(examples.encode_results(outputs, verb))


def example_signature(loaded, name: str, verb: str):
    """Signature `name` of `loaded`, checked to be a Classify or Regress one
    (`verb`); the error names the fitting signatures (REST and gRPC)."""
    signature = loaded.signature(name)
    method = examples.METHODS[verb]
    if signature.method_name != method:
        fitting = sorted(k for k, s in loaded.signatures.items() if s.method_name == method)
        raise ServingError(
            f"Expected {verb} signature method_name to be {method}. Was: "
            f"{signature.method_name} (signature '{signature.name}'). "
            + (f"This version's {verb} signatures: {fitting}." if fitting else
               "This version has none: export with example_signatures=True "
               "(kerasmtl export --example-signatures)."))
    return signature


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ServingError(f"Invalid Content-Length header: {declared!r}")
        if int(declared) > limit:
            raise _too_large(int(declared), limit)
    chunks, size = [], 0
    async for chunk in request.stream():  # also bounds chunked bodies
        size += len(chunk)
        if size > limit:
            raise _too_large(size, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int, limit: int) -> ServingError:
    return ServingError(
        f"Request body of {size} bytes or more exceeds the limit of {limit} bytes. "
        "Send smaller batches, or start the server with a larger --max-body-bytes.",
        413,
    )


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name or "/" in name or ":" in name or (
        _BAD_NAME.search(name)
    ):
        raise ValueError(
            f"Invalid model name {name!r}. Expected a non-empty name without '/', "
            "':', '%', '\\', spaces, and other than '.' or '..', e.g. 'quickstart'."
        )


_APIS = {"predict": "Predict", "classify": "Classify", "regress": "Regress"}


def _health(models: ServedModels) -> Response:
    """200 when every model has a version loaded, else 503 (for load
    balancers: cheap, no model is run)."""
    ok, served = models.health()
    return _json({"status": "ok" if ok else "unavailable", "models": served},
                 200 if ok else 503)


def _json(payload: dict, status_code: int = 200) -> Response:
    return Response(codec.dumps(payload), status_code, media_type="application/json")


def _error(message: str, status_code: int) -> Response:
    return _json({"error": message}, status_code)
