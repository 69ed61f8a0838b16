"""A lean keep-alive HTTP/1.1 client on asyncio, for :class:`~tir_agent.sandbox.RemoteSandbox`.

Hand-written because the sandbox service must answer a warm cell in at most 0.6 ms over loopback
HTTP, and on this machine kind a round trip costs aiohttp 0.28-0.38 ms while a raw keep-alive
socket needs 0.04 ms. This client does only what the sandbox client needs: one
:class:`Origin` (scheme, host, port) at a time, a pool of keep-alive connections per origin (at
most ``max_connections``, idle ones reused newest first, ``TCP_NODELAY``), ``http`` and ``https``,
a timeout per request, JSON bodies in and out. Replies are parsed by ``httptools`` (the parser of
uvicorn), which handles ``Content-Length`` and chunked bodies.

Errors::

    ConnectionError
    └── HTTPConnectionError   refused, reset, closed before the reply; ``sent`` says whether the
                              request may have reached the server (retrying may run it twice)
    TimeoutError              no complete reply within the request's timeout
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import httptools

__all__ = ["HTTPConnectionError", "HTTPResponse", "Origin"]

KEEPALIVE_EXPIRY = 4.0
"""Seconds an idle connection is kept for reuse. Below uvicorn's default keep-alive timeout (5 s),
so a reused connection is almost never one the server is closing at that very moment."""


class HTTPConnectionError(ConnectionError):
    """The connection failed: refused, reset, or closed before the whole reply arrived."""

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent
        """Whether the request may have reached the server (``False``: it certainly did not)."""


@dataclass(frozen=True, slots=True)
class HTTPResponse:
    """A complete reply; header names are lower case."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON (``ValueError`` if it is not JSON)."""
        return json.loads(self.body)


