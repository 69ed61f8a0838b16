"""The server's defences against hostile clients at the connection level.

Authentication happens after a request arrives, so a client that opens connections and sends
nothing (or sends a byte now and then) is not stopped by a token. This module bounds what such a
client can hold:

- **A cap on open connections, enforced at accept time** (:class:`Listener`). Below
  ``max_connections`` a connection is accepted; at the cap the connection that has waited longest
  for its next request (idle keep-alive, or still sending its request) is closed to make room, so
  new work gets in even while an attacker holds every slot with idle sockets; only when every
  open connection has a request being answered is the new one refused with a fast 503
  (``overloaded``) and closed at once. The server's descriptors therefore stay below the cap plus
  a small constant, whatever clients do.
- **Deadlines** (:class:`Guard.sweep`, at least once a second): a request (headers and body) must
  arrive within ``request_timeout`` of its first byte (of the connection's opening for a new
  connection), and a reply the client does not read may stall that long; slower clients are
  disconnected. Idle keep-alive connections close after ``keep_alive`` seconds (uvicorn's timer).
- **A request head limit** (``max_header_bytes``): a request line and headers larger than this get
  431 and the connection is closed, so headers cannot fill the server's memory.
- **Replies to a request whose body is still arriving** (a 413 for a body above the limit) are
  followed by a lingering close (:class:`LingeringTransport`): the reply and a FIN go out, and
  what the client still sends is read and discarded for up to :data:`LINGER_IDLE` seconds
  between reads (``request_timeout`` in all), so a client that sends its whole body before
  reading (httpx, ``http.client``) gets the reply instead of a connection reset.
- **Descriptors for the sandbox** (:func:`descriptor_budget`): the soft ``RLIMIT_NOFILE`` is raised
  to the hard limit at start, and the connection cap is lowered if needed so that a reserve of
  descriptors is always left for the sandbox's sessions.

Connections refused, evicted or closed for slowness are counted and reported by a WARNING event
(``connection.limit``, ``connection.drop``) at most every :data:`REPORT_EVERY` seconds.
"""

from __future__ import annotations

import asyncio
import errno
import math
import resource
import socket
import time
from collections.abc import Callable
from typing import Any, cast

from pydantic_core import to_json
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from tir_agent._log import get_logger
from tir_agent.errors import ConfigError
from tir_agent.sandbox.http_api import API_HEADER, API_VERSION

log = get_logger(__name__)

ACCEPT_BATCH = 64
"""Connections accepted per wake-up of the listening socket: bounds the descriptors of
connections accepted but not yet counted, and keeps the event loop serving requests during a
flood of connects."""
ACCEPT_PAUSE = 0.1
"""Seconds accepting pauses when the process is out of descriptors (should not happen: the cap
keeps a reserve), instead of spinning on a listening socket that stays readable."""
LINGER_IDLE = 2.0
"""Seconds a lingering close waits for more of the client's body before closing."""
REPORT_EVERY = 10.0
"""Seconds between two WARNING reports of refused, evicted or timed-out connections."""
FD_RESERVE_BASE = 128
"""Descriptors kept free besides the sessions' share: the server's own files, sockets being
accepted (:data:`ACCEPT_BATCH`) and log files."""
FD_PER_SESSION = 4
"""Descriptors kept free per sandbox session (each uses about one in the server process; the
rest is headroom while sessions start and stop)."""
FD_SESSIONS_UNBOUNDED = 1024
"""Sessions the reserve is sized for when ``max_sessions`` is ``None`` (no limit)."""


_EVENT = {
    "refused": "connection.limit",
    "evicted": "connection.limit",
    "slow_request": "connection.drop",
    "stalled_reply": "connection.drop",
    "large_header": "connection.drop",
}
"""The event that reports each kind of refused or cut connection."""


