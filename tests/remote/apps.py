"""Real HTTP servers for the client tests: small ASGI apps under uvicorn, and raw TCP servers.

``serve_app("echo")`` runs ``uvicorn tests.remote.apps:echo`` (uvloop + httptools, the server
stack of ``tir-agent sandbox serve``) as a subprocess on a free loopback port. The apps:

- ``echo``: replies with JSON describing the request (method, path, headers, body, the client's
  port, how many requests that connection carried) and ``X-TIR-Agent-API: 1``; ``/chunked``
  answers in several chunks, ``/close`` with ``Connection: close``, ``/sleep/<s>`` after a pause
  (counting concurrent requests), ``/status/<n>`` with that status.
- ``plain``: a web service that is not a tir-agent server (no API header), answering 404 to all.

:func:`raw_server` is an asyncio TCP server whose handler gets the raw bytes, for what no HTTP
framework does on purpose: closing without a reply, resetting, sending garbage.
:func:`scripted_http` is one that answers each request with what a function of its head says,
for proxies and servers that must answer exactly so (a 502 without the API header, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from tests.servers import ROOT, free_port

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_per_connection: dict[tuple[str, int], int] = {}
_state = {"active": 0, "max_active": 0}


async def _read(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += bytes(message.get("body", b""))
        if not message.get("more_body"):
            return body


async def _reply(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": head + (headers or [])})
    await send({"type": "http.response.body", "body": body})


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    """The echo app (see the module docstring)."""
    if scope["type"] != "http":
        return
    client = tuple(scope["client"])
    _per_connection[client] = _per_connection.get(client, 0) + 1
    body = await _read(receive)
    path: str = scope["path"]
    api = [(b"x-tir-agent-api", b"1")]
    described = {
        "method": scope["method"],
        "path": path,
        "headers": {k.decode(): v.decode() for k, v in scope["headers"]},
        "body": body.decode(),
        "client_port": client[1],
        "requests_on_connection": _per_connection[client],
    }
    if path == "/chunked":
        await send({"type": "http.response.start", "status": 200, "headers": api})
        data = json.dumps(described).encode()
        for i in range(0, len(data), 7):
            await send({"type": "http.response.body", "body": data[i : i + 7], "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    if path.startswith("/sleep/"):
        _state["active"] += 1
        _state["max_active"] = max(_state["max_active"], _state["active"])
        try:
            await asyncio.sleep(float(path.rsplit("/", 1)[1]))
        finally:
            _state["active"] -= 1
        described["max_active"] = _state["max_active"]
    status = int(path.rsplit("/", 1)[1]) if path.startswith("/status/") else 200
    headers = api + ([(b"connection", b"close")] if path == "/close" else [])
    await _reply(send, status, json.dumps(described).encode(), headers)


async def plain(scope: Scope, receive: Receive, send: Send) -> None:
    """A web service that is not a tir-agent server: 404 without the API header."""
    if scope["type"] != "http":
        return
    await _read(receive)
    await _reply(send, 404, b'{"detail": "Not Found"}')


@contextlib.contextmanager
def serve_app(name: str, *extra: str) -> Iterator[str]:
    """Run ``uvicorn tests.remote.apps:<name>`` on a free port; yields its URL."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": ROOT}
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", f"tests.remote.apps:{name}", "--port", str(port),
         "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
         *extra],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"uvicorn app {name} did not start") from None
                time.sleep(0.05)
        scheme = "https" if "--ssl-certfile" in extra else "http"
        yield f"{scheme}://127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[str]:
    """A TCP server on a free loopback port running ``handler`` per connection; yields its URL."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """The head of one request (bodies are not read: the tests send none to raw servers)."""
    return await reader.readuntil(b"\r\n\r\n")


def header(head: bytes, name: bytes) -> bytes:
    """The value of header ``name`` (lower case) in a request head, ``b""`` when absent."""
    return head.lower().partition(b"\r\n" + name + b": ")[2].split(b"\r\n")[0]


OK = b"200 OK"
CREATED = b"201 Created"
BAD_GATEWAY = b"502 Bad Gateway"


@contextlib.asynccontextmanager
async def scripted_http(
    respond: Callable[[bytes], tuple[bytes, bytes, bool]],
) -> AsyncIterator[str]:
    """A keep-alive HTTP server whose reply to each request is ``respond(head)``: ``(status
    line, body, with the X-TIR-Agent-API header)``. Yields its URL."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await read_request(reader)
            except asyncio.IncompleteReadError:
                break
            await reader.readexactly(int(header(head, b"content-length") or 0))
            status, body, api = respond(head)
            extra = b"X-TIR-Agent-API: 1\r\n" if api else b""
            writer.write(
                b"HTTP/1.1 %s\r\n%sContent-Length: %d\r\n\r\n%s" % (status, extra, len(body), body)
            )
            await writer.drain()
        writer.close()

    async with raw_server(handle) as url:
        yield url