def _expire(waiter: asyncio.Future[HTTPResponse], seconds: float) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError(f"no reply within {seconds:g} s"))


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, its reply parsed as it arrives."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[HTTPResponse] | None = None
        self.parser: httptools.HttpResponseParser | None = None
        self.closed = False
        self.replied = False
        """Some byte of the current reply arrived."""
        self.idle_since = 0.0
        self.uses = 0
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._keep_alive = False

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):  # only latency would suffer
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self.parser is None or self.waiter is None or self.waiter.done():
            self._fail(HTTPConnectionError("the server sent data nobody asked for", sent=True))
            return
        self.replied = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(HTTPConnectionError(f"malformed HTTP reply: {e}", sent=True))

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost reports it

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            why = f"{type(exc).__name__}: {exc}" if exc else "the server closed the connection"
            state = "while sending the reply" if self.replied else "before replying"
            error = HTTPConnectionError(f"connection lost {state} ({why})", sent=True)
            self.waiter.set_exception(error)

    # -- httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        assert self.parser is not None
        self._keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        assert self.parser is not None
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            response = HTTPResponse(
                self.parser.get_status_code(), self._headers, b"".join(self._body)
            )
            waiter.set_result(response)

    # --

    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def exchange(self, data: bytes, timeout: float) -> HTTPResponse:
        """Send one request (already encoded) and wait for its reply."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[HTTPResponse] = loop.create_future()
        self.waiter = waiter
        self.parser = httptools.HttpResponseParser(self)
        self._headers = {}
        self._body = []
        self._keep_alive = False
        self.replied = False
        self.uses += 1
        self.transport.write(data)
        timer = loop.call_later(timeout, _expire, waiter, timeout)
        try:
            response = await waiter
        except BaseException:
            self.close()  # a reply may still come: the connection cannot be reused
            raise
        finally:
            timer.cancel()
            self.waiter = None
        if not self._keep_alive:
            self.close()
        return response


class Origin:
    """Requests to one ``scheme://host:port`` over a pool of keep-alive connections.

    ``headers`` are sent with every request. ``max_connections`` bounds the connections open at
    once; further requests wait for one to be free (that wait is not part of their timeout).
    """

    def __init__(
        self,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        max_connections: int = 64,
        connect_timeout: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
        keepalive_expiry: float = KEEPALIVE_EXPIRY,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.url = f"{self.scheme}://{parts.netloc}"
        """The origin, without path (``http://127.0.0.1:6000``)."""
        self.base_path = parts.path.rstrip("/")
        """Path prefix of every request (a server mounted under a path behind a proxy)."""
        self.connect_timeout = connect_timeout
        self.keepalive_expiry = keepalive_expiry
        self._ssl: ssl.SSLContext | None = None
        if self.scheme == "https":
            self._ssl = ssl_context or ssl.create_default_context()
        host = parts.netloc.rsplit("@", 1)[-1]
        fixed = {"Host": host, **(headers or {})}
        self._head = "".join(f"{k}: {v}\r\n" for k, v in fixed.items())
        self._idle: list[_Connection] = []
        self._max_connections = max_connections
        self._slots = asyncio.Semaphore(max_connections)
        self._open: set[_Connection] = set()
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def connections(self) -> int:
        """Connections open now (busy and idle)."""
        return sum(1 for c in self._open if not c.closed)

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30.0,
    ) -> HTTPResponse:
        """One request; ``json_body`` is sent as ``application/json``, ``body`` as given.

        Raises :class:`HTTPConnectionError` (``sent=False`` only when the request certainly did
        not reach the server) or :class:`TimeoutError`.
        """
        if self._closed:
            raise HTTPConnectionError("the HTTP client was closed", sent=False)
        if json_body is not None:
            body = json.dumps(json_body, separators=(",", ":")).encode()
        elif body is None and method in ("POST", "PUT", "PATCH"):
            body = b""  # Content-Length: 0, which some proxies require
        head = f"{method} {self.base_path}{path} HTTP/1.1\r\n{self._head}"
        if headers:
            head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        if body is not None:
            if json_body is not None:
                head += "Content-Type: application/json\r\n"
            head += f"Content-Length: {len(body)}\r\n"
        data = (head + "\r\n").encode("latin-1") + (body or b"")
        if asyncio.get_running_loop() is not self._loop:
            self._rebind()
        slots = self._slots
        await slots.acquire()
        try:
            connection = await self._connection()
            try:
                response = await connection.exchange(data, timeout)
            except HTTPConnectionError as e:
                if connection.uses > 1 and not connection.replied and method in ("GET", "DELETE"):
                    # An idempotent request on a reused connection the server had just closed:
                    # try once more on a fresh one.
                    connection = await self._connection(fresh=True)
                    response = await connection.exchange(data, timeout)
                else:
                    raise e
            if not connection.closed:
                connection.idle_since = time.monotonic()
                self._idle.append(connection)
            return response
        finally:
            slots.release()

    def _rebind(self) -> None:
        """First use, or use from another event loop (a script calling ``asyncio.run`` twice):
        connections of the old loop cannot be used from this one."""
        for connection in self._open:
            with contextlib.suppress(RuntimeError):  # the old loop may be closed
                connection.close()
        self._open.clear()
        self._idle.clear()
        self._slots = asyncio.Semaphore(self._max_connections)
        self._loop = asyncio.get_running_loop()

    async def _connection(self, *, fresh: bool = False) -> _Connection:
        now = time.monotonic()
        while self._idle and not fresh:
            connection = self._idle.pop()
            if not connection.closed and now - connection.idle_since < self.keepalive_expiry:
                return connection
            connection.close()
            self._open.discard(connection)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, connection = await loop.create_connection(
                    _Connection,
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self.host if self._ssl else None,
                )
        except TimeoutError:
            raise HTTPConnectionError(
                f"cannot connect to {self.url}: no answer within {self.connect_timeout:g} s",
                sent=False,
            ) from None
        except ssl.SSLError as e:
            raise HTTPConnectionError(
                f"TLS handshake with {self.url} failed: {e}", sent=False
            ) from e
        except OSError as e:
            raise HTTPConnectionError(
                f"cannot connect to {self.url}: {e.strerror or e}", sent=False
            ) from e
        self._open = {c for c in self._open if not c.closed}
        self._open.add(connection)
        return connection

    def close(self) -> None:
        """Close every connection; later requests raise :class:`HTTPConnectionError`."""
        self._closed = True
        for connection in self._open:
            connection.close()
        self._open.clear()
        self._idle.clear()