def connection_error(status: int, kind: str, message: str) -> bytes:
    """A complete HTTP/1.1 reply, sent before (or instead of) reading a request: the tir-agent
    API's error shape and header (so ``RemoteSandbox`` reads it), ``Connection: close``."""
    body = to_json({"error": {"type": kind, "message": message}})
    reason = {431: "Request Header Fields Too Large", 503: "Service Unavailable"}[status]
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"{API_HEADER.lower()}: {API_VERSION}\r\nconnection: close\r\n"
        f"content-length: {len(body)}\r\n"
    )
    if status == 503:
        head += "retry-after: 1\r\n"
    return (head + "\r\n").encode("latin-1") + body


def descriptor_budget(max_connections: int, max_sessions: int | None) -> int:
    """The connection cap this process can afford: raises the soft ``RLIMIT_NOFILE`` to the hard
    limit, keeps a reserve for the sandbox's sessions, and lowers ``max_connections`` (with a
    WARNING) if the rest is smaller. ``ConfigError`` if not even a few connections fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (OSError, ValueError):
            pass  # keep the soft limit we have
    if soft == resource.RLIM_INFINITY:  # not on Linux, where nr_open bounds it
        return max_connections
    sessions = FD_SESSIONS_UNBOUNDED if max_sessions is None else max_sessions
    reserve = FD_RESERVE_BASE + FD_PER_SESSION * sessions
    room = soft - reserve
    if room < 8:
        raise ConfigError(
            f"this process may open only {soft} files (RLIMIT_NOFILE), and {reserve} are kept for "
            f"the sandbox ({sessions} sessions): raise the limit (`ulimit -n`, LimitNOFILE= in "
            "systemd) or lower --max-sessions"
        )
    if max_connections > room:
        log.warning(
            "service.fd_limit",
            max_connections=max_connections,
            allowed=room,
            nofile=soft,
            reserve=reserve,
            fix="raise the open-file limit (`ulimit -n`) or lower --max-connections",
        )
        return room
    return max_connections


class Guard:
    """The server's open connections: admission at the cap, deadlines, and the reports."""

    def __init__(
        self,
        *,
        max_connections: int,
        request_timeout: float,
        keep_alive: float,
        max_header_bytes: int,
    ) -> None:
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self.keep_alive = keep_alive
        self.max_header_bytes = max_header_bytes
        self.open = 0
        """Connections accepted and not yet released (closed, or being closed by us)."""
        self.connections: set[GuardedProtocol] = set()
        self.idle: dict[GuardedProtocol, None] = {}
        """Connections without a request being answered, longest-waiting first: the ones that
        make room at the cap."""
        self.pending = dict.fromkeys(_EVENT, 0)
        """Connections refused, evicted or cut since their event was last reported."""
        self._reported = dict.fromkeys(_EVENT.values(), -math.inf)

    def admit(self) -> bool:
        """Whether a just-accepted connection may stay: below the cap, or after closing the
        longest-waiting idle connection; ``False`` when every connection is busy."""
        if self.open < self.max_connections:
            self.open += 1
            return True
        while self.idle:
            victim = next(iter(self.idle))
            victim.close("evicted")
            if self.open < self.max_connections:
                self.open += 1
                return True
        self.count("refused")
        return False

    def release(self, protocol: GuardedProtocol | None = None) -> None:
        """One admitted connection is gone (or being closed): its slot is free."""
        self.open -= 1
        if protocol is not None:
            self.idle.pop(protocol, None)

    def count(self, what: str) -> None:
        """Count a refused, evicted or cut connection; the first one is reported at once, the
        next ones together at most every :data:`REPORT_EVERY` seconds."""
        self.pending[what] += 1
        event = _EVENT[what]
        now = time.monotonic()
        if now - self._reported[event] >= REPORT_EVERY:
            self.report(event, now)

    def report(self, event: str, now: float) -> None:
        """Log the counts of ``event`` since its last report (WARNING)."""
        self._reported[event] = now
        counts = {k: v for k, v in self.pending.items() if _EVENT[k] == event}
        for what in counts:
            self.pending[what] = 0
        if event == "connection.limit":
            log.warning(
                event,
                **counts,
                open=self.open,
                max_connections=self.max_connections,
                fix="allow more connections with --max-connections (and `ulimit -n`)",
            )
        else:
            log.warning(event, **counts, request_timeout=self.request_timeout)

    def sweep(self, now: float) -> None:
        """Disconnect clients past a deadline: a request not complete ``request_timeout`` after
        it began, a reply stalled (the client reads nothing) or a close pending that long; report
        counts that waited for their turn."""
        for event, last in self._reported.items():
            if now - last >= REPORT_EVERY and any(
                n for what, n in self.pending.items() if _EVENT[what] == event
            ):
                self.report(event, now)
        limit = self.request_timeout
        for protocol in list(self.connections):
            transport = protocol.transport
            if transport is None:
                continue
            if transport.is_closing():
                # a close waits for the client to read the rest of the reply: not forever
                if protocol.closing_since is None:
                    protocol.closing_since = now
                elif now - protocol.closing_since > limit:
                    protocol.abort("stalled_reply")
            elif protocol.stalled_since is not None and now - protocol.stalled_since > limit:
                protocol.abort("stalled_reply")
            elif (
                protocol.since is not None
                and now - protocol.since > limit
                and not protocol.answering()
            ):
                protocol.close("slow_request")

    async def run_sweeper(self) -> None:
        """Sweep every quarter of ``request_timeout``, and at least once a second, until cancelled."""
        interval = min(1.0, max(0.05, self.request_timeout / 4))
        while True:
            await asyncio.sleep(interval)
            self.sweep(time.monotonic())


