"""TF Serving's REST routes for `kerasmtl serve`: the URL grammar, the
request limits, and the handlers of status, metadata, `:predict`,
`:classify` and `:regress` (`server.create_app` wires them into the app).

Request bodies are read up to `max_body_bytes` (413 past it); decoding the
JSON, running the signature and encoding the answer happen in a worker
thread, so the event loop keeps accepting requests. At most `max_requests`
predict requests are worked on at once (503 past it) and at most
`DECODE_SLOTS` decode JSON at once.
"""

from __future__ import annotations

import re
import threading

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from kerasmtl.serving import codec, examples, monitoring
from kerasmtl.serving.batching import Batcher
from kerasmtl.serving.errors import ServingError
from kerasmtl.serving.served_models import ServedModels

# TF Serving's URL grammar (http_rest_api_handler.cc), case-insensitive.
_MODEL_URL = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[0-9]+)|/labels/(?P<label>[^/:]+))?"
    r"(?:(?P<metadata>/metadata)|:(?P<verb>[A-Za-z]+))?$",
    re.IGNORECASE,
)
_BAD_NAME = re.compile(r"^\.\.?$|[\\\x00-\x20\x7f%]")

# Requests decoding JSON at once. Decoding holds the GIL, so more would not
# run faster; this bounds its memory (see `server.py`'s module docstring).
DECODE_SLOTS = 4


class RequestLimits:
    """One app's request limits, and its count of requests being worked on
    (changed only on the event loop)."""

    def __init__(self, max_body_bytes: int, max_requests: int,
                 batcher: Batcher | None = None):
        self.max_body_bytes = max_body_bytes
        self.max_requests = max_requests
        self.batcher = batcher
        self.in_progress = 0
        self.decoding = threading.BoundedSemaphore(DECODE_SLOTS)


async def dispatch(request: Request, models: ServedModels, limits: RequestLimits,
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
                    predict, manager, version, label, body, limits, record)
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
            return json_response(loaded.metadata(manager.name))
        if label is not None:
            version = manager.version_of(label)
        return json_response(manager.status(version))
    raise ServingError(f"Malformed request: {method} {path}")


def predict(manager, version: int | None, label: str | None, body: bytes,
             limits: RequestLimits, record: monitoring.RequestRecord) -> bytes:
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
                         body: bytes, limits: RequestLimits,
                         record: monitoring.RequestRecord) -> bytes:
    with limits.decoding:
        signature_name, protos = examples.parse_example_request(body, verb)
        loaded = manager.get(version, label)
        record.version = str(loaded.version)
        signature = examples.example_signature(loaded, signature_name, verb)
        record.signature = signature.name
    outputs = signature({"inputs": np.array(protos, dtype=object)})
    return codec.dumps(examples.encode_results(outputs, verb))


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


def check_name(name: str) -> None:
    if not isinstance(name, str) or not name or "/" in name or ":" in name or (
        _BAD_NAME.search(name)
    ):
        raise ValueError(
            f"Invalid model name {name!r}. Expected a non-empty name without '/', "
            "':', '%', '\\', spaces, and other than '.' or '..', e.g. 'quickstart'."
        )


_APIS = {"predict": "Predict", "classify": "Classify", "regress": "Regress"}


def health(models: ServedModels) -> Response:
    """200 when every model has a version loaded, else 503 (for load
    balancers: cheap, no model is run)."""
    ok, served = models.health()
    return json_response({"status": "ok" if ok else "unavailable", "models": served},
                 200 if ok else 503)


def json_response(payload: dict, status_code: int = 200) -> Response:
    return Response(codec.dumps(payload), status_code, media_type="application/json")


def error_response(message: str, status_code: int) -> Response:
    return json_response({"error": message}, status_code)
