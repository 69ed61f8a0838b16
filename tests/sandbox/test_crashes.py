"""Cells that kill their interpreter: the result says so; protected sessions roll back."""

from __future__ import annotations

import pytest

from tir_agent.sandbox.local import LocalSandbox
from tir_agent.sandbox.protocol import LOST_NOTE, ROLLED_BACK_NOTE

pytestmark = pytest.mark.asyncio(loop_scope="module")

SEGFAULT = "import ctypes\nctypes.string_at(0)"


async def test_os_exit_rolls_back(protected: LocalSandbox) -> None:
    async with protected.session() as s:
        await s.run("x = 1")
        r = await s.run("import os\nx = 2\nprint('bye', flush=True)\nos._exit(3)")
        assert (r.status, r.reason, r.state) == ("error", "exit", "rolled_back")
        assert r.stdout == "bye\n"
        assert (
            r.stderr
            == "The interpreter exited with code 3 during this execution.\n" + ROLLED_BACK_NOTE
        )
        assert (await s.run("x")).stdout == "1\n"


async def test_segfault_rolls_back(protected: LocalSandbox) -> None:
    async with protected.session() as s:
        await s.run("x = 1")
        r = await s.run("x = 2\n" + SEGFAULT)
        assert (r.status, r.reason, r.state) == ("error", "crash", "rolled_back")
        assert r.stderr == "The interpreter crashed (signal SIGSEGV).\n" + ROLLED_BACK_NOTE
        assert (await s.run("x")).stdout == "1\n"


@pytest.mark.slow
async def test_memory_exhaustion_is_an_error_that_keeps_the_session(sandbox: LocalSandbox) -> None:
    async with sandbox.session() as s:
        await s.run("x = 1")
        r = await s.run("x = 2\nblob = bytearray(50 * 10**9)")
        assert (r.status, r.reason, r.state) == ("error", "memory", "kept")
        assert r.stderr.endswith("MemoryError\n")
        r = await s.run("chunks = []\nwhile True:\n    chunks.append(bytearray(10**9))")
        assert r.status == "error" and r.reason == "memory"
        assert (await s.run("del chunks\nx")).stdout == "2\n"


async def test_sys_exit_is_an_ordinary_error(sandbox: LocalSandbox) -> None:
    async with sandbox.session() as s:
        await s.run("x = 1")
        r = await s.run("import sys\nsys.exit()")
        assert (r.status, r.reason, r.state) == ("error", "exit", "kept")
        assert r.stderr == "Traceback (most recent call last):\n    sys.exit()\nSystemExit\n"
        assert (await s.run("x")).stdout == "1\n"


async def test_fast_mode_crash_loses_state_and_says_so(fast: LocalSandbox) -> None:
    async with fast.session() as s:
        await s.run("x = 1")
        r = await s.run(SEGFAULT)
        assert (r.status, r.reason, r.state) == ("error", "crash", "lost")
        assert r.stderr == "The interpreter crashed (signal SIGSEGV).\n" + LOST_NOTE
        assert "NameError" in (await s.run("x")).stderr
        r = await s.run("import os\nos._exit(4)")
        assert r.stderr == "The interpreter exited with code 4 during this execution.\n" + LOST_NOTE
        assert (await s.run("y = 5\ny")).stdout == "5\n"


async def test_crash_after_timeout_and_back(protected: LocalSandbox) -> None:
    async with protected.session() as s:
        await s.run("acc = []")
        for code in (
            "acc.append(1)",
            SEGFAULT,
            "acc.append(2)",
            "while True: pass",
            "acc.append(3)",
        ):
            await s.run(code, timeout=0.3)
        assert (await s.run("acc")).stdout == "[1, 2, 3]\n"
