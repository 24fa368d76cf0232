"""Serving exported SavedModels over TF Serving's REST API.

`kerasmtl serve BASE_PATH --name NAME` (or `serve(...)`) runs the server;
`create_app(...)` gives the ASGI app; `Client` calls a running server (this
one or `tensorflow/serving`).
"""

from kerasmtl.serving.client import Client
from kerasmtl.serving.errors import ServingError
from kerasmtl.serving.server import create_app, serve

__all__ = ["Client", "ServingError", "create_app", "serve"]
