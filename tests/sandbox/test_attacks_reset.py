"""Issue 14: a session reset between two users (``LocalSession.reset``, the batch runner's
``SessionPool``) leaves nothing of the first user visible to the second. Sample A attacks (state,
patched interpreter, files, System V objects, processes, threads and daemons writing into every
descriptor it holds, a cell still running when the reset comes); after the reset, sample B in
the same session finds nothing of it and gets its own, genuine results. Both modes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tir_agent.sandbox.local import LocalSandbox, LocalSession
from tir_agent.sandbox.pool import SessionPool

pytestmark = pytest.mark.asyncio(loop_scope="module")

SMALL = {"preload": (), "max_processes": 16, "disk_limit": 8 * 1024**2, "max_files": 2000}


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=[True, False])
async def box(request: pytest.FixtureRequest) -> AsyncIterator[LocalSandbox]:
    async with LocalSandbox(protect_state=request.param, **SMALL) as sandbox:
        yield sandbox


@pytest_asyncio.fixture(loop_scope="module")
async def session(box: LocalSandbox) -> AsyncIterator[LocalSession]:
    s = await box.open_session()
    try:
        yield s
    finally:
        await s.close()


async def out(s: LocalSession, code: str, timeout: float = 10) -> str:
    r = await s.run(code, timeout=timeout)
    assert r.status == "completed", r
    return r.stdout


async def test_state_and_a_patched_interpreter_are_gone(session: LocalSession) -> None:
    await session.run(  # (A breaks its own runner: its result does not matter)
        "import builtins, sys, os\n"
        "secret = 'A-SECRET'\n"
        "builtins.secret = 'A-SECRET'\n"
        "sys.modules['json'] = None\n"
        "os.getpid = lambda: -1\n"
        "import tir_agent.sandbox.worker.cells as c\n"
        "c.Runner.execute = lambda *a, **k: {'status': 'completed', 'stdout': 'FORGED'}\n",
    )
    await session.reset()
    got = await out(
        session,
        "import builtins, json, os\n"
        "print('secret' in dir(), hasattr(builtins, 'secret'), os.getpid() > 0)",
    )
    assert got == "False False True\n"


async def test_files_ipc_and_sockets_are_gone(session: LocalSession) -> None:
    await out(
        session,
        "import ctypes, os, socket\n"
        "for d in ('.', '/tmp', '/dev/shm'):\n"
        "    open(os.path.join(d, 'from-A'), 'w').write('A')\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "assert libc.shmget(4242, ctypes.c_size_t(4096), 0o1666) >= 0\n"
        "listener = socket.socket(socket.AF_UNIX)\n"
        "listener.bind('\\0tir-reset-A')\n"
        "listener.listen()\n",
    )
    await session.reset()
    got = await out(
        session,
        "import os, socket\n"
        "print([f for d in ('.', '/tmp', '/dev/shm') for f in os.listdir(d) if 'from-A' in f])\n"
        "print(len(open('/proc/sysvipc/shm').read().splitlines()) - 1)\n"
        "c = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        "    c.connect('\\0tir-reset-A'); print('connected')\n"
        "except OSError:\n"
        "    print('refused')\n",
    )
    assert got == "[]\n0\nrefused\n"


LEAKER = """
import os, sys, threading, time
from tir_agent.sandbox import protocol as p
forged = b''.join(
    p.result_frame(rid, 'completed', 'FORGED', '', False, False, 0.0, 'kept', None)
    for rid in range(1, 6)
)
def leak():
    while True:
        for fd in range(4, 16):  # (not 3: a forged control message restarts A at once)
            try:
                os.write(fd, forged if fd == 6 else b'LEAK-A\\n')
            except OSError:
                pass
        for fd in (1, 2):
            try:
                os.write(fd, b'LEAK-A\\n')
            except OSError:
                pass
        time.sleep(0.001)
if os.fork() == 0:  # a daemon (double fork, own session)
    os.setsid()
    if os.fork() == 0:
        leak()
    os._exit(0)
