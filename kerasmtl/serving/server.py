"""`kerasmtl serve`: TF Serving's REST API in front of exported SavedModels.

An ASGI app (Starlette, run by uvicorn) with TF Serving's paths and JSON:

    GET  /v1/models/NAME[/versions/N]             model status
    GET  /v1/models/NAME[/versions/N]/metadata    signature_def metadata
    POST /v1/models/NAME[/versions/N]:predict     row or columnar predict

Clients written for TF Serving work unchanged, and the same export directory
can move to `tensorflow/serving` when one Python process is not enough (see
DESIGN.md: serving at scale is TF Serving's job). Errors are TF Serving's
`{"error": "..."}` with a 4xx status (5xx for a failure of the model itself);
the server keeps serving after any of them.

Request bodies are read up to `max_body_bytes` (413 past it); decoding the
JSON, running the signature and encoding the answer happen in a worker thread,
so the event loop keeps accepting requests and TensorFlow runs requests
concurrently. Versions are loaded and swapped by `ModelManager`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kerasmtl.serving import codec
from kerasmtl.serving.errors import ServingError
from kerasmtl.serving.model_manager import ModelManager

logger = logging.getLogger("kerasmtl.serving")

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024  # 4 MiB: ~100k float values in JSON
DEFAULT_PORT = 8501  # TF Serving's REST port

# TF Serving's URL grammar (http_rest_api_handler.cc), case-insensitive.
_MODEL_URL = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[0-9]+))?"
    r"(?:(?P<metadata>/metadata)|:(?P<verb>[A-Za-z]+))?$",
    re.IGNORECASE,
)
_BAD_NAME = re.compile(r"^\.\.?$|[\\\x00-\x20\x7f%]")


def create_app(
    base_path: str | os.PathLike,
    name: str,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    poll_seconds: float = 1.0,
) -> Starlette:
    """The ASGI app serving the model under `base_path` as `name`.

    The newest version is loaded before this returns (when one loads); a
    watcher thread, started with the app's lifespan, picks up new versions.

    Args:
        base_path: str or path-like. Directory of integer version directories,
            as written by `kerasmtl.export.export_saved_model`.
        name: str. The model name in URLs (`/v1/models/NAME`).
        max_body_bytes: int. Largest request body accepted; larger ones get
            413. Defaults to 4 MiB.
        poll_seconds: float. Seconds between scans for new versions.
            Defaults to `1.0`.

    Returns:
        A `starlette.applications.Starlette` app; its `state.manager` is the
        `ModelManager`.
    """
    _check_name(name)
    if not isinstance(max_body_bytes, int) or max_body_bytes < 1:
        raise ValueError(
            "Invalid value for argument `max_body_bytes`. Expected an int >= 1. "
            f"Received: max_body_bytes={max_body_bytes!r}"
        )
    manager = ModelManager(base_path, name, poll_seconds=poll_seconds)
    manager.poll()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        manager.start()
        try:
            yield
        finally:
            manager.stop()

    async def dispatch(request: Request) -> Response:
        try:
            return await _dispatch(request, manager, max_body_bytes)
        except ServingError as error:
            return _error(error.message, error.status_code)
        except Exception as error:  # the server keeps serving
            logger.exception("Internal error on %s %s", request.method, request.url.path)
            return _error(f"Internal error: {type(error).__name__}: {error}", 500)

    methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
    app = Starlette(
        routes=[Route("/{path:path}", dispatch, methods=methods)], lifespan=lifespan
    )
    app.state.manager = manager
    return app


def serve(
    base_path: str | os.PathLike,
    name: str,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    poll_seconds: float = 1.0,
    log_level: str = "info",
) -> None:
    """Serves the model under `base_path` until interrupted (Ctrl-C).

    Binds to the loopback interface unless `host` says otherwise (e.g.
    `"0.0.0.0"` to accept other machines; the server has no authentication).

    Args:
        base_path: str or path-like. The model's base path.
        name: str. The model name in URLs.
        host: str. Interface to bind. Defaults to `"127.0.0.1"`.
        port: int. TCP port. Defaults to `8501`, TF Serving's REST port.
        max_body_bytes: int. Largest request body. Defaults to 4 MiB.
        poll_seconds: float. Seconds between scans for new versions.
        log_level: str. uvicorn's and the version watcher's log level.
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logger.setLevel(log_level.upper())
    app = create_app(base_path, name, max_body_bytes, poll_seconds)
    # No access log: TF Serving logs no requests, and one line each costs
    # throughput.
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)


async def _dispatch(request: Request, manager: ModelManager, limit: int) -> Response:
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
    verb = (match["verb"] or "").lower()
    if name != manager.name:
        if verb or method == "POST" or match["metadata"]:
            manager_request = f"Latest({name})" if version is None else (
                f"Specific({name}, {version})"
            )
            raise ServingError(
                f"Servable not found for request: {manager_request}. This server "
                f"serves model '{manager.name}'.",
                404,
            )
        raise ServingError(f"Could not find any versions of model {name}", 404)

    if method == "POST" and verb == "predict":
        body = await _read_body(request, limit)
        payload = await run_in_threadpool(_predict, manager, version, body)
        return Response(payload, media_type="application/json")
    if method == "POST" and verb in ("classify", "regress"):
        raise ServingError(
            f"':{verb}' needs a tf.Example signature, which kerasmtl exports do "
            "not have; use ':predict'."
        )
    if method == "GET" and not verb:
        if match["metadata"]:
            loaded = manager.get(version)
            return _json(loaded.metadata(manager.name))
        return _json(manager.status(version))
    raise ServingError(f"Malformed request: {method} {path}")


def _predict(manager: ModelManager, version: int | None, body: bytes) -> bytes:
    request = codec.parse_predict_request(body)
    loaded = manager.get(version)
    signature = loaded.signature(request.signature_name)
    fmt, arrays = codec.decode_inputs(request, signature.inputs)
    outputs = signature(arrays)
    return codec.dumps(codec.encode_outputs(outputs, fmt))


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


def _json(payload: dict, status_code: int = 200) -> Response:
    return Response(codec.dumps(payload), status_code, media_type="application/json")


def _error(message: str, status_code: int) -> Response:
    return _json({"error": message}, status_code)
