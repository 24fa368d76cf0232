"""Limits on connections, and on repeated log lines, for `kerasmtl serve`.

uvicorn's HTTP/1.1 protocol (h11) keeps a connection open for as long as a
client takes to send its request. Without limits, clients that send their
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
- uvicorn's idle keep-alive timeout (`keep_alive_timeout`) and h11's bound on
  the size of a request's line and headers (16 KiB).

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
        self.connections: set[GuardedH11Protocol] = set()
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


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with `ConnectionLimits` (see the module doc)."""

    guard: _Guard  # set on the subclass that `guarded_protocol` makes

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
        reason = {408: b"Request Timeout", 503: b"Service Unavailable"}[status]
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s"
            % (status, reason, len(body), body)
        )
        # A request in progress sees a disconnect (Starlette's ClientDisconnect).
        self.transport.close()

    def _oldest_waiting(self) -> GuardedH11Protocol | None:
        for table in (self.guard.headers, self.guard.bodies):
            for protocol in table:  # oldest first; this one is the newest
                if protocol is not self:
                    return protocol
        return None

    def _track(self) -> None:
        # Which deadline applies follows h11's view of the client: IDLE until
        # a request's headers are in, SEND_BODY until its body is, then none.
        guard, state = self.guard, self.conn.their_state
        if self not in guard.connections or self.transport.is_closing():
            return
        if state is h11.IDLE:
            guard.bodies.pop(self, None)
            if self not in guard.headers:
                guard.headers[self] = self.loop.time() + guard.limits.header_timeout
        elif state is h11.SEND_BODY:
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


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedH11Protocol]:
    """A protocol class for `uvicorn.Config(http=...)` that applies `limits`.

    Each call makes a class with its own count of connections, for one server.
    """
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"guard": _Guard(limits)})


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
