"""The keep-alive HTTP client (tir_agent.sandbox._http) against real servers: uvicorn running
small ASGI apps (the server stack of the sandbox service), and raw TCP servers for broken
connections."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.remote.apps import raw_server, read_request, serve_app
from tests.servers import free_port
from tir_agent.sandbox._http import HTTPConnectionError, Origin

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def echo_url() -> Iterator[str]:
    with serve_app("echo") as url:
        yield url


async def test_json_in_and_out_with_fixed_and_per_request_headers(echo_url: str) -> None:
    origin = Origin(echo_url, headers={"X-TIR-Agent-API": "1", "Authorization": "Bearer t"})
    try:
        reply = await origin.request(
            "POST", "/v1/run", json_body={"code": "print('é')"}, headers={"X-Session-ID": "s1"}
        )
    finally:
        origin.close()
    assert reply.status == 200
    assert reply.headers["x-tir-agent-api"] == "1"
    seen = reply.json()
    assert seen["method"] == "POST" and seen["path"] == "/v1/run"
    assert json.loads(seen["body"]) == {"code": "print('é')"}
    headers = seen["headers"]
    assert headers["x-tir-agent-api"] == "1" and headers["authorization"] == "Bearer t"
    assert headers["x-session-id"] == "s1" and headers["content-type"] == "application/json"
    assert headers["host"] == echo_url.removeprefix("http://")


async def test_post_without_body_sends_content_length_zero(echo_url: str) -> None:
    origin = Origin(echo_url)
    try:
        seen = (await origin.request("POST", "/v1/sessions")).json()
        got = (await origin.request("GET", "/v1/health")).json()
    finally:
        origin.close()
    assert seen["headers"]["content-length"] == "0" and seen["body"] == ""
    assert "content-length" not in got["headers"]


async def test_connection_is_kept_alive_and_reused(echo_url: str) -> None:
    origin = Origin(echo_url)
    try:
        replies = [(await origin.request("GET", f"/n/{i}")).json() for i in range(20)]
        assert origin.connections == 1
    finally:
        origin.close()
    assert len({r["client_port"] for r in replies}) == 1
    assert [r["requests_on_connection"] for r in replies] == list(range(1, 21))


async def test_chunked_reply_is_reassembled(echo_url: str) -> None:
    origin = Origin(echo_url)
    try:
        reply = await origin.request("POST", "/chunked", json_body={"x": "y" * 100})
        after = await origin.request("GET", "/after")  # the connection is still in step
    finally:
        origin.close()
    assert "content-length" not in reply.headers
    assert reply.headers["transfer-encoding"] == "chunked"
    assert json.loads(reply.json()["body"]) == {"x": "y" * 100}
    assert after.json()["path"] == "/after"
    assert after.json()["client_port"] == reply.json()["client_port"]


async def test_connection_close_reply_is_not_reused(echo_url: str) -> None:
    origin = Origin(echo_url)
    try:
        first = (await origin.request("GET", "/close")).json()
        second = (await origin.request("GET", "/again")).json()
    finally:
        origin.close()
    assert first["client_port"] != second["client_port"]
    assert second["requests_on_connection"] == 1


async def test_error_statuses_are_replies_not_exceptions(echo_url: str) -> None:
    origin = Origin(echo_url)
    try:
        reply = await origin.request("GET", "/status/422")
    finally:
        origin.close()
    assert reply.status == 422 and reply.json()["path"] == "/status/422"


async def test_max_connections_bounds_concurrency(echo_url: str) -> None:
    origin = Origin(echo_url, max_connections=2)
    try:
        replies = await asyncio.gather(*(origin.request("GET", "/sleep/0.05") for _ in range(8)))
        assert origin.connections <= 2
    finally:
        origin.close()
    assert len({r.json()["client_port"] for r in replies}) == 2
    assert max(r.json()["max_active"] for r in replies) <= 2


async def test_timeout_raises_and_the_connection_is_dropped(echo_url: str) -> None:
    origin = Origin(echo_url)
    try:
        with pytest.raises(TimeoutError, match=r"no reply within 0\.05 s"):
            await origin.request("GET", "/sleep/0.5", timeout=0.05)
        reply = (await origin.request("GET", "/next")).json()
    finally:
        origin.close()
    assert reply["requests_on_connection"] == 1  # a fresh connection, not the timed-out one


async def test_idle_connection_past_expiry_is_replaced(echo_url: str) -> None:
    origin = Origin(echo_url, keepalive_expiry=0.05)
    try:
        first = (await origin.request("GET", "/a")).json()
        await asyncio.sleep(0.1)
        second = (await origin.request("GET", "/b")).json()
    finally:
        origin.close()
    assert first["client_port"] != second["client_port"]


async def test_refused_connection_was_not_sent() -> None:
    origin = Origin(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(HTTPConnectionError, match="cannot connect") as caught:
        await origin.request("POST", "/v1/run", json_body={})
    assert caught.value.sent is False
    assert isinstance(caught.value, ConnectionError)


async def test_server_closing_before_replying_may_have_been_sent() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.close()

    async with raw_server(hang_up) as url:
        origin = Origin(url)
        with pytest.raises(HTTPConnectionError, match="before replying") as caught:
            await origin.request("POST", "/v1/run", json_body={})
    assert caught.value.sent is True


async def test_reply_cut_in_the_middle_is_a_connection_error() -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial":')
        await writer.drain()
        writer.close()

    async with raw_server(cut) as url:
        origin = Origin(url)
        with pytest.raises(HTTPConnectionError, match="while sending the reply"):
            await origin.request("GET", "/")


async def test_garbage_reply_is_a_connection_error() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        await writer.drain()

    async with raw_server(garbage) as url:
        origin = Origin(url)
        try:
            with pytest.raises(HTTPConnectionError, match="malformed HTTP reply"):
                await origin.request("GET", "/")
        finally:
            origin.close()


async def test_get_is_retried_once_when_a_reused_connection_was_closed_meanwhile() -> None:
    """The server answers each connection's first request, then hangs up when the next one
    arrives (as a server closing an idle connection at that very moment does)."""
    connections = 0

    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await read_request(reader)
        writer.close()

    async with raw_server(once) as url:
        origin = Origin(url)
        try:
            assert (await origin.request("GET", "/")).body == b"ok"
            assert (await origin.request("GET", "/")).body == b"ok"  # retried on a new one
            assert connections == 2
            # A POST is not retried: it may have reached the server.
            with pytest.raises(HTTPConnectionError) as caught:
                await origin.request("POST", "/", json_body={})
            assert caught.value.sent is True and connections == 2
        finally:
            origin.close()


async def test_closed_origin_refuses_requests(echo_url: str) -> None:
    origin = Origin(echo_url)
    await origin.request("GET", "/")
    origin.close()
    assert origin.connections == 0
    with pytest.raises(HTTPConnectionError, match="closed"):
        await origin.request("GET", "/")


async def test_only_http_urls_are_accepted() -> None:
    with pytest.raises(ValueError, match="not an http"):
        Origin("ftp://example.org")
    assert Origin("http://h:81/base/").base_path == "/base"


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_https_with_a_trusted_certificate(tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    with serve_app("echo", "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)) as url:
        assert url.startswith("https://")
        trusted = Origin(url, ssl_context=ssl.create_default_context(cafile=str(cert)))
        try:
            for _ in range(3):
                reply = await trusted.request("GET", "/tls")
            assert reply.status == 200 and reply.json()["requests_on_connection"] == 3
        finally:
            trusted.close()
        untrusted = Origin(url)  # the system's CAs do not know the self-signed certificate
        with pytest.raises(HTTPConnectionError, match=r"TLS|certificate") as caught:
            await untrusted.request("GET", "/tls")
        assert caught.value.sent is False
