"""`Client`: a small Python client of TF Serving's REST API.

Talks to `kerasmtl serve` or to `tensorflow/serving` alike. It needs only the
standard library (`http.client`), numpy and orjson (through the codec): inputs
go out in the columnar format, outputs come back as numpy arrays with the
dtypes the model's metadata gives. Proxy settings in the environment are not
used. With `protocol="grpc"` it calls TF Serving's gRPC API instead (through
`grpc_client`, which needs `tensorflow-serving-api` and loads TensorFlow) and
returns the same values.
"""

from __future__ import annotations

import http.client
import urllib.parse
from collections.abc import Mapping

import numpy as np

from kerasmtl.serving import codec
from kerasmtl.serving.errors import ServingError


class Client:
    """Calls a served model over TF Serving's REST API.

    Args:
        url: str. The server's base URL, e.g. `"http://127.0.0.1:8501"`.
        name: str. The model name.
        version: int or None. A specific version to call. Defaults to `None`:
            the newest version the server has loaded.
        signature_name: str or None. The signature to call. Defaults to
            `None`: `"serving_default"`.
        timeout: float. Seconds to wait for each answer. Defaults to `30.0`.
        protocol: str. `"rest"`, or `"grpc"` for TF Serving's gRPC API
            (`url` is then `"host:port"`, e.g. `"127.0.0.1:8500"`). Defaults to
            `"rest"`.

    Raises `ServingError` (a `ValueError`, with `status_code`) when the server
    answers with an error, and `ConnectionError` when it cannot be reached.

    Examples:

    ```python
    client = Client("http://127.0.0.1:8501", "quickstart")
    client.status()["model_version_status"][0]["state"]    # 'AVAILABLE'
    outputs = client.predict({"features": np.zeros((2, 8), "float32")})
    outputs["species_prediction"]                            # array([1, 1], dtype=int32)
    grpc_client = Client("127.0.0.1:8500", "quickstart", protocol="grpc")
    grpc_client.predict({"features": np.zeros((2, 8), "float32")})  # the same
    ```
    """

    def __init__(
        self,
        url: str,
        name: str,
        version: int | None = None,
        signature_name: str | None = None,
        timeout: float = 30.0,
        protocol: str = "rest",
    ):
        if protocol not in ("rest", "grpc"):
            raise ValueError(
                "Invalid value for argument `protocol`. Expected 'rest' or 'grpc'. "
                f"Received: protocol={protocol!r}"
            )
        if protocol == "grpc" and (
            not isinstance(url, str) or "://" in url or ":" not in url.strip("[]")
        ):
            raise ValueError(
                "Invalid value for argument `url`. With protocol='grpc', expected "
                f"'host:port' such as '127.0.0.1:8500'. Received: url={url!r}"
            )
        if protocol == "rest" and (
            not isinstance(url, str) or not url.startswith(("http://", "https://"))
        ):
            raise ValueError(
                f"Invalid value for argument `url`. Expected an http:// or https:// "
                f"URL such as 'http://127.0.0.1:8501'. Received: url={url!r}"
            )
        if not isinstance(name, str) or not name or "/" in name or ":" in name:
            raise ValueError(
                f"Invalid value for argument `name`. Expected a model name without "
                f"'/' or ':'. Received: name={name!r}"
            )
        if version is not None and (
            isinstance(version, bool) or not isinstance(version, int) or version < 0
        ):
            raise ValueError(
                f"Invalid value for argument `version`. Expected an int >= 0 or None. "
                f"Received: version={version!r}"
            )
        self.url = url.rstrip("/")
        self.name = name
        self.version = version
        self.signature_name = signature_name
        self.timeout = float(timeout)
        self.protocol = protocol
        self._output_dtypes: dict[str, str] | None = None
        self._grpc = None
        if protocol == "grpc":
            from kerasmtl.serving.grpc_client import GrpcChannel

            self._grpc = GrpcChannel(url, name, version, signature_name, self.timeout)

    def close(self) -> None:
        """Closes the gRPC channel (REST opens a connection per request)."""
        if self._grpc is not None:
            self._grpc.close()

    @property
    def model_url(self) -> str:
        url = f"{self.url}/v1/models/{urllib.parse.quote(self.name, safe='')}"
        return url if self.version is None else f"{url}/versions/{self.version}"

    def status(self) -> dict:
        """The model's status: `{"model_version_status": [...]}`."""
        if self._grpc is not None:
            return self._grpc.status()
        return self._request(self.model_url)

    def metadata(self) -> dict:
        """The model's metadata: `{"model_spec": ..., "metadata": ...}`."""
        if self._grpc is not None:
            return self._grpc.metadata()
        return self._request(f"{self.model_url}/metadata")

    def predict(self, inputs: Mapping[str, np.ndarray] | np.ndarray) -> dict[str, np.ndarray]:
        """Runs the signature on a batch; returns its outputs by name.

        Args:
            inputs: dict mapping each input name to an array (every input
                with the same batch size), or one array for a model with a
                single input. String inputs take str or bytes elements.

        Returns:
            dict mapping each output name to a numpy array of the output's
            dtype; string outputs hold `bytes`, as TensorFlow returns them.
        """
        if self._grpc is not None:
            return self._grpc.predict(inputs)
        if isinstance(inputs, Mapping):
            encoded = {str(k): codec.to_json_value(np.asarray(v)) for k, v in inputs.items()}
        else:
            encoded = codec.to_json_value(np.asarray(inputs))
        request = {"inputs": encoded}
        if self.signature_name:
            request["signature_name"] = self.signature_name
        answer = self._request(f"{self.model_url}:predict", request)
        if "outputs" not in answer:
            raise ServingError(f"Unexpected answer without 'outputs': {str(answer)[:200]}")
        outputs = answer["outputs"]
        dtypes = self._dtypes()
        if not isinstance(outputs, dict) or codec.is_base64_object(outputs):
            # A single output comes bare, without its name.
            if len(dtypes) != 1:
                dtypes = self._dtypes(refresh=True)  # a new version may have come
            outputs = {next(iter(dtypes)): outputs}
        elif not set(outputs) <= set(dtypes):
            dtypes = self._dtypes(refresh=True)
        return {
            name: codec.from_json_value(value, dtypes.get(name, ""))
            for name, value in outputs.items()
        }

    def classify(self, examples: list[dict], signature_name: str,
                 context: dict | None = None) -> list[list[tuple[str, float]]]:
        """Calls a Classify signature (`:classify`) on `tf.Example`-like
        dicts (`{feature: value or list}`, see `kerasmtl.serving.examples`);
        returns `[(class, score), ...]` per example. REST only."""
        return [[(str(c), float(s)) for c, s in row]
                for row in self._examples("classify", examples, signature_name, context)]

    def regress(self, examples: list[dict], signature_name: str,
                context: dict | None = None) -> np.ndarray:
        """Calls a Regress signature (`:regress`); returns one float per
        example. REST only."""
        return np.asarray(self._examples("regress", examples, signature_name, context),
                          dtype="float32")

    def _examples(self, verb: str, examples, signature_name: str, context) -> list:
        if self._grpc is not None:
            raise ServingError(f"Client.{verb} speaks REST only; make the Client with "
                               "protocol='rest'.")
        request = {"signature_name": signature_name, "examples": list(examples)}
        if context:
            request["context"] = context
        answer = self._request(f"{self.model_url}:{verb}", request)
        # TF Serving's server writes "results"; its documentation, "result".
        for key in ("results", "result"):
            if key in answer:
                return answer[key]
        raise ServingError(f"Unexpected :{verb} answer without 'results': "
                           f"{str(answer)[:200]}")

    def _dtypes(self, refresh: bool = False) -> dict[str, str]:
        if self._output_dtypes is None or refresh:
            signature = self.signature_name or codec.DEFAULT_SIGNATURE
            defs = self.metadata()["metadata"]["signature_def"]["signature_def"]
            if signature not in defs:
                raise ServingError(
                    f'Serving signature name: "{signature}" not found in the model\'s '
                    f"metadata; it has {sorted(defs)}."
                )
            outputs = defs[signature].get("outputs", {})
            self._output_dtypes = {k: v.get("dtype", "") for k, v in outputs.items()}
        return self._output_dtypes

    def _request(self, url: str, payload: dict | None = None) -> dict:
        data = None if payload is None else codec.dumps(payload)
        parts = urllib.parse.urlsplit(url)
        connection_class = (http.client.HTTPSConnection if parts.scheme == "https"
                            else http.client.HTTPConnection)
        connection = connection_class(parts.netloc, timeout=self.timeout)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        try:
            status, reason, body = _exchange(connection, target, data)
        except (OSError, http.client.HTTPException) as error:  # refused, timed out
            raise ConnectionError(f"Cannot reach {url}: {error}") from None
        finally:
            connection.close()
        if status >= 400:
            try:
                message = codec.loads(body)["error"]
            except (ValueError, KeyError, TypeError):
                message = body.decode("utf-8", "replace")[:500] or reason
            raise ServingError(f"{status} from {url}: {message}", status_code=status)
        return codec.loads(body)


def _exchange(connection: http.client.HTTPConnection, target: str,
              data: bytes | None) -> tuple[int, str, bytes]:
    """Sends one request; returns the answer's status, reason and body."""
    sent_error = None
    try:
        connection.request("GET" if data is None else "POST", target, body=data,
                           headers={"Content-Type": "application/json"})
    except (BrokenPipeError, ConnectionResetError) as error:
        # The server answered before reading the whole body (413 for a body
        # over its limit) and closed the connection: its answer says why.
        sent_error = error
    try:
        response = connection.getresponse()
        return response.status, response.reason, response.read()
    except (OSError, http.client.HTTPException):
        if sent_error is not None:
            raise sent_error from None  # no answer: the send's error says more
        raise
