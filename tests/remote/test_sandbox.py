"""RemoteSandbox against real ``tir-agent sandbox serve`` processes (tests/servers.py): state,
affinity, spreading, stateless runs, closing, and clear errors for a wrong token, a wrong server
or nothing to reach."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
from collections import Counter
from collections.abc import Iterator

import pytest
import structlog
from structlog.testing import LogCapture

from tests.remote.apps import serve_app
from tests.servers import ServerProcess, free_port, start_server
from tir_agent.errors import ConfigError, SandboxClosedError, SandboxError, SandboxServiceError
from tir_agent.sandbox.base import Sandbox, SandboxSession
from tir_agent.sandbox.remote import RemoteSandbox, RemoteSession

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[ServerProcess, ServerProcess]]:
    with (
        start_server("preload=[]", "env={WHO: a}") as a,
        start_server("preload=[]", "env={WHO: b}") as b,
    ):
        yield a, b


def server_sessions(server: ServerProcess) -> set[str]:
    """The session ids the server holds, from its own ``GET /v1/sessions``."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", "/v1/sessions", headers={"X-TIR-Agent-API": "1"})
        listing = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    return {s["session_id"] for s in listing["sessions"]}


async def test_implements_the_sandbox_protocols(servers: tuple[ServerProcess, ...]) -> None:
    async with RemoteSandbox(servers[0].url) as sandbox:
        assert isinstance(sandbox, Sandbox)
        async with sandbox.session() as s:
            assert isinstance(s, SandboxSession)


async def test_state_persists_within_a_session(servers: tuple[ServerProcess, ...]) -> None:
    async with RemoteSandbox(servers[0].url) as sandbox, sandbox.session() as s:
        first = await s.run("import math\nx = 41\ndef f(v):\n    return v + 1")
        second = await s.run("print(f(x), math.pi > 3)")
        third = await s.run("1 / 0")
        fourth = await s.run("x")
    assert first.status == "completed" and first.stdout == ""
    assert second.stdout == "42 True\n" and second.state == "kept"
    assert third.status == "error" and third.reason == "exception"
    assert third.stderr.endswith("ZeroDivisionError: division by zero\n")
    assert fourth.stdout == "41\n"
    assert s.executions == 4 and s.restarts == 0


async def test_sessions_are_isolated(servers: tuple[ServerProcess, ...]) -> None:
    async with (
        RemoteSandbox(servers[0].url) as sandbox,
        sandbox.session() as a,
        sandbox.session() as b,
    ):
        await a.run("secret = 1")
        result = await b.run("secret")
    assert result.status == "error" and "NameError" in result.stderr


async def test_timeout_and_output_cap_reach_the_server(servers: tuple[ServerProcess, ...]) -> None:
    async with (
        RemoteSandbox(servers[0].url, max_output_characters=5) as sandbox,
        sandbox.session() as s,
    ):
        await s.run("y = 3")
        slow = await s.run("import time\ntime.sleep(5)", timeout=0.5)
        long = await s.run("print('abcdefghij')")
        longer = await s.run("print('abcdefghij')", max_output_characters=8)
        kept = await s.run("y")
    assert slow.status == "timeout" and "Execution timed out after 0.5 seconds" in slow.stderr
    assert slow.state == "rolled_back" and kept.stdout == "3\n"  # the server's protect_state
    assert long.stdout == "abcde<output cut>" and long.stdout_truncated
    assert longer.stdout == "abcdefgh<output cut>"


async def test_stateless_run(servers: tuple[ServerProcess, ...]) -> None:
    async with RemoteSandbox(servers[0].url) as sandbox:
        first = await sandbox.run("z = 5\nprint(z * 2)")
        second = await sandbox.run("z")
        assert sandbox.open_sessions == {servers[0].url: 0}
    assert first.stdout == "10\n"
    assert second.status == "error" and "NameError" in second.stderr


async def test_stateless_runs_spread(servers: tuple[ServerProcess, ServerProcess]) -> None:
    who = "import os\nprint(os.environ['WHO'])"
    async with RemoteSandbox([s.url for s in servers]) as sandbox:
        one_by_one = [(await sandbox.run(who)).stdout for _ in range(4)]
        at_once = [r.stdout for r in await asyncio.gather(*(sandbox.run(who) for _ in range(4)))]
    assert one_by_one == ["a\n", "b\n", "a\n", "b\n"]
    assert sorted(at_once) == ["a\n", "a\n", "b\n", "b\n"]


