"""RemoteSandbox when servers die: real ``tir-agent sandbox serve`` processes killed with SIGKILL
(a machine that died). Lost sessions say so in their result and continue on a live server;
the other sessions go on; stateless runs are retried elsewhere; a dead server is skipped for a
while, then tried again."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from tests.remote.apps import (
    BAD_GATEWAY,
    CREATED,
    OK,
    header,
    raw_server,
    read_request,
    scripted_http,
)
from tests.servers import free_port, start_server
from tir_agent.errors import SandboxError
from tir_agent.sandbox import remote
from tir_agent.sandbox.remote import LOST_NOTE, RemoteSandbox

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]


async def test_killed_server_loses_only_its_sessions_which_continue_elsewhere() -> None:
    with start_server("preload=[]") as a, start_server("preload=[]") as b:
        async with RemoteSandbox([a.url, b.url]) as sandbox:
            sessions = [await sandbox.open_session() for _ in range(4)]
            assert Counter(s.server_url for s in sessions) == {a.url: 2, b.url: 2}
            await asyncio.gather(*(s.run(f"v = {i}") for i, s in enumerate(sessions)))
            a.kill()
            started = time.monotonic()
            results = await asyncio.gather(*(s.run("v") for s in sessions))
            assert time.monotonic() - started < 5  # no hang on the dead server
            for i, (s, r) in enumerate(zip(sessions, results, strict=True)):
                if s.server_url == a.url:
                    assert (r.status, r.state, r.reason) == ("error", "lost", "server_lost")
                    assert r.stderr == LOST_NOTE and r.stdout == ""
                else:
                    assert r.status == "completed" and r.stdout == f"{i}\n"
            # The lost sessions continue in fresh sessions on the live server.
            again = await asyncio.gather(*(s.run("v = 10\nv + 1") for s in sessions))
            assert [r.stdout for r in again] == ["11\n"] * 4
            assert {s.server_url for s in sessions} == {b.url}
            assert sorted(s.restarts for s in sessions) == [0, 0, 1, 1]
            assert sandbox.open_sessions == {a.url: 0, b.url: 4}
            # New sessions skip the dead server.
            more = [await sandbox.open_session() for _ in range(2)]
            assert {s.server_url for s in more} == {b.url}
            assert (await sandbox.run("print(3)")).stdout == "3\n"


async def test_server_killed_during_a_run_reports_it_at_once() -> None:
    with start_server("preload=[]") as a, start_server("preload=[]") as b:
        async with RemoteSandbox([a.url, b.url]) as sandbox, sandbox.session() as s:
            assert s.server_url == a.url
            await s.run("w = 1")
            running = asyncio.create_task(s.run("import time\ntime.sleep(20)", timeout=30))
            await asyncio.sleep(0.5)
            a.kill()
            started = time.monotonic()
            result = await asyncio.wait_for(running, 10)
            assert time.monotonic() - started < 2
            assert result.state == "lost" and result.reason == "server_lost"
            after = await s.run("'w' in globals()")
            assert after.stdout == "False\n" and s.server_url == b.url


async def test_stateless_run_is_retried_on_another_server() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with start_server("preload=[]") as b:
        async with RemoteSandbox([dead, b.url]) as sandbox:
            result = await sandbox.run("print(6 * 7)")
            assert result.stdout == "42\n"
        # Killed after a first success: the next run goes to the survivor.
        with start_server("preload=[]") as a:
            async with RemoteSandbox([a.url, b.url]) as sandbox:
                assert (await sandbox.run("print(1)")).stdout == "1\n"
                a.kill()
                results = [await sandbox.run(f"print({i})") for i in range(4)]
                assert [r.stdout for r in results] == [f"{i}\n" for i in range(4)]


async def test_all_servers_dead_raises_sandbox_error_naming_them() -> None:
    with start_server("preload=[]") as a, start_server("preload=[]") as b:
        async with RemoteSandbox([a.url, b.url]) as sandbox, sandbox.session() as s:
            await s.run("x = 1")
            a.kill()
            b.kill()
            lost = await s.run("x")
            assert lost.state == "lost"
            with pytest.raises(SandboxError, match="no sandbox server reachable") as caught:
                await s.run("x")
            assert a.url in str(caught.value) and b.url in str(caught.value)
            with pytest.raises(SandboxError, match="no sandbox server could run"):
                await sandbox.run("1")


async def test_down_server_is_skipped_then_retried_after_the_cool_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server that accepts connections and drops them is marked down: new sessions skip it
    until the cool-down has passed, then it is tried again."""
    monkeypatch.setattr(remote, "RETRY_AFTER", 0.3)
    attempts = 0

    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal attempts
        attempts += 1
        await read_request(reader)
        writer.close()

    with start_server("preload=[]") as b:
        async with raw_server(drop) as flaky, RemoteSandbox([flaky, b.url]) as sandbox:
            first = await sandbox.open_session()
            assert first.server_url == b.url and attempts == 1
            second = await sandbox.open_session()  # b has more sessions, but flaky is down
            assert second.server_url == b.url and attempts == 1
            await asyncio.sleep(0.35)
            third = await sandbox.open_session()
            assert third.server_url == b.url and attempts == 2


