"""Hard timeouts that stop whatever the cell started, keep its output and (protected) the state."""

from __future__ import annotations

import time

import pytest

from tir_agent.sandbox.local import LocalSandbox
from tir_agent.sandbox.protocol import LOST_NOTE, ROLLED_BACK_NOTE

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.mark.slow
async def test_timeout_keeps_partial_output_and_rolls_back(protected: LocalSandbox) -> None:
    async with protected.session() as s:
        await s.run("x = 1")
        started = time.monotonic()
        r = await s.run(
            "import sys\nx = 2\nprint('before', flush=True)\nprint('warn', file=sys.stderr)\nwhile True: pass",
            timeout=1,
        )
        assert time.monotonic() - started < 3
        assert (r.status, r.reason, r.state) == ("timeout", "timeout", "rolled_back")
        assert r.stdout == "before\n"
        assert r.stderr == "warn\nExecution timed out after 1 seconds\n" + ROLLED_BACK_NOTE
        assert 1 <= r.duration < 3
        assert (await s.run("x")).stdout == "1\n"


@pytest.mark.slow
async def test_timeout_text_writes_the_value_as_configured(protected: LocalSandbox) -> None:
    r = await protected.run("import time\ntime.sleep(5)", timeout=0.5)
    assert r.stderr.startswith("Execution timed out after 0.5 seconds\n")
    r = await protected.run("import time\ntime.sleep(5)", timeout=1.0)
    assert r.stderr.startswith("Execution timed out after 1 seconds\n")


async def test_state_notes_can_be_switched_off() -> None:
    async with LocalSandbox(preload=(), state_notes=False) as sandbox:
        r = await sandbox.run("while True: pass", timeout=0.3)
        assert r.stderr == "Execution timed out after 0.3 seconds\n" and r.state == "rolled_back"


LOOPS = {
    "busy": "while True: pass",
    "signals ignored": (
        "import signal\nfor sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP):\n"
        "    signal.signal(sig, signal.SIG_IGN)\nwhile True:\n    try:\n        pass\n    except BaseException:\n        pass"
    ),
    "catches everything": "while True:\n    try:\n        while True: pass\n    except BaseException:\n        pass",
    "sleep in C": "import time\ntime.sleep(100)",
    "numpy": "import numpy as np\na = np.ones((3000, 3000))\nwhile True: a = a @ a",
    "threads": (
        "import threading\ndef spin():\n    while True: pass\n"
        "for _ in range(3): threading.Thread(target=spin).start()\nspin()"
    ),
    "child processes": (
        "import subprocess, os\nfor _ in range(3): subprocess.Popen(['sleep', '100'])\n"
        "pid = os.fork()\nif pid == 0:\n    os.setsid()\n    while True: pass\nwhile True: pass"
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(LOOPS))
async def test_every_kind_of_runaway_is_stopped(sandbox: LocalSandbox, kind: str) -> None:
    async with sandbox.session() as s:
        await s.run("kept = 'yes'")
        started = time.monotonic()
        r = await s.run(LOOPS[kind], timeout=1)
        assert time.monotonic() - started < 4, kind
        assert r.status == "timeout" and "Execution timed out after 1 seconds\n" in r.stderr
        if sandbox.config.protect_state:
            assert r.state == "rolled_back"
        else:
            assert r.state in ("kept", "lost")
            assert (LOST_NOTE in r.stderr) == (r.state == "lost")
        # nothing the cell started is left: the session's processes are back to normal
        r = await s.run(
            "import os, subprocess\nout = subprocess.run(['ps', '-eo', 'uid,args'], capture_output=True, text=True).stdout\n"
            "uid = str(os.getuid())\nsum(1 for line in out.splitlines() if line.split()[0] == uid and 'sleep' in line)"
        )
        assert r.stdout == "0\n"
        r = await s.run("kept")
        expected = "'yes'\n" if r.status == "completed" else None
        if sandbox.config.protect_state or expected:
            assert r.stdout == "'yes'\n"


async def test_fast_mode_soft_interrupt_keeps_state(fast: LocalSandbox) -> None:
    async with fast.session() as s:
        await s.run("x = 1")
        r = await s.run("import time\nx = 2\ntime.sleep(100)", timeout=0.5)
        assert (r.status, r.state) == ("timeout", "kept")
        assert r.stderr == "Execution timed out after 0.5 seconds\n"
        assert (
            await s.run("x")
        ).stdout == "2\n"  # the interpreter survived with the cell's effects


async def test_fast_mode_hard_kill_loses_state_and_says_so(fast: LocalSandbox) -> None:
    async with fast.session() as s:
        await s.run("x = 1")
        r = await s.run(LOOPS["signals ignored"], timeout=0.5)
        assert (r.status, r.state) == ("timeout", "lost")
        assert r.stderr == "Execution timed out after 0.5 seconds\n" + LOST_NOTE
        r = await s.run("x")
        assert "NameError" in r.stderr
        assert (await s.run("import numpy\n1 + 1")).stdout == "2\n"


async def test_session_works_after_many_timeouts(protected: LocalSandbox) -> None:
    async with protected.session() as s:
        await s.run("n = 0")
        for _ in range(5):
            r = await s.run("n += 1\nwhile True: pass", timeout=0.1)
            assert r.state == "rolled_back"
        assert (await s.run("n")).stdout == "0\n"
