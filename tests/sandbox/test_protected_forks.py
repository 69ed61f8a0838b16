"""Which copies of the interpreter protected mode makes. A session's first cell runs in its
holder, without a copy: the state before that cell is a fresh interpreter, which a new holder is
again. So a first cell that times out or crashes rolls back like any other, and later cells run
in runners, forked as soon as a cell ends or (``fork_ahead=False``) when the next one comes."""

from __future__ import annotations

import asyncio
import contextlib
import os

import pytest

from tests.sandbox.conftest import LIGHT
from tir_agent.sandbox.local import LocalSandbox
from tir_agent.sandbox.protocol import ROLLED_BACK_NOTE

pytestmark = pytest.mark.asyncio(loop_scope="module")

SESSION_PROCESSES = (
    "import os\n"
    "mine = 0\n"
    "for p in os.listdir('/proc'):\n"
    "    try:\n"
    "        mine += p.isdigit() and os.stat(f'/proc/{p}').st_uid == os.getuid()\n"
    "    except OSError:\n"
    "        pass  # a process of another session, gone meanwhile\n"
    "print(mine)"
)
"""How many processes run as the session's uid (its holder and runner; not its supervisor)."""


async def test_the_first_cell_runs_in_the_holder_and_later_ones_in_runners(
    protected: LocalSandbox,
) -> None:
    async with protected.session() as s:
        # the holder runs the first cell itself: it is the session's only process
        assert (await s.run(SESSION_PROCESSES)).stdout == "1\n"
        # then the holder keeps that state and a runner, its copy, runs the next cell
        assert (await s.run(SESSION_PROCESSES)).stdout == "2\n"
        assert (await s.run(SESSION_PROCESSES)).stdout == "2\n"


FAILURES = {
    "timeout": ("while True: pass", "timeout", "timeout", "Execution timed out after 1 seconds\n"),
    "exit": ("import os\nos._exit(3)", "error", "exit", ""),
    "segfault": ("import ctypes\nctypes.string_at(0)", "error", "crash", ""),
}


@pytest.mark.parametrize("failure", sorted(FAILURES))
async def test_a_failed_first_cell_rolls_back_to_a_fresh_interpreter(
    protected: LocalSandbox, failure: str
) -> None:
    code, status, reason, notice = FAILURES[failure]
    async with protected.session() as s:
        r = await s.run(f"x = 2\nprint('partial', flush=True)\n{code}", timeout=1)
        assert (r.status, r.reason, r.state) == (status, reason, "rolled_back")
        assert r.stdout == "partial\n"
        if notice:
            assert r.stderr == notice + ROLLED_BACK_NOTE
        assert r.stderr.endswith(ROLLED_BACK_NOTE)
        r = await s.run("'x' in globals()")
        assert (r.stdout, r.state, r.stderr) == ("False\n", "kept", "")
        # the fresh interpreter's first cell is again one that can roll back, and after it
        # the runners roll back to the state it left
        r = await s.run("import os\nos._exit(1)")
        assert r.state == "rolled_back"
        await s.run("x = 1")
        r = await s.run("x = 5\nimport os\nos._exit(1)")
        assert r.state == "rolled_back"
        assert (await s.run("x")).stdout == "1\n"


async def test_a_failed_first_cell_is_undone_with_its_files(protected: LocalSandbox) -> None:
    """With sessions' own file systems, the fresh interpreter comes with a fresh one: the first
    cell's files go too (a later cell's rollback keeps the files it wrote)."""
    assert protected.protections.session_files
    exists = "import os\nprint(os.path.exists('kept.txt'), os.path.exists('/tmp/kept.txt'))"
    async with protected.session() as s:
        code = "open('kept.txt', 'w').write('hi')\nopen('/tmp/kept.txt', 'w').write('hi')\n"
        r = await s.run(code + "while True: pass", timeout=1)
        assert r.state == "rolled_back"
        assert (await s.run(exists)).stdout == "False False\n"
        r = await s.run(code + "while True: pass", timeout=1)
        assert r.state == "rolled_back"
        assert (await s.run(exists)).stdout == "True True\n"


