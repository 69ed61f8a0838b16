"""A plain HTTP/1.1 client and a scriptable upstream on asyncio streams, for the scale-out tests.

The client speaks to nginx the way NeMo-Skills' client does (plain JSON requests with an
``X-Session-ID`` header), independent of :class:`~tir_agent.sandbox.remote.RemoteSandbox`. The
upstream is a tiny real HTTP server whose behaviour a test chooses (answer with its name, or take
the request and drop the connection), to check what nginx does with the rendered config.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def _read_message(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    first, *lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
        return first, headers, bytes(body)
    length = int(headers.get("content-length", "0"))
    return first, headers, await reader.readexactly(length)


class Connection:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        json_body: Any = None,
        body: bytes | None = None,
    ) -> Reply:
        if self._streams is None:
            self._streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._streams
        data = json.dumps(json_body).encode() if json_body is not None else (body or b"")
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        if json_body is not None:
            head.append("Content-Type: application/json")
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        head.append(f"Content-Length: {len(data)}")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        try:
            first, reply_headers, reply_body = await _read_message(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            await self.close()
            raise
        if reply_headers.get("connection", "").lower() == "close":
            await self.close()
        return Reply(int(first.split()[1]), reply_headers, reply_body)

    async def close(self) -> None:
        if self._streams is not None:
            writer = self._streams[1]
            self._streams = None
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def request(url: str, method: str, path: str, **kwargs: Any) -> Reply:
    """One request on a fresh connection."""
    conn = Connection(url)
    try:
        return await conn.request(method, path, **kwargs)
    finally:
        await conn.close()


Handler = Callable[[str, dict[str, str], bytes], Awaitable[tuple[int, dict[str, Any]] | None]]


@dataclass
class Upstream:
    """A scriptable HTTP server: ``handler`` returns (status, JSON body), or ``None`` to drop the
    connection without replying (a server dying while it holds the request)."""

    name: str
    handler: Handler | None = None
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    connections: int = 0
    port: int = 0
    _server: asyncio.Server | None = None
    _open: dict[asyncio.StreamWriter, asyncio.Task[None]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in self._open:
                writer.close()  # idle keep-alive connections end: their handlers return
            await asyncio.gather(*self._open.values(), return_exceptions=True)
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._open[writer] = task
        try:
            while True:
                first, headers, body = await _read_message(reader)
                self.requests.append((first, headers))
                reply = await self._reply(first, headers, body)
                if reply is None:
                    return
                status, payload = reply
                data = json.dumps(payload).encode()
                writer.write(
                    f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(data)}\r\n\r\n".encode()
                    + data
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._open.pop(writer, None)
            writer.close()

    async def _reply(
        self, first: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, Any]] | None:
        if self.handler is not None:
            return await self.handler(first, headers, body)
        return 200, {"server": self.name, "session": headers.get("x-session-id"), "line": first}