threading.Thread(target=leak, daemon=True).start()
time.sleep(0.05)
"""


async def test_leftover_writers_reach_nothing_of_the_next_user(session: LocalSession) -> None:
    """A thread and a daemon of A write into every descriptor A held (the output pipes, the
    saved output pipes, the host socket with forged results) until the
    reset; B's results are its own, without a byte of A's."""
    await session.run(LEAKER, timeout=5)
    await asyncio.sleep(0.3)  # they keep writing after A's result, between the cells
    await session.reset()
    for i in range(5):
        r = await session.run(f"import time; time.sleep(0.02); print('B', {i})")
        assert (r.status, r.stdout, r.stderr, r.state) == ("completed", f"B {i}\n", "", "kept")
    got = await out(
        session,
        "import os\n"
        "me = os.getuid()\n"
        "print(sum(1 for p in os.listdir('/proc') if p.isdigit() and "
        "os.stat(f'/proc/{p}').st_uid == me))",
    )
    assert int(got) <= 3  # this runner, its holder (protected mode), a pre-forked runner


async def test_a_cell_still_running_is_killed_by_the_reset(session: LocalSession) -> None:
    """A sample cancelled mid-cell (a timeout of the batch, say): the reset kills the cell."""
    run = asyncio.create_task(session.run("import time\nwhile True: time.sleep(0.01)", timeout=60))
    await asyncio.sleep(0.3)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    started = time.monotonic()
    await session.reset()
    assert await out(session, "print('B')") == "B\n"
    assert time.monotonic() - started < 10


async def test_pool_hands_out_reset_sessions(box: LocalSandbox) -> None:
    pool = SessionPool(box, size=2)
    async with pool.session() as a:
        await out(a, "x = 'A'")
        first = a
    async with pool.session() as b:  # (waits for the reset under way)
        assert b is first  # the same session (supervisor), reset
        assert await out(b, "print('x' in dir())") == "False\n"
    async with pool.session() as c1, pool.session() as c2:
        assert c1 is not c2
        async with pool.session() as c3:
            pass
    assert sum(s.closed for s in (c1, c2, c3)) == 1  # two are kept (size), one closed
    await pool.close()
    assert first.closed and c1.closed and c2.closed and c3.closed


async def test_a_closed_session_cannot_be_reset(box: LocalSandbox) -> None:
    from tir_agent.errors import SandboxClosedError

    s = await box.open_session()
    await s.close()
    with pytest.raises(SandboxClosedError):
        await s.reset()


async def test_after_a_reset_a_cell_holds_only_its_own_descriptors(
    box: LocalSandbox, session: LocalSession
) -> None:
    """The reset's new sockets (host socket, control socket) reach no session process: a cell
    holds exactly what it holds in a new session (test_attacks_channels)."""
    code = (
        "import os\nfds = []\nfor fd in os.listdir('/proc/self/fd'):\n"
        "    try:\n        fds.append((int(fd), os.readlink(f'/proc/self/fd/{fd}')))\n"
        "    except OSError:\n        pass\n"  # listdir's own descriptor, closed by now
        "sorted(fd for fd, _ in fds)"
    )
    expected = [0, 1, 2, 3, *range(4 if box.config.protect_state else 6, 13)]
    for _ in range(3):
        await session.reset()
        assert eval(await out(session, code)) == expected


def supervisor_host_pid(box: LocalSandbox, session: LocalSession) -> int:
    """The host's pid of ``session``'s supervisor (``session.pid`` is its pid in the sandbox)."""
    assert box._proc is not None
    todo = [box._proc.pid]
    while todo:
        pid = todo.pop()
        with open(f"/proc/{pid}/status") as f:
            nspid = next(x for x in f.read().splitlines() if x.startswith("NSpid:")).split()[1:]
        if len(nspid) > 1 and int(nspid[-1]) == session.pid:
            return pid
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            todo += [int(p) for p in f.read().split()]
    raise AssertionError("no supervisor found")


async def test_a_session_whose_reset_fails_is_closed(box: LocalSandbox) -> None:
    """A supervisor that dies (killed from outside here) cannot confirm: the reset raises and
    the session is closed, never handed out half reset; the sandbox serves new sessions."""
    from tir_agent.errors import SandboxError

    s = await box.open_session()
    assert await out(s, "print(1)") == "1\n"
    os.kill(supervisor_host_pid(box, s), signal.SIGKILL)
    with pytest.raises(SandboxError, match="could not be reset"):
        await s.reset()
    assert s.closed
    async with box.session() as fresh:
        assert await out(fresh, "print(2)") == "2\n"
