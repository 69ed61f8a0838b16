"""SyncRemoteSandbox: the blocking facade for scripts and notebooks, against a real server."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from tests.servers import start_server
from tir_agent.errors import SandboxClosedError
from tir_agent.sandbox.remote import RemoteSandbox
from tir_agent.sandbox.sync import SyncRemoteSandbox


@pytest.mark.slow
def test_sync_remote_sandbox_sessions_and_runs() -> None:
    with start_server("preload=[]") as server, SyncRemoteSandbox(server.url) as sandbox:
        assert sandbox.urls == [server.url]
        with sandbox.session() as s:
            s.run("x = 41")
            assert s.run("x + 1").stdout == "42\n"
            assert not s.closed
        assert s.closed
        with pytest.raises(SandboxClosedError):
            s.run("x")
        result = sandbox.run("print(2)", timeout=5, max_output_characters=100)
        assert result.status == "completed" and result.stdout == "2\n"


@pytest.mark.slow
def test_remote_sandbox_used_from_one_event_loop_after_another() -> None:
    """A script calling ``asyncio.run`` twice with the same sandbox and session (the connections
    of the first loop are dropped, the session lives on the server)."""
    with start_server("preload=[]") as server:
        sandbox = RemoteSandbox(server.url)
        session = asyncio.run(sandbox.open_session())
        asyncio.run(session.run("x = 41"))
        assert asyncio.run(session.run("x + 1")).stdout == "42\n"
        assert uvloop.run(session.run("x + 2")).stdout == "43\n"
        asyncio.run(sandbox.close())
        assert session.closed


@pytest.mark.slow
def test_sync_remote_sandbox_reports_server_health() -> None:
    with (
        start_server("preload=[]") as server,
        SyncRemoteSandbox(server.url) as sandbox,
        sandbox.session(),
    ):
        (health,) = sandbox.health().values()
    assert health.status == "healthy" and health.sessions == 1
