"""What the rendered config makes a real nginx do, checked with scriptable upstream servers.

The upstreams are tiny real HTTP servers (tests/scaleout/rawhttp.py), so these tests isolate
nginx's behaviour: affinity, spreading, keep-alive, and never re-sending a request a server took.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.scaleout.nginxproc import free_port, start_nginx
from tests.scaleout.rawhttp import Connection, Upstream, request


@pytest.fixture
async def upstreams() -> AsyncIterator[list[Upstream]]:
    ups = [Upstream(f"u{i}") for i in range(3)]
    for u in ups:
        await u.start()
    yield ups
    for u in ups:
        await u.stop()


async def test_each_session_stays_on_one_server_and_sessions_spread(
    upstreams: list[Upstream],
) -> None:
    with start_nginx([u.url for u in upstreams]) as nginx:

        async def session(i: int) -> set[str]:
            conn = Connection(nginx.url)
            seen = set()
            for _ in range(3):
                r = await conn.request(
                    "POST", "/execute", headers={"X-Session-ID": f"s-{i}"}, json_body={}
                )
                assert r.status == 200
                assert r.json()["session"] == f"s-{i}"
                seen.add(r.json()["server"])
            await conn.close()
            return seen

        placements = await asyncio.gather(*(session(i) for i in range(60)))
    assert all(len(servers) == 1 for servers in placements)
    per_server = Counter(next(iter(s)) for s in placements)
    assert set(per_server) == {"u0", "u1", "u2"}, per_server


async def test_requests_without_a_session_id_spread_over_all_servers(
    upstreams: list[Upstream],
) -> None:
    """An empty hash key makes nginx fall back to round-robin (stateless runs, health checks)."""
    with start_nginx([u.url for u in upstreams]) as nginx:
        conn = Connection(nginx.url)
        servers = [(await conn.request("GET", "/health")).json()["server"] for _ in range(60)]
        await conn.close()
    assert set(servers) == {"u0", "u1", "u2"}


async def test_keep_alive_to_the_servers(upstreams: list[Upstream]) -> None:
    with start_nginx([upstreams[0].url], worker_processes=1) as nginx:
        conn = Connection(nginx.url)
        for _ in range(200):
            assert (await conn.request("GET", "/health")).status == 200
        await conn.close()
    assert len(upstreams[0].requests) == 200
    assert upstreams[0].connections == 1


async def test_authorization_and_session_headers_reach_the_server(
    upstreams: list[Upstream],
) -> None:
    with start_nginx([upstreams[0].url]) as nginx:
        r = await request(
            nginx.url,
            "POST",
            "/v1/sessions/abc/run",
            headers={"Authorization": "Bearer t0k", "X-Session-ID": "abc", "X-TIR-Agent-API": "1"},
            json_body={"code": "1"},
        )
    assert r.status == 200
    first, headers = upstreams[0].requests[-1]
    assert first == "POST /v1/sessions/abc/run HTTP/1.1"
    assert headers["authorization"] == "Bearer t0k"
    assert headers["x-session-id"] == "abc"
    assert headers["x-tir-agent-api"] == "1"


async def test_a_request_a_server_took_is_never_sent_to_another(upstreams: list[Upstream]) -> None:
    """A server that dies holding a POST gives a 502; nginx does not re-run it elsewhere."""

    async def drop(first: str, headers: dict[str, str], body: bytes) -> Any:
        return None  # read the request, then close the connection without a reply

    dying, healthy = upstreams[0], upstreams[1]
    dying.handler = drop
    with start_nginx([dying.url, healthy.url]) as nginx:
        replies = await asyncio.gather(
            *(
                request(
                    nginx.url, "POST", "/execute", headers={"X-Session-ID": f"s-{i}"}, json_body={}
                )
                for i in range(40)
            )
        )
    failed = [r for r in replies if r.status == 502]
    assert failed, "no session hashed to the dying server"
    assert all(r.headers["x-tir-agent-api"] == "1" for r in failed)
    assert all(r.json()["error"]["type"] == "sandbox_error" for r in failed)
    seen = [h["x-session-id"] for _, h in dying.requests + healthy.requests]
    assert len(seen) == len(set(seen)) == 40  # every request reached exactly one server
    assert len(dying.requests) == len(failed)


async def test_a_refused_connection_is_retried_on_another_server(
    upstreams: list[Upstream],
) -> None:
    """A dead server's sessions move to the live one (consistent hashing), nothing fails."""
    dead = f"http://127.0.0.1:{free_port()}"
    with start_nginx([dead, upstreams[0].url]) as nginx:
        replies = await asyncio.gather(
            *(
                request(
                    nginx.url, "POST", "/execute", headers={"X-Session-ID": f"s-{i}"}, json_body={}
                )
                for i in range(30)
            )
        )
    assert [r.status for r in replies] == [200] * 30
    assert len(upstreams[0].requests) == 30


async def test_nginx_errors_are_json_in_the_api_error_shape() -> None:
    with start_nginx([f"http://127.0.0.1:{free_port()}"], max_body="1k") as nginx:
        down = await request(nginx.url, "POST", "/v1/run", json_body={"code": "1"})
        big = await request(nginx.url, "POST", "/v1/run", json_body={"code": "x" * 5000})
    assert down.status == 502
    assert down.headers["x-tir-agent-api"] == "1"
    assert down.json()["error"]["type"] == "sandbox_error"
    assert "no sandbox server answered" in down.json()["error"]["message"]
    assert big.status == 413
    assert big.json()["error"]["type"] == "body_too_large"


async def test_errors_the_servers_send_pass_through_untouched(upstreams: list[Upstream]) -> None:
    """Only nginx's own failures are rewritten; a server's 503 (shutting down) or 502 reaches the
    client as the server sent it, and is not retried on another server."""

    async def shutting_down(first: str, headers: dict[str, str], body: bytes) -> Any:
        status = 503 if "/v1/" in first else 502
        return status, {"error": {"type": "shutting_down", "message": f"from {first}"}}

    upstreams[0].handler = shutting_down
    with start_nginx([upstreams[0].url, upstreams[1].url]) as nginx:
        replies = [
            await request(nginx.url, "POST", path, headers={"X-Session-ID": f"s-{i}"}, json_body={})
            for i in range(20)
            for path in ("/v1/run", "/execute")
        ]
    served = [r for r in replies if r.status != 200]
    assert served, "no session hashed to the first server"
    for r in served:
        assert r.json()["error"]["type"] == "shutting_down"
        assert r.status == (503 if "/v1/" in r.json()["error"]["message"] else 502)
    assert len(upstreams[0].requests) == len(served)
    assert len(upstreams[1].requests) == len(replies) - len(served)