class LingeringTransport:
    """The connection's transport as uvicorn sees it. A ``close()`` right after a complete reply
    to a request whose body is still arriving (uvicorn closes the connection after a
    ``Connection: close`` reply) half-closes instead and lets :class:`GuardedProtocol` discard
    the rest of the body; closing at once would make the kernel answer the client's further
    data with a reset, and a client still sending never reads the reply. Any other ``close()``
    (and a second one) closes at once."""

    def __init__(self, transport: asyncio.Transport, protocol: GuardedProtocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self.lingering = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        """Lingering counts as closing, so uvicorn starts nothing more on the connection."""
        return self.lingering or self._transport.is_closing()

    def close(self) -> None:
        cycle = self._protocol.cycle
        transport = self._transport
        if (
            not self.lingering
            and cycle is not None
            and cycle.response_complete
            and cycle.more_body
            and not transport.is_closing()
            and transport.can_write_eof()
        ):
            self.lingering = True
            transport.write_eof()
            transport.resume_reading()  # uvicorn pauses reading when a body is not consumed
            self._deadline = time.monotonic() + self._protocol.guard.request_timeout
            self.received()
            return
        if self._timer is not None:
            self._timer.cancel()
        transport.close()

    def received(self) -> None:
        """More of the discarded body arrived: wait up to :data:`LINGER_IDLE` for the next."""
        if self._timer is not None:
            self._timer.cancel()
        wait = max(0.0, min(LINGER_IDLE, self._deadline - time.monotonic()))
        self._timer = asyncio.get_running_loop().call_later(wait, self._transport.close)


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, reporting to a :class:`Guard`: when a request begins and
    ends (for the deadlines and the idle list), stalled writes, and the size of request heads."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        guard: Guard,
    ) -> None:
        super().__init__(config, server_state, app_state)
        self.guard = guard
        self.timeout_keep_alive = guard.keep_alive  # type: ignore[assignment]  # float seconds
        self.since: float | None = None
        """When the request being received began (``None``: none is)."""
        self.stalled_since: float | None = None
        """When writing a reply stalled because the client does not read."""
        self.closing_since: float | None = None
        self._in_head = True
        self._head_bytes = 0
        self._heads = 0
        """Request heads completed on this connection."""
        self._released = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.lingering = LingeringTransport(transport, self)
        super().connection_made(cast(asyncio.Transport, self.lingering))
        self.since = time.monotonic()
        self.guard.connections.add(self)
        self.guard.idle[self] = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.connections.discard(self)
        self._release()
        super().connection_lost(exc)

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self.guard.release(self)

    def data_received(self, data: bytes) -> None:
        if self.lingering.lingering:
            self.lingering.received()  # the rest of a refused body: discarded
            return
        if self.since is None:
            self.since = time.monotonic()
        was_head, heads = self._in_head, self._heads
        super().data_received(data)
        if was_head and self._in_head and self._heads == heads and self.parser is not None:
            # A request head was arriving before this chunk and still is, so the whole chunk
            # was head. A chunk that ends a body (the parser completed a message in it) is not
            # head even though the parser now waits for the next one: a large body's last
            # chunk counted here got a 5 MB request 431. A pipelined head that starts inside
            # such a chunk is counted from its next chunk on.
            self._head_bytes += len(data)
            if self._head_bytes > self.guard.max_header_bytes and not self.transport.is_closing():
                self.guard.count("large_header")
                self.transport.write(
                    connection_error(
                        431,
                        "headers_too_large",
                        "the request line and headers are larger than this server's limit of "
                        f"{self.guard.max_header_bytes} bytes (server option --max-header-bytes)",
                    )
                )
                self._release()
                self.transport.close()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._heads += 1
        self._head_bytes = 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True  # what comes next is the head of the next request
        self.since = None
        self.guard.idle.pop(self, None)

    def on_response_complete(self) -> None:
        super().on_response_complete()  # may start answering a pipelined request
        if not self.transport.is_closing() and not self._released and not self.answering():
            self.guard.idle[self] = None  # waits for its next request: newest of the idle

    def pause_writing(self) -> None:
        self.stalled_since = time.monotonic()
        super().pause_writing()

    def resume_writing(self) -> None:
        self.stalled_since = None
        super().resume_writing()

    def answering(self) -> bool:
        """Whether a complete request is being answered (such a connection is never evicted)."""
        cycle = self.cycle
        return cycle is not None and not cycle.more_body and not cycle.response_complete

    def close(self, why: str) -> None:
        """Close the connection and free its slot at once; a reply still unsent is dropped
        (a close would wait for the client to read it, holding the descriptor)."""
        self.guard.count(why)
        self._release()
        if self.transport.get_write_buffer_size():
            self.transport.abort()
        else:
            self.transport.close()

    def abort(self, why: str) -> None:
        """Drop the connection with whatever reply is still unsent."""
        self.guard.count(why)
        self._release()
        self.transport.abort()


