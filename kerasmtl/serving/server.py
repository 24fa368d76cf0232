"""`kerasmtl serve`: TF Serving's REST API in front of exported SavedModels.

An ASGI app (Starlette, run by uvicorn) with TF Serving's paths and JSON:

    GET  /v1/models/NAME[/versions/N]             model status
    GET  /v1/models/NAME[/versions/N]/metadata    signature_def metadata
    POST /v1/models/NAME[/versions/N]:predict     row or columnar predict
    (`/labels/LABEL` in place of `/versions/N`: the version a label names)
    GET  /monitoring/prometheus/metrics           request counts and latencies
    GET  /healthz                                 200 when every model is served

The routes and their limits are in `rest_api.py`; this module makes the app
and runs it. One model from a base path, or several from a TF Serving model config file
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
import time

import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from kerasmtl.serving import monitoring, rest_api
from kerasmtl.serving.batching import Batcher, BatchingParameters, batching_from_flags
from kerasmtl.serving.connection_guard import (
    ConnectionLimits,
    guarded_protocol,
    install_repeat_filter,
)
from kerasmtl.serving.errors import ServingError
from kerasmtl.serving.rest_api import DECODE_SLOTS  # noqa: F401 (documented here)
from kerasmtl.serving.served_models import ServedModels

logger = logging.getLogger("kerasmtl.serving")

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024  # 4 MiB: ~100k float values in JSON
DEFAULT_PORT = 8501  # TF Serving's REST port
# Predict requests worked on at once: more than the worker threads (40), so
# the threads stay busy, few enough that a burst is answered 503 at once
# rather than queued for minutes.
DEFAULT_MAX_REQUESTS = 64
# File descriptors kept for TensorFlow, the model's files and the logs, besides
# one per connection.
_SPARE_FILES = 256
# Connections waiting to be accepted. asyncio accepts up to this many at once
# before the connection guard sees any (uvicorn's 2048 would let a burst pass
# the cap by that much).
_BACKLOG = 128



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
        rest_api.check_name(name)
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

    limits = rest_api.RequestLimits(max_body_bytes, max_requests, batcher)
    metrics = monitoring.Metrics()
    access = logging.getLogger(monitoring.ACCESS_LOGGER) if access_log else None

    async def dispatch(request: Request) -> Response:
        path = request.url.path
        if request.method == "GET" and path == "/healthz":
            return rest_api.health(models)
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
            return await rest_api.dispatch(request, models, limits, record)
        except ServingError as error:
            response = rest_api.error_response(error.message, error.status_code)
            if error.status_code == 503:
                response.headers["Retry-After"] = "1"
            return response
        except ClientDisconnect:  # gone, or closed by the connection guard
            return Response(status_code=400)  # nobody reads it
        except Exception as error:  # the server keeps serving
            logger.exception("Internal error on %s %s", request.method, request.url.path)
            return rest_api.error_response(f"Internal error: {type(error).__name__}: {error}", 500)

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


def uvicorn_config(app, limits: ConnectionLimits, http: str = "auto",
                   **kwargs) -> uvicorn.Config:
    """The `uvicorn.Config` that `serve` runs `app` with, under `limits`.

    `http` picks the HTTP parser (`connection_guard.guarded_protocol`:
    httptools when installed, else h11); `kwargs` go to `uvicorn.Config`
    (host, port, log_level). uvicorn runs on uvloop when it is installed.
    Identical log lines from uvicorn, asyncio and this package are let
    through once a minute (`connection_guard.RepeatFilter`).
    """
    # No access log: TF Serving logs no requests, and one line each costs
    # throughput. Our own guarded protocol, never uvicorn's plain one.
    config = uvicorn.Config(
        app, access_log=False, http=guarded_protocol(limits, http), backlog=_BACKLOG,
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


