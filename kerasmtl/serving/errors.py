"""`ServingError`: a request that cannot be served, with its HTTP status.

The server answers one as TF Serving does, `{"error": "<message>"}` with the
status code; the client raises one when the server answers with an error.
"""

from __future__ import annotations


class ServingError(ValueError):
    """A request the server rejects (4xx) or fails to serve (5xx).

    Args:
        message: str. What went wrong, naming the input, shapes or version
            involved, and what to do.
        status_code: int. The HTTP status. Defaults to `400` (bad request).

    Examples:

    >>> error = ServingError("Missing 'inputs' or 'instances' key")
    >>> error.status_code, str(error)
    (400, "Missing 'inputs' or 'instances' key")
    """

    def __init__(self, message: str, status_code: int = 400):
        super().__init__(message)
        self.message = message
        self.status_code = int(status_code)