async def test_sessions_spread_and_stay_on_their_server(
    servers: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = servers
    async with RemoteSandbox([a.url, b.url]) as sandbox:
        sessions = [await sandbox.open_session() for _ in range(6)]
        placed = Counter(s.server_url for s in sessions)
        assert placed == {a.url: 3, b.url: 3}
        assert sandbox.open_sessions == {a.url: 3, b.url: 3}
        assert {s.session_id for s in sessions if s.server_url == a.url} <= server_sessions(a)
        assert {s.session_id for s in sessions if s.server_url == b.url} <= server_sessions(b)
        # Each session keeps its state on its own server through many runs.
        await asyncio.gather(*(s.run(f"me = {i}") for i, s in enumerate(sessions)))
        for _ in range(3):
            results = await asyncio.gather(*(s.run("me += 10\nme") for s in sessions))
        assert [r.stdout for r in results] == [f"{i + 30}\n" for i in range(6)]
        assert Counter(s.server_url for s in sessions) == placed
        # Closing sessions on one server sends the next new ones there.
        for s in sessions:
            if s.server_url == a.url:
                await s.close()
        new = [await sandbox.open_session() for _ in range(3)]
        assert {s.server_url for s in new} == {a.url}
        assert sandbox.open_sessions == {a.url: 3, b.url: 3}


async def test_sessions_opened_concurrently_spread_too(
    servers: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = servers
    async with RemoteSandbox([a.url, b.url]) as sandbox:
        sessions = await asyncio.gather(*(sandbox.open_session() for _ in range(8)))
        assert Counter(s.server_url for s in sessions) == {a.url: 4, b.url: 4}
        results = await asyncio.gather(*(s.run(f"{i} * 2") for i, s in enumerate(sessions)))
        assert [r.stdout for r in results] == [f"{i * 2}\n" for i in range(8)]


async def test_close_deletes_the_session_on_the_server(servers: tuple[ServerProcess, ...]) -> None:
    server = servers[0]
    sandbox = RemoteSandbox(server.url)
    session = await sandbox.open_session()
    other = await sandbox.open_session()
    assert {session.session_id, other.session_id} <= server_sessions(server)
    await session.close()
    assert session.closed and session.session_id not in server_sessions(server)
    with pytest.raises(SandboxClosedError):
        await session.run("1")
    await sandbox.close()  # closes the sessions still open
    assert other.closed and other.session_id not in server_sessions(server)
    with pytest.raises(SandboxClosedError):
        await sandbox.open_session()
    with pytest.raises(SandboxClosedError):
        await sandbox.run("1")


async def test_a_session_deleted_on_the_server_is_reported_lost_then_continues(
    servers: tuple[ServerProcess, ...],
) -> None:
    """The server forgetting a session (idle eviction, restart, a proxy re-routing it) answers
    404 session_not_found: the run says the state is lost; the next run works in a new one."""
    server = servers[0]
    async with RemoteSandbox(server.url) as sandbox, sandbox.session() as s:
        await s.run("kept = 1")
        old = s.session_id
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request(
            "DELETE", f"/v1/sessions/{old}", headers={"X-TIR-Agent-API": "1", "X-Session-ID": old}
        )
        assert conn.getresponse().status == 200
        conn.close()
        lost = await s.run("kept")
        after = await s.run("kept = 2\nkept")
    assert lost.status == "error" and lost.state == "lost" and lost.reason == "server_lost"
    assert "sandbox server running this Python session was lost" in lost.stderr
    assert after.status == "completed" and after.stdout == "2\n"
    assert s.session_id != old and s.restarts == 1


@pytest.mark.slow
async def test_wrong_or_missing_token_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TIR_AGENT_SANDBOX_TOKEN", raising=False)
    with start_server("preload=[]", token="s3cret") as server:
        async with RemoteSandbox(server.url) as sandbox:
            with pytest.raises(SandboxServiceError, match="none was given") as caught:
                await sandbox.open_session()
            assert caught.value.status_code == 401
            assert "TIR_AGENT_SANDBOX_TOKEN" in str(caught.value)
        async with RemoteSandbox(server.url, token="wrong") as sandbox:
            with pytest.raises(SandboxServiceError, match="token sent was refused"):
                await sandbox.run("1")
        async with RemoteSandbox(server.url, token="s3cret") as sandbox:
            assert (await sandbox.run("print(7)")).stdout == "7\n"
        monkeypatch.setenv("TIR_AGENT_SANDBOX_TOKEN", "s3cret")
        async with RemoteSandbox(server.url) as sandbox, sandbox.session() as s:
            assert (await s.run("print(8)")).stdout == "8\n"


async def test_a_server_without_the_api_header_is_refused_clearly() -> None:
    """Something else on the port (here a plain uvicorn app, like a NeMo-Skills sandbox that only
    knows /execute): no misread replies, an error naming the API version."""
    with serve_app("plain") as url:
        async with RemoteSandbox(url) as sandbox:
            with pytest.raises(SandboxServiceError, match="API version 1") as caught:
                await sandbox.open_session()
            assert "X-TIR-Agent-API" in str(caught.value) and url in str(caught.value)
            with pytest.raises(SandboxServiceError, match="not a tir-agent sandbox server"):
                await sandbox.run("1")


async def test_nothing_reachable_names_every_url() -> None:
    urls = [f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"]
    async with RemoteSandbox(urls, connect_timeout=1.0) as sandbox:
        with pytest.raises(SandboxError, match="no sandbox server reachable") as caught:
            await sandbox.open_session()
        assert all(url in str(caught.value) for url in urls)
        with pytest.raises(SandboxError, match="no sandbox server could run") as caught:
            await sandbox.run("1")
        assert all(url in str(caught.value) for url in urls)
        assert not isinstance(caught.value, SandboxServiceError)


async def test_invalid_arguments_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="at least one"):
        RemoteSandbox([])
    with pytest.raises(ConfigError, match="http://"):
        RemoteSandbox("127.0.0.1:6000")
    with pytest.raises(ConfigError, match="twice"):
        RemoteSandbox(["http://a:1", "http://a:1/"])
    with pytest.raises(ConfigError, match="timeout"):
        RemoteSandbox("http://a:1", timeout=0)
    with pytest.raises(ConfigError, match="token"):
        RemoteSandbox("http://a:1", token="abc\r\nX-Injected: 1")
    sandbox = RemoteSandbox("http://a:1")
    with pytest.raises(ConfigError):
        await sandbox.run("1", max_output_characters=-1)
    await sandbox.close()


async def test_session_type(servers: tuple[ServerProcess, ...]) -> None:
    async with RemoteSandbox(servers[0].url) as sandbox:
        session = await sandbox.open_session()
        assert isinstance(session, RemoteSession) and len(session.session_id) == 32
        await session.close()
        await session.close()  # idempotent


async def test_events_are_logged_without_code_or_output(
    servers: tuple[ServerProcess, ...], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tir_agent.sandbox.remote")
    capture = LogCapture()
    old = structlog.get_config()
    structlog.configure(processors=[capture])
    try:
        async with RemoteSandbox(servers[0].url) as sandbox, sandbox.session() as s:
            await s.run("secret_code = 'VISIBLE'\nprint(secret_code)")
            await s._sandbox._delete(s._server, s.session_id)  # the server forgets it
            await s.run("print('VISIBLE')")
            await s.run("1")
    finally:
        structlog.configure(**old)
    events = [(e["event"], e["log_level"]) for e in capture.entries]
    assert events == [
        ("remote.session.start", "info"),
        ("remote.session.lost", "warning"),
        ("remote.session.start", "info"),
        ("remote.session.stop", "info"),
        ("remote.sandbox.stop", "info"),
    ]
    assert "VISIBLE" not in repr(capture.entries)
    assert capture.entries[2]["restarts"] == 1


async def test_code_over_the_servers_size_limit_is_a_refused_execution(
    servers: tuple[ServerProcess, ...],
) -> None:
    """A 413 is the model's problem, shown to it like any refused execution: it does not end
    the caller's work, and the session keeps its state (the code never ran)."""
    huge = "#" * (17 * 1024 * 1024)  # over the server's 16 MiB default limit
    async with RemoteSandbox(servers[0].url) as sandbox, sandbox.session() as s:
        await s.run("kept = 1")
        r = await s.run(huge)
        assert (r.status, r.state, r.reason, r.stdout) == ("error", "kept", "too_large", "")
        assert r.stderr.startswith("This code was not run: it is larger than the sandbox server")
        assert "body_too_large" in r.stderr and "--max-body-bytes" in r.stderr
        assert (await s.run("kept")).stdout == "1\n"  # the session is still there
        assert s.executions == 2
        r = await sandbox.run(huge)  # one-off runs too
        assert (r.status, r.reason) == ("error", "too_large")
        with pytest.raises(SandboxServiceError, match="422") as caught:  # other refusals raise
            await s.run("1", timeout=10**6)
        assert caught.value.status_code == 422


async def test_ipython_cells_run_on_the_server_as_in_a_local_session(
    servers: tuple[ServerProcess, ...],
) -> None:
    """``ipython`` and ``traceback_verbosity`` reach the server: the same cells give what a
    LocalSession gives them."""
    from tir_agent.sandbox.local import LocalSandbox

    cells: list[tuple[str, dict[str, object]]] = [
        ("x = 5\nx", {"ipython": True}),
        ("x", {}),  # plain Python: no value shown
        ("1/0", {"ipython": True}),
        ("1/0", {"ipython": True, "traceback_verbosity": "Minimal"}),
        ("1/0", {}),
    ]
    async with RemoteSandbox(servers[0].url) as remote, LocalSandbox(preload=()) as local:
        rs, ls = await remote.open_session(), await local.open_session()
        for code, options in cells:
            r = await rs.run(code, **options)  # type: ignore[arg-type]
            expected = await ls.run(code, **options)  # type: ignore[arg-type]
            assert (r.status, r.stdout, r.stderr) == (
                expected.status,
                expected.stdout,
                expected.stderr,
            ), (code, options)
        with pytest.raises(ConfigError, match="ipython=True"):
            await rs.run("1", traceback_verbosity="Minimal")
        with pytest.raises(ConfigError, match="not one of"):
            await rs.run("1", ipython=True, traceback_verbosity="Loud")  # type: ignore[arg-type]
        await rs.close()
        await ls.close()