SESSION_INFO = b'{"session_id": "x", "created": 0, "last_used": 0}'


async def test_proxy_without_live_upstream_is_treated_as_a_dead_server() -> None:
    """A proxy (nginx) whose upstream died answers 502 itself, without the API header: the
    session is lost and continues on the other server; that is no "wrong server" error."""

    def proxy(head: bytes) -> tuple[bytes, bytes, bool]:
        if head.startswith(b"POST /v1/sessions "):
            return CREATED, SESSION_INFO, True
        return BAD_GATEWAY, b"bad", False

    with start_server("preload=[]") as b:
        async with scripted_http(proxy) as url, RemoteSandbox([url, b.url]) as sandbox:
            session = await sandbox.open_session()
            assert session.server_url == url
            lost = await session.run("1")
            assert lost.state == "lost" and lost.reason == "server_lost"
            again = await session.run("print(5)")
            assert again.stdout == "5\n" and session.server_url == b.url
            assert (await sandbox.run("print(6)")).stdout == "6\n"


async def test_open_behind_a_proxy_retries_with_a_new_id_when_the_proxy_answers_502() -> None:
    """One URL (nginx in front of several servers): the server the first id hashes to has just
    died, so the proxy answers the open with a 502. The open is retried with a fresh id, which
    the proxy routes to a live server, instead of failing. (A scripted proxy stands in for nginx
    here, to make the 502 deterministic; tests/scaleout runs the real one.)"""
    opened: list[bytes] = []

    def proxy(head: bytes) -> tuple[bytes, bytes, bool]:
        if head.startswith(b"POST /v1/sessions "):
            opened.append(header(head, b"x-session-id"))
            return (
                (BAD_GATEWAY, b"bad", False) if len(opened) == 1 else (CREATED, SESSION_INFO, True)
            )
        return OK, b'{"status": "completed", "stdout": "7\\n"}', True

    async with scripted_http(proxy) as url, RemoteSandbox(url) as sandbox:
        session = await sandbox.open_session()
        assert len(opened) == 2 and opened[0] != opened[1]  # retried, with a new id
        assert session.session_id == opened[1].decode()
        assert (await session.run("print(7)")).stdout == "7\n"


async def test_stateless_runs_carry_a_fresh_session_header_for_proxies_that_hash_on_it() -> None:
    """ingress-nginx's upstream-hash-by sends requests without X-Session-ID to one pod: each
    stateless run carries a random id so they spread (a recording server stands in for it)."""
    seen: list[bytes] = []

    def record(head: bytes) -> tuple[bytes, bytes, bool]:
        if head.startswith(b"POST /v1/run "):
            seen.append(header(head, b"x-session-id"))
        return OK, b'{"status": "completed", "stdout": "1\\n"}', True

    async with scripted_http(record) as url, RemoteSandbox(url) as sandbox:
        for _ in range(3):
            assert (await sandbox.run("print(1)")).stdout == "1\n"
    assert len(seen) == 3 and len(set(seen)) == 3 and all(len(s) == 32 for s in seen)
