"""The sandbox on uvloop (the event loop of ``tir-agent sandbox serve``), not only asyncio's."""

from __future__ import annotations

import uvloop

from tir_agent.sandbox.local import LocalSandbox


async def _cells() -> list[str]:
    async with LocalSandbox(preload=()) as sandbox, sandbox.session() as s:
        first = await s.run("x = 41")
        second = await s.run("x + 1")
        slow = await s.run("while True: pass", timeout=0.5)
        after = await s.run("x")
        return [first.status, second.stdout, slow.status, slow.state, after.stdout]


def test_sessions_run_on_uvloop() -> None:
    """uvloop's transports are not asyncio.Transport subclasses; the session channel works
    with them all the same, timeouts included."""
    assert uvloop.run(_cells()) == ["completed", "42\n", "timeout", "rolled_back", "41\n"]
