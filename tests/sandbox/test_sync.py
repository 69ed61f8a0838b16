"""The synchronous facade, in plain code and inside a running event loop (as in Jupyter)."""

from __future__ import annotations

import asyncio

from tir_agent.sandbox.sync import SyncSandbox


def test_sync_facade_in_plain_code() -> None:
    with SyncSandbox(preload=()) as sandbox:
        assert "network" in sandbox.protections.active() or sandbox.protections.mechanism != "bwrap"
        with sandbox.session() as s:
            s.run("x = 41")
            r = s.run("x + 1", timeout=5, max_output_characters=100)
            assert (r.status, r.stdout) == ("completed", "42\n")
        assert s.closed
        assert sandbox.run("print(2)").stdout == "2\n"


async def test_sync_facade_inside_a_running_event_loop() -> None:
    asyncio.get_running_loop()  # a loop is running here, as in a notebook cell
    sandbox = SyncSandbox(preload=())
    try:
        s = sandbox.session()
        s.run("y = 2")
        assert s.run("y * 3").stdout == "6\n"
        s.close()
    finally:
        sandbox.close()