@pytest.mark.parametrize("failure", ["timeout", "exit"])
async def test_a_rolled_back_cell_takes_back_its_reads_of_open_files(
    protected: LocalSandbox, failure: str
) -> None:
    """Files a cell opened stay open in the holder, and a runner shares them (a fork shares open
    files, offsets included): the reads and seeks of a cell that is rolled back are undone, so
    a file object reads on where the state before the cell left it."""
    end = "while True: pass" if failure == "timeout" else "import os\nos._exit(1)"
    async with protected.session() as s:
        await s.run("open('d.txt', 'w').write(''.join(f'line{i}\\n' for i in range(100000)))")
        await s.run("f = open('d.txt')\nf.readline()\nraw = open('d.txt', 'rb', buffering=0)")
        assert (await s.run("raw.read(5)")).stdout == "b'line0'\n"
        r = await s.run(
            f"for _ in range(50000): f.readline()\nraw.read(100000)\nraw.seek(7)\n{end}",
            timeout=1,
        )
        assert r.state == "rolled_back"
        r = await s.run("print(repr(f.readline()), f.tell(), raw.read(6), raw.tell())")
        assert r.stdout == "'line1\\n' 12 b'\\nline1' 11\n"


async def test_a_thread_left_by_the_first_cell_goes_quiet(protected: LocalSandbox) -> None:
    """The holder that committed its first cell writes nowhere, as a committed runner."""
    async with protected.session() as s:
        await s.run(
            "import threading, time\n"
            "def chatter():\n"
            "    while True:\n"
            "        print('noise', flush=True)\n"
            "        time.sleep(0.01)\n"
            "threading.Thread(target=chatter, daemon=True).start()\n"
            "time.sleep(0.05)"
        )
        await asyncio.sleep(0.2)
        r = await s.run("import time\ntime.sleep(0.2)\nprint('clean')")
        assert (r.stdout, r.stderr, r.state) == ("clean\n", "", "kept")


async def test_threads_a_cell_leaves_do_not_run_in_later_cells(protected: LocalSandbox) -> None:
    """A fork copies only the thread that forks: a later cell runs in a copy of the holder
    without the threads an earlier cell left running, and sees what they had done by the end
    of their cell (docs/sandbox.md, Known limits)."""
    async with protected.session() as s:
        await s.run("pass")  # later cells run in runners
        await s.run(
            "import threading, time\n"
            "done = []\n"
            "started = threading.Event()\n"
            "def work():\n"
            "    done.append(0)\n"
            "    started.set()\n"
            "    for i in range(1, 100):\n"
            "        time.sleep(0.01)\n"
            "        done.append(i)\n"
            "t = threading.Thread(target=work)\n"
            "t.start()\n"
            "started.wait()"
        )
        await asyncio.sleep(0.2)
        # (with the thread running, join() would wait until it has all 100)
        r = await s.run("t.join()\nprint(t.is_alive(), len(done) < 100)")
        assert (r.stdout, r.stderr) == ("False True\n", "")


def session_processes(uid: int) -> int:
    """How many processes run as ``uid`` (host view)."""
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):  # (gone meanwhile)
                count += os.stat(f"/proc/{entry}").st_uid == uid
    return count


async def settled(uid: int, expected: int) -> int:
    """The session's process count once it is ``expected`` (or after 3 s)."""
    for _ in range(150):
        if session_processes(uid) == expected:
            break
        await asyncio.sleep(0.02)
    return session_processes(uid)


@pytest.mark.parametrize("ahead", [True, False])
async def test_the_next_runner_is_forked_ahead_or_on_demand(ahead: bool) -> None:
    async with LocalSandbox(protect_state=True, fork_ahead=ahead, **LIGHT) as box:
        async with box.session() as s:
            uid = int((await s.run("import os\nprint(os.getuid())")).stdout)
            # between cells: the holder, and the runner of the next cell if forked ahead
            assert await settled(uid, 1 + ahead) == 1 + ahead
            await s.run("x = 1")
            assert await settled(uid, 1 + ahead) == 1 + ahead
            r = await s.run("import time\nx = 2\ntime.sleep(5)", timeout=0.5)
            assert r.state == "rolled_back"
            assert await settled(uid, 1 + ahead) == 1 + ahead
            assert (await s.run("x")).stdout == "1\n"
        assert await settled(uid, 0) == 0
