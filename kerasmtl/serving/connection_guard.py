"""Limits on connections, and on repeated log lines, for `kerasmtl serve`.

uvicorn's HTTP/1.1 protocols (h11, httptools) keep a connection open for as
long as a client takes to send its request. Without limits, clients that send their
headers or body a few bytes at a time (slowloris), or nothing at all, hold
every file descriptor the process may open; then every other request times
out, and asyncio logs a traceback for each refused accept. `guarded_protocol`
returns that protocol with:

- a cap on open connections (`max_connections`). Past it, a new connection
  closes the connection that has waited longest for its request's headers
  (a slow or idle client), or else the one that has waited longest for its
  request's body; that one is answered 503. So slow clients cannot lock
  others out. When every connection has sent its request and waits for the
  answer, the new one is answered 503 and closed.
- a deadline for a request's line and headers (`header_timeout`, counted from
  the connection's opening or its previous answer) and one for its whole body
  (`body_timeout`, counted from the end of the headers). A client that misses
  one is answered 408 and its connection closed.
- uvicorn's idle keep-alive timeout (`keep_alive_timeout`) and a bound on
  the size of a request's line and headers (16 KiB: h11's own, answered
  400; for httptools, which has none, ours, answered 431).

`guarded_protocol` picks httptools when it is installed (about 0.3 ms less
CPU per request than h11, see benchmarks/README.md), else h11.

`RepeatFilter` lets the first record of each message through per period and
counts the others, so a flood of identical warnings costs a line a minute.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

try:  # the faster C parser, when installed (a dependency of kerasmtl)
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover
    HttpToolsProtocol = None

from kerasmtl.serving import codec


@dataclass(frozen=True)
class ConnectionLimits:
    """How many connections the server keeps open, and for how long.

    Args:
        max_connections: int. Most connections open at once. Defaults to
            `1000`; `serve` lowers it to fit the process's open-file limit.
        header_timeout: float. Seconds a client has to send a request's line
            and headers. Defaults to `10.0`.
        body_timeout: float. Seconds a client has to send a request's body
            after its headers. Defaults to `60.0`: a 4 MiB body at 70 KB/s.
        keep_alive_timeout: float. Seconds an idle connection stays open
            between requests. Defaults to `5.0` (uvicorn's default).
    """

    max_connections: int = 1000
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    keep_alive_timeout: float = 5.0

    def __post_init__(self):
        if isinstance(self.max_connections, bool) or not isinstance(
            self.max_connections, int
        ) or self.max_connections < 1:
            raise ValueError(
                "Invalid value for argument `max_connections`. Expected an int >= 1. "
                f"Received: max_connections={self.max_connections!r}"
            )
        for name in ("header_timeout", "body_timeout", "keep_alive_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                value > 0
            ):
                raise ValueError(
                    f"Invalid value for argument `{name}`. Expected a number of seconds "
                    f"> 0. Received: {name}={value!r}"
                )


class _Guard:
    """The state shared by one server's connections (all on its event loop)."""

    def __init__(self, limits: ConnectionLimits):
        self.limits = limits
        self.connections: set[_GuardedProtocol] = set()
        # Deadlines, oldest first: every entry of a table has the same
        # timeout, so insertion order is deadline order.
        self.headers: collections.OrderedDict = collections.OrderedDict()
        self.bodies: collections.OrderedDict = collections.OrderedDict()
        self.sweeping = None
        # Timed-out clients are checked this often: a deadline is kept to
        # within a quarter of its length, or 1 s.
        self.period = min(1.0, limits.header_timeout / 4, limits.body_timeout / 4)

    def sweep(self, loop) -> None:
        now = loop.time()
        for table, what in ((self.headers, "its request line and headers"),
                            (self.bodies, "its request body")):
            while table:
                protocol, deadline = next(iter(table.items()))
                if deadline > now:
                    break
                timeout = (self.limits.header_timeout if table is self.headers
                           else self.limits.body_timeout)
                protocol.reject(
                    408,
                    f"The client did not send {what} within {timeout:g} s; the "
                    "connection is closed.",
                )
        self.sweeping = loop.call_later(self.period, self.sweep, loop) if (
            self.connections) else None


class _GuardedProtocol:
    """The guard's part of a uvicorn HTTP protocol (see the module doc); a
    subclass says which phase of a request the client is in (`phase`)."""

    guard: _Guard  # set on the subclass that `guarded_protocol` makes

    def phase(self) -> str | None:
        """`"headers"` while the client owes a request's line and headers
        (or sends nothing), `"body"` while it owes the body, else None."""
        raise NotImplementedError

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        guard = self.guard
        guard.connections.add(self)
        self._track()
        if len(guard.connections) > guard.limits.max_connections:
            waiting = self._oldest_waiting()
            if waiting is not None:
                waiting.reject(503, "The server has too many connections open; this "
                               "one waited longest for its request. Retry later.")
            else:
                self.reject(503, f"The server has {guard.limits.max_connections} "
                            "connections open (--max-connections), each in the middle "
                            "of a request. Retry later.")
        if guard.sweeping is None:
            guard.sweeping = self.loop.call_later(guard.period, guard.sweep, self.loop)

    def connection_lost(self, exc) -> None:
        self._forget()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._track()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._track()

    def reject(self, status: int, message: str) -> None:
        """Answers `status` with `message` and closes the connection."""
        self._forget()
        if self.transport.is_closing():
            return
        body = codec.dumps({"error": message})
        reason = {408: b"Request Timeout", 431: b"Request Header Fields Too Large",
                  503: b"Service Unavailable"}[status]
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s"
            % (status, reason, len(body), body)
        )
        # A request in progress sees a disconnect (Starlette's ClientDisconnect).
        self.transport.close()

    def _oldest_waiting(self):
        for table in (self.guard.headers, self.guard.bodies):
            for protocol in table:  # oldest first; this one is the newest
                if protocol is not self:
                    return protocol
        return None

    def _track(self) -> None:
        guard = self.guard
        if self not in guard.connections or self.transport.is_closing():
            return
        phase = self.phase()
        if phase == "headers":
            guard.bodies.pop(self, None)
            if self not in guard.headers:
                guard.headers[self] = self.loop.time() + guard.limits.header_timeout
        elif phase == "body":
            guard.headers.pop(self, None)
            if self not in guard.bodies:
                guard.bodies[self] = self.loop.time() + guard.limits.body_timeout
        else:
            guard.headers.pop(self, None)
            guard.bodies.pop(self, None)

    def _forget(self) -> None:
        self.guard.connections.discard(self)
        self.guard.headers.pop(self, None)
        self.guard.bodies.pop(self, None)


