"""The request body limit: refused with 413 while reading, never buffered whole."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from tests.servers import ServerProcess, start_server
from tests.service.client import Client
from tests.service.conftest import LIGHT

LIMIT = 2000


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with start_server(*LIGHT, "--max-body-bytes", str(LIMIT)) as s:
        yield s


def read_reply(sock: socket.socket) -> tuple[int, dict[str, str], dict[str, object]]:
    """One HTTP reply from a raw socket (it must come within the socket's timeout)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection without a reply: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers["content-length"])
    while len(rest) < length:
        rest += sock.recv(65536)
    return status, headers, json.loads(rest[:length])


def connect(server: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return sock


@pytest.mark.parametrize("path", ["/execute", "/v1/run"])
def test_declared_length_over_the_limit_is_refused_before_the_body(
    server: ServerProcess, path: str
) -> None:
    with connect(server) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"X-Session-ID: a\r\nX-TIR-Agent-API: 1\r\nContent-Length: {100 * 1024**2}\r\n\r\n"
            "{".encode()
        )
        status, headers, body = read_reply(sock)  # arrives although 100 MiB were announced
    assert status == 413
    assert headers["connection"] == "close"
    text = json.dumps(body)
    assert "body_too_large" in text if path.startswith("/v1") else "--max-body-bytes" in text
    assert str(LIMIT) in text


def test_chunked_body_is_cut_off_while_it_arrives(server: ServerProcess) -> None:
    with connect(server) as sock:
        sock.sendall(
            b"POST /v1/run HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"X-TIR-Agent-API: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        piece = b"x" * 900
        for _ in range(3):  # 2700 bytes, never the final chunk
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        status, headers, body = read_reply(sock)
    assert status == 413
    assert headers["x-tir-agent-api"] == "1"
    assert body["error"]["type"] == "body_too_large"  # type: ignore[index]


def test_a_body_within_the_limit_is_served(server: ServerProcess) -> None:
    client = Client(server.url)
    code = "s = '" + "y" * (LIMIT - 200) + "'\nprint(len(s))"
    reply = client.v1("POST", "/run", {"code": code})
    assert reply.status == 200
    assert reply.body["stdout"] == f"{LIMIT - 200}\n"
    client.close()
