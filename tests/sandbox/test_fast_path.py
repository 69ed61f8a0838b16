"""Fast mode's two hops: the runner answers short cells itself; the supervisor takes over cells
that run long, leave processes behind, lose their token or die while answering."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.sandbox.conftest import LIGHT, marker, processes_with
from tir_agent.sandbox.local import LocalSandbox, LocalSession
from tir_agent.sandbox.protocol import LOST_NOTE

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def box() -> AsyncIterator[LocalSandbox]:
    async with LocalSandbox(protect_state=False, env={"MARK": marker()}, **LIGHT) as sandbox:
        yield sandbox


def host_pid(sandbox: LocalSandbox, session: LocalSession) -> int:
    """The host's pid of the session's supervisor (``session.pid`` is its pid in the sandbox)."""
    for pid in processes_with(sandbox.config.env["MARK"]):
        try:
            with open(f"/proc/{pid}/status") as f:
                nspid = next(line for line in f if line.startswith("NSpid:")).split()[1:]
        except (OSError, StopIteration):
            continue
        if len(nspid) > 1 and int(nspid[-1]) == session.pid:
            return pid
    raise AssertionError("supervisor not found")


def wake_ups(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return sum(int(line.split()[1]) for line in f if "ctxt_switches" in line)


async def test_short_cells_do_not_wake_the_supervisor(box: LocalSandbox) -> None:
    async with box.session() as s:
        await s.run("print(1)")
        supervisor = host_pid(box, s)
        before = wake_ups(supervisor)
        for i in range(100):
            r = await s.run(f"print({i})")
            assert (r.status, r.stdout) == ("completed", f"{i}\n")
        # three hops woke it at least twice per cell (start, done): 200 here. Now the runner
        # answers; a cell delayed past the 5 ms takeover on a loaded machine costs a few.
        assert wake_ups(supervisor) - before < 50


async def test_a_long_cell_is_taken_over_with_its_output(box: LocalSandbox) -> None:
    async with box.session() as s:
        supervisor = host_pid(box, s)
        before = wake_ups(supervisor)
        r = await s.run(
            "import os, sys, time\nprint('a')\nos.write(2, b'e1 ')\ntime.sleep(0.05)\n"
            "print('b')\nsys.stderr.write('e2')\n7"
        )
        assert (r.status, r.stdout, r.stderr) == ("completed", "a\nb\n7\n", "e1 e2")
        assert wake_ups(supervisor) > before
        r = await s.run("import time\ntime.sleep(0.02)\nprint('é' * 30)", max_output_characters=10)
        assert (r.stdout, r.stdout_truncated) == ("é" * 10 + "<output cut>", True)


async def test_a_timeout_shorter_than_the_takeover_delay(box: LocalSandbox) -> None:
    async with box.session() as s:
        await s.run("x = 1")
        started = time.monotonic()
        r = await s.run("while True:\n    pass", timeout=0.002)
        assert time.monotonic() - started < 2
        assert (r.status, r.state) == ("timeout", "kept")
        assert r.stderr == "Execution timed out after 0.002 seconds\n"
        assert (await s.run("x")).stdout == "1\n"


@pytest.mark.parametrize(
    "code",
    [
        "import subprocess\nsubprocess.Popen(['sleep', '987'])\nprint('x')",
        "import os, subprocess\nif os.fork() == 0:\n    os.setsid()\n"
        "    subprocess.Popen(['sleep', '987'])\n    os._exit(0)\nos.wait()\nprint('x')",
    ],
    ids=["child", "orphan"],
)
async def test_a_short_cell_that_leaves_processes_is_swept(box: LocalSandbox, code: str) -> None:
    async with box.session() as s:
        await s.run("kept = 1")
        r = await s.run(code)
        assert (r.status, r.stdout) == ("completed", "x\n")
        assert processes_with("sleep\x00987") == []
        assert (await s.run("kept")).stdout == "1\n"


async def test_a_cell_that_takes_its_own_token_still_gets_its_answer(box: LocalSandbox) -> None:
    async with box.session() as s:
        r = await s.run("import os\nprint(len(os.read(7, 4096)))")  # fd 7: the token pipe
        assert (r.status, r.stdout) == ("completed", "32\n")
        assert (await s.run("print('next')")).stdout == "next\n"


async def test_a_runner_dying_right_after_its_cell_is_answered(box: LocalSandbox) -> None:
    """A thread kills the interpreter as soon as the runner takes its token, i.e. while the
    runner drains and answers: the host gets an answer either way, never silence."""
    code = (
        "import fcntl, os, struct, termios, threading\n"
        "def watch():\n"
        "    while struct.unpack('i', fcntl.ioctl(7, termios.FIONREAD, b'\\0' * 4))[0]:\n"
        "        pass\n"
        "    os._exit(3)\n"
        "threading.Thread(target=watch).start()\n"
        "print('done')"
    )
    async with box.session() as s:
        for _ in range(5):
            await s.run("kept = 1")
            started = time.monotonic()
            r = await s.run(code, timeout=2)
            assert time.monotonic() - started < 3
            if r.status == "completed":  # answered before the thread struck
                assert r.stdout == "done\n"
            else:
                assert (r.status, r.state, r.reason) == ("error", "lost", "exit")
                assert r.stderr.endswith(
                    "The interpreter exited with code 3 during this execution.\n" + LOST_NOTE
                )
            await asyncio.sleep(0.05)
            r = await s.run("print('alive')")
            assert (r.status, r.stdout) == ("completed", "alive\n")


@pytest.mark.slow
async def test_cells_ending_around_the_takeover_are_answered_once_with_their_output(
    box: LocalSandbox,
) -> None:
    """Cells of 3.5-6.5 ms straddle the supervisor's takeover (5 ms): whichever side wins the
    token, each result is the cell's own and complete, and the supervisor is left owning no
    cell (a cell it still believed running would time out, with its 0.5 s limit, in the middle
    of later cells, or its drains would steal their output)."""
    async with box.session() as s:
        started = time.monotonic()
        for i in range(200):
            d = 0.0035 + 0.003 * (i * 7919 % 200) / 200
            code = (
                f"import os, time\nt = time.monotonic() + {d}\nwhile time.monotonic() < t:\n"
                f"    pass\nprint({i})\n_ = os.write(2, b'e{i}')"
            )
            if i % 20 == 19:
                code = f"print('a{i}', flush=True)\n{code}\ntime.sleep(0.03)\nprint('b')"
            r = await s.run(code, timeout=0.5)
            out = f"a{i}\n{i}\nb\n" if i % 20 == 19 else f"{i}\n"
            assert (r.status, r.stdout, r.stderr) == ("completed", out, f"e{i}")
        assert time.monotonic() - started > 0.5