class GuardedH11Protocol(_GuardedProtocol, H11Protocol):
    """uvicorn's h11 protocol with `ConnectionLimits` (see the module doc).
    h11 bounds a request's line and headers (uvicorn's
    `h11_max_incomplete_event_size`, 16 KiB: a 400 past it)."""

    def phase(self) -> str | None:
        # h11's view of the client: IDLE until a request's headers are in,
        # SEND_BODY until its body is, then waiting for the answer.
        state = self.conn.their_state
        return {h11.IDLE: "headers", h11.SEND_BODY: "body"}.get(state)


# The most a request's line and headers may take, as h11's bound in uvicorn.
MAX_HEADER_BYTES = 16 * 1024

if HttpToolsProtocol is not None:

    class GuardedHttpToolsProtocol(_GuardedProtocol, HttpToolsProtocol):
        """uvicorn's httptools (llhttp) protocol with `ConnectionLimits`.

        llhttp sets no bound on a request's line and headers, so this one
        does: past `MAX_HEADER_BYTES` (counted from the parser's callbacks,
        and from the bytes received while the headers are incomplete) the
        client is answered 431 and the connection closed. The phase follows
        the parser's callbacks; a pipelined request that is fully received
        waits for its answer without a deadline, as with h11.
        """

        def connection_made(self, transport) -> None:
            self._receiving = None  # "headers" or "body" while a request comes in
            self._unanswered = 0  # requests received and not yet answered
            self._header_bytes = 0  # this request's line and headers, parsed
            self._unparsed_bytes = 0  # received while its headers are incomplete
            self._oversized = False
            super().connection_made(transport)

        def phase(self) -> str | None:
            if self._receiving is not None:
                return self._receiving
            return None if self._unanswered else "headers"

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.phase() == "headers" and not self.transport.is_closing():
                self._unparsed_bytes += len(data)
                if self._unparsed_bytes > MAX_HEADER_BYTES:
                    self._reject_oversized()

        def send_400_response(self, msg: str) -> None:
            # A parser error; ours when a callback found the headers too large.
            if self._oversized:
                self._reject_oversized()
            else:
                super().send_400_response(msg)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._receiving, self._header_bytes = "headers", 0

        def on_url(self, url: bytes) -> None:
            self._count_header_bytes(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count_header_bytes(len(name) + len(value) + 4)
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._receiving, self._unparsed_bytes = "body", 0
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._receiving = None
            self._unanswered += 1
            super().on_message_complete()

        def on_response_complete(self) -> None:
            self._unanswered = max(self._unanswered - 1, 0)
            super().on_response_complete()

        def _count_header_bytes(self, size: int) -> None:
            self._header_bytes += size
            if self._header_bytes > MAX_HEADER_BYTES:
                self._oversized = True
                # The parser stops with an error; uvicorn then calls
                # send_400_response, which answers 431 instead.
                raise ValueError("request headers too large")

        def _reject_oversized(self) -> None:
            self.reject(431, f"The request's line and headers exceed {MAX_HEADER_BYTES} "
                        "bytes; the connection is closed.")


def guarded_protocol(limits: ConnectionLimits, http: str = "auto") -> type:
    """A protocol class for `uvicorn.Config(http=...)` that applies `limits`.

    Args:
        limits: `ConnectionLimits`.
        http: `"h11"`, `"httptools"` (faster: a C parser), or `"auto"`
            (httptools when installed, as uvicorn's own choice). Defaults to
            `"auto"`.

    Each call makes a class with its own count of connections, for one server.
    """
    if http not in ("auto", "h11", "httptools"):
        raise ValueError(
            "Invalid value for argument `http`. Expected 'auto', 'h11' or "
            f"'httptools'. Received: http={http!r}"
        )
    if http == "httptools" and HttpToolsProtocol is None:
        raise ValueError("http='httptools' needs the httptools package: pip install "
                         "httptools (or use http='h11').")
    use_httptools = HttpToolsProtocol is not None and http != "h11"
    base = GuardedHttpToolsProtocol if use_httptools else GuardedH11Protocol
    return type(base.__name__, (base,), {"guard": _Guard(limits)})


class RepeatFilter(logging.Filter):
    """Passes one record per message per `period` seconds; counts the others.

    Records are the same message when they come from the same logger at the
    same level with the same format string (before `%` arguments) and the same
    exception type. The first record after a quiet period says how many were
    dropped before it.

    Args:
        period: float. Seconds. Defaults to `60.0`.
        clock: callable returning seconds. Defaults to `time.monotonic`.

    Examples:

    >>> filter = RepeatFilter(period=60.0, clock=lambda: 0.0)
    >>> record = logging.makeLogRecord({"msg": "Invalid HTTP request received."})
    >>> filter.filter(record), filter.filter(record)
    (True, False)
    """

    _MAX_KEYS = 1024  # messages remembered; older ones are forgotten first

    def __init__(self, period: float = 60.0, clock=time.monotonic):
        super().__init__()
        self.period = period
        self.clock = clock
        self._seen: dict = {}  # key -> [start of period, records dropped]
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        exc_type = record.exc_info[0] if record.exc_info else None
        key = (record.name, record.levelno, str(record.msg), exc_type)
        now = self.clock()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen[0] < self.period:
                seen[1] += 1
                return False
            self._seen.pop(key, None)
            if len(self._seen) >= self._MAX_KEYS:
                del self._seen[next(iter(self._seen))]
            self._seen[key] = [now, 0]
        if seen is not None and seen[1]:
            record.msg = (f"{record.getMessage()} ({seen[1]} more like this in the "
                          f"last {now - seen[0]:.0f} s were not logged)")
            record.args = None
        return True


def install_repeat_filter(*names: str, period: float = 60.0) -> None:
    """Adds one `RepeatFilter` to each named logger (once per logger)."""
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RepeatFilter) for f in logger.filters):
            logger.addFilter(RepeatFilter(period))
