"""``tir-agent doctor --sandbox-url``: remote sandbox servers checked for real (reachable, API
version, token, a stateful session, protections), and ``RemoteSandbox.health()``."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from tests.remote.apps import serve_app
from tests.servers import free_port, start_server
from tir_agent.doctor import check_sandbox_servers, run_doctor
from tir_agent.errors import SandboxError
from tir_agent.sandbox.remote import RemoteSandbox

pytestmark = pytest.mark.slow


async def test_health_reports_each_server() -> None:
    with start_server("preload=[]", "--max-sessions", "7") as a:
        async with RemoteSandbox(a.url) as sandbox, sandbox.session():
            (health,) = (await sandbox.health()).values()
    assert health.status == "healthy" and health.version == 1
    assert health.sessions == 1 and health.max_sessions == 7
    assert set(health.protections) >= {"network", "filesystem", "seccomp"}


async def test_health_names_a_server_that_cannot_be_reached() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with RemoteSandbox(url) as sandbox:
        with pytest.raises(SandboxError, match=f"sandbox server {url} cannot be reached"):
            await sandbox.health()


async def test_a_live_server_passes_and_shows_its_protections() -> None:
    with start_server("preload=[]") as server:
        [check] = await check_sandbox_servers([server.url])
    assert check.name == f"Sandbox server {server.url}"
    assert check.status in ("pass", "warn") and not check.failed
    assert "API v1" in check.detail and "a session ran 2 cells" in check.detail
    assert "protections: all active" in check.detail or "missing" in check.detail


async def test_dead_wrong_token_and_wrong_service_fail_with_a_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TIR_AGENT_SANDBOX_TOKEN", "wrong")
    dead = f"http://127.0.0.1:{free_port()}"
    with start_server("preload=[]", token="s3cret") as guarded, serve_app("plain") as plain:
        checks = await check_sandbox_servers([dead, guarded.url, plain])
    assert [c.status for c in checks] == ["fail", "fail", "fail"]
    assert all(c.failed and "tir-agent sandbox serve" in c.fix for c in checks)
    assert "cannot be reached" in checks[0].detail
    assert "token" in checks[1].detail
    assert "not a tir-agent sandbox server" in checks[2].detail


def test_doctor_command_fails_on_a_dead_sandbox_server() -> None:
    """The whole command: a dead --sandbox-url is a failed required check (exit status 1); the
    model endpoint is dead too here, so nothing else is probed."""
    out = io.StringIO()
    dead = f"http://127.0.0.1:{free_port()}"
    code = run_doctor(
        base_url=f"http://127.0.0.1:{free_port()}/v1",
        model="local",
        sandbox_urls=[dead],
        console=Console(file=out, width=250, color_system=None),
        progress=lambda _: None,
    )
    text = out.getvalue()
    assert code == 1
    assert f"Sandbox server {dead}" in text and "Sandbox server" in text.split("failed:")[1]
