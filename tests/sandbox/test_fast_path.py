"""Two hops, in both modes: the runner answers short cells itself; the supervisor takes over
cells that run long, leave processes behind, lose their token or die while answering."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.sandbox.conftest import LIGHT, marker, processes_with
from tir_agent.sandbox.local import LocalSandbox, LocalSession
from tir_agent.sandbox.protocol import LOST_NOTE, ROLLED_BACK_NOTE

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fast() -> AsyncIterator[LocalSandbox]:
    async with LocalSandbox(protect_state=False, env={"MARK": marker()}, **LIGHT) as sandbox:
        yield sandbox


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def protected() -> AsyncIterator[LocalSandbox]:
    async with LocalSandbox(protect_state=True, env={"MARK": marker()}, **LIGHT) as sandbox:
        yield sandbox


@pytest.fixture(params=["fast", "protected"])
def box(request: pytest.FixtureRequest) -> LocalSandbox:
    """Both modes: protected runners (forks of the holder) answer their cells too."""
    sandbox: LocalSandbox = request.getfixturevalue(request.param)
    return sandbox


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


def bytes_read(pid: int) -> int:
    """What ``pid`` read through ``read`` calls: the output pipes, among other things (not its
    sockets: ``recv`` is not counted). Its main thread's count: the process's would include
    the reads of the children it reaped (in protected mode, old holders that answered cells)."""
    with open(f"/proc/{pid}/task/{pid}/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


async def test_short_cells_are_answered_by_their_runner(box: LocalSandbox) -> None:
    """The supervisor does not read a short cell's output: the runner drains it and answers
    (three hops: the supervisor read all 1.2 MB below)."""
    async with box.session() as s:
        await s.run("print(1)")
        supervisor = host_pid(box, s)
        before = bytes_read(supervisor)
        for i in range(24):
            r = await s.run(f"print({i} * 'x' + 50_000 * 'y')", max_output_characters=60_000)
            assert (r.status, r.stdout) == ("completed", i * "x" + 50_000 * "y" + "\n")
        # a cell delayed past the 5 ms takeover on a loaded machine is read by the supervisor
        assert bytes_read(supervisor) - before < 12 * 50_000


async def test_short_cells_do_not_wake_the_supervisor(fast: LocalSandbox) -> None:
    """Fast mode: nor is it woken (protected mode: it hears of each new runner and holder)."""
    box = fast
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
        r = await s.run("x = 2\nwhile True:\n    pass", timeout=0.002)
        assert time.monotonic() - started < 2
        if box.config.protect_state:
            assert (r.status, r.state) == ("timeout", "rolled_back")
            assert r.stderr == "Execution timed out after 0.002 seconds\n" + ROLLED_BACK_NOTE
            assert (await s.run("x")).stdout == "1\n"
        else:  # the soft interrupt: the interpreter and what the cell did are kept
            assert (r.status, r.state) == ("timeout", "kept")
            assert r.stderr == "Execution timed out after 0.002 seconds\n"
            assert (await s.run("x")).stdout == "2\n"


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
                # protected: the supervisor took the cell over (it ran past 5 ms) before the
                # thread struck, so the holder still has the state from before it
                lost = r.state == "lost" or not box.config.protect_state
                assert (r.status, r.state, r.reason) == (
                    "error",
                    "lost" if lost else "rolled_back",
                    "exit",
                )
                assert r.stderr.endswith(
                    "The interpreter exited with code 3 during this execution.\n"
                    + (LOST_NOTE if lost else ROLLED_BACK_NOTE)
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
            assert (r.status, r.stdout, r.stderr) == ("completed", out, f"e{i}"), r
        assert time.monotonic() - started > 0.5


@pytest.mark.parametrize(
    "steal",
    [
        "_ = os.read(7, 4096)",  # the token: the supervisor finds no cell to take over
        # the takeover timer: the supervisor is never woken
        "import ctypes\nctypes.CDLL(None).timerfd_settime(9, 0, (ctypes.c_long * 4)(), None)",
    ],
    ids=["token", "timer"],
)
async def test_a_cell_that_hides_from_its_supervisor_still_times_out(
    box: LocalSandbox, steal: str
) -> None:
    """The host asks the supervisor to time out a cell it has had no answer to 1 s past its
    timeout; before, such a cell ran until the host gave up on the whole session (timeout +
    10 s: the session was lost)."""
    async with box.session() as s:
        await s.run("x = 1")
        started = time.monotonic()
        r = await s.run(f"import os\nx = 2\n{steal}\nwhile True:\n    pass", timeout=0.5)
        assert time.monotonic() - started < 5
        assert (r.status, r.reason) == ("timeout", "timeout"), r
        assert r.stderr.startswith("Execution timed out after 0.5 seconds\n")
        if box.config.protect_state:
            assert r.state == "rolled_back"
            assert (await s.run("x")).stdout == "1\n"
        else:  # the interpreter was killed: a fresh one
            assert r.state == "lost"
            r = await s.run("'x' in globals()")
            assert (r.stdout, r.state) == ("False\n", "kept"), r