class Listener:
    """Accepts connections on a listening socket under a :class:`Guard`'s cap; stands in for
    the ``asyncio.Server`` uvicorn would create (``close``, ``wait_closed``)."""

    def __init__(
        self,
        sock: socket.socket,
        protocol: Callable[[], GuardedProtocol],
        guard: Guard,
    ) -> None:
        self.sock = sock
        self.protocol = protocol
        self.guard = guard
        self.loop = asyncio.get_running_loop()
        self.closed = False
        self._starting: set[asyncio.Task[None]] = set()
        self.refusal = connection_error(
            503,
            "overloaded",
            f"the sandbox server has {guard.max_connections} connections open, all with "
            "requests in progress (server option --max-connections); retry shortly",
        )
        sock.setblocking(False)
        self.loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.error("connection.accept_failed", error=e.strerror, pause=ACCEPT_PAUSE)
                    self.loop.remove_reader(self.sock.fileno())
                    self.loop.call_later(ACCEPT_PAUSE, self._resume)
                    return
                raise
            if not self.guard.admit():
                with conn:
                    try:
                        conn.setblocking(False)
                        conn.send(self.refusal)
                    except OSError:
                        pass  # the client is gone already: nothing to tell it
                continue
            conn.setblocking(False)
            task = self.loop.create_task(self._start(conn))
            self._starting.add(task)  # the loop holds tasks weakly
            task.add_done_callback(self._starting.discard)

    async def _start(self, conn: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(self.protocol, conn)
        except OSError:  # the connection broke before it started: nobody to answer
            conn.close()
            self.guard.release()

    def _resume(self) -> None:
        if not self.closed:
            self.loop.add_reader(self.sock.fileno(), self._accept)

    def close(self) -> None:
        """Stop accepting: new connections are refused by the kernel from now on."""
        if not self.closed:
            self.closed = True
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()

    async def wait_closed(self) -> None:
        """Nothing to wait for (uvicorn calls it on ``asyncio.Server`` objects)."""
