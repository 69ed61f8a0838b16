"""Attacks on the channels between the sandbox's own processes (issue 12, class 1).

A cell runs in a process that holds descriptors of the session's channels: the control channel
to its supervisor (fd 3), the host's session socket (fd 6), the token pipe, the takeover timer
and the output pipes (both modes: runners answer short cells themselves). Nothing a cell writes
there may be believed about anything outside its own session: the supervisor derives who is
talking from the kernel (``SCM_CREDENTIALS``), only ever kills processes below itself, and ends
the session's interpreter (``state="lost"``) when it hears anything inconsistent. The template and the other
sessions carry on, and :attr:`LocalSandbox.restarts` stays 0 (the template never died).

Each test runs in both modes and uses its own small sandbox (nothing preloaded), so a
successful attack cannot spill into other tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.sandbox.conftest import marker, processes_with
from tir_agent.errors import SandboxError
from tir_agent.sandbox.local import LocalSandbox, LocalSession
from tir_agent.sandbox.protocol import LOST_NOTE

pytestmark = [pytest.mark.asyncio(loop_scope="function"), pytest.mark.slow]

BOUNDED = {"preload": (), "max_processes": 16, "memory_limit": 1024**3, "max_sessions": 8}


@pytest_asyncio.fixture(params=["fast", "protected"])
async def box(request: pytest.FixtureRequest) -> AsyncIterator[LocalSandbox]:
    mark = marker()
    async with LocalSandbox(
        protect_state=request.param == "protected", env={"MARK": mark}, **BOUNDED
    ) as sandbox:
        yield sandbox
    deadline = time.monotonic() + 10
    while processes_with(mark) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert processes_with(mark) == []  # nothing of the sandbox outlives it


FORGE = r'''
import json, os, socket
def forge():
    """Every message of the control protocol, naming every process this cell can see."""
    pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())
    out = []
    for pid in pids:
        out += [
            {"op": "ready", "pid": pid},
            {"op": "holder", "pid": pid},
            {"op": "start", "pid": pid, "rid": 1, "cap": 10, "timeout": 0.05},
            {"op": "died", "pid": pid, "status": 9},
            {"op": "done", "pid": pid, "rid": 1, "status": "completed", "reason": None,
             "duration": 0.0, "children": True, "wait": False, "record": [1, 10, 0.05, 0.0]},
        ]
    out.append({"op": "kill", "pid": 2, "slot": 0})
    return [json.dumps(m).encode() for m in out] + [b"not json", b"\xff" * 64, b"[1, 2]"]
def attack():
    """Write every forged message onto every inherited descriptor but stdio (also kept as 4
    and 5 in protected mode) and the host's socket (6, see the tests of garbage below)."""
    links = {}
    for fd in os.listdir('/proc/self/fd'):
        try:
            links[int(fd)] = os.readlink(f'/proc/self/fd/{fd}')
        except OSError:  # listdir's own descriptor, closed by now
            pass
    stdio = {links[0], links[1], links[2]}
    # not into output pipes either (a protected holder's 4 and 5): that shows up as output
    fds = [fd for fd, link in links.items() if fd != 6 and link not in stdio]
    fds = [fd for fd in fds if fd == 8 or not links[fd].startswith('pipe:')]
    for message in forge():
        for fd in fds:
            try:
                os.write(fd, message)
            except OSError:
                pass
'''


async def with_state(sandbox: LocalSandbox) -> LocalSession:
    s = await sandbox.open_session()
    r = await s.run("canary = 'alive'")
    assert r.status == "completed"
    return s


async def intact(s: LocalSession) -> None:
    r = await s.run("canary")
    assert (r.status, r.stdout, r.state) == ("completed", "'alive'\n", "kept")


async def sandbox_unharmed(sandbox: LocalSandbox, bystander: LocalSession) -> None:
    """The other session keeps its state, new sessions work, the template never died."""
    await intact(bystander)
    assert (await sandbox.run("6 * 7")).stdout == "42\n"
    assert sandbox.healthy and sandbox.restarts == 0


async def test_forged_control_messages_end_only_the_session(box: LocalSandbox) -> None:
    bystander = await with_state(box)
    async with box.session() as s:
        await s.run("canary = 'alive'")
        r = await s.run(FORGE + "attack()\nimport time\ntime.sleep(1)\nprint('not reached')")
        assert (r.status, r.reason, r.state) == ("error", "crash", "lost"), r
        assert r.stdout == ""
        assert r.stderr == (
            "The interpreter wrote to the sandbox's control channel during this execution.\n"
            + LOST_NOTE
        )
        r = await s.run("'canary' in globals(), 1 + 1")
        assert (r.stdout, r.state) == ("(False, 2)\n", "kept")  # a fresh interpreter
    await sandbox_unharmed(box, bystander)


async def test_forged_messages_from_a_process_the_cell_forked(box: LocalSandbox) -> None:
    bystander = await with_state(box)
    async with box.session() as s:
        await s.run("canary = 'alive'")
        code = FORGE + (
            "if os.fork() == 0:\n"
            "    if os.fork() == 0:\n"  # a daemon, reparented to the supervisor
            "        os.setsid()\n        attack()\n        os._exit(0)\n"
            "    os._exit(0)\n"
            "import time\ntime.sleep(1)\nprint('not reached')"
        )
        r = await s.run(code)
        assert (r.status, r.state) == ("error", "lost"), r
        assert "wrote to the sandbox's control channel during this execution" in r.stderr
        r = await s.run("'canary' in globals()")
        assert r.stdout == "False\n"
    await sandbox_unharmed(box, bystander)


async def test_forged_messages_from_a_thread_after_its_cell(box: LocalSandbox) -> None:
    """Between cells nobody is running: the next cell learns that the state was lost."""
    bystander = await with_state(box)
    async with box.session() as s:
        await s.run("canary = 'alive'")
        code = FORGE + (
            "import threading, time\n"
            "def later():\n    time.sleep(0.1)\n    attack()\n"
            "threading.Thread(target=later, daemon=True).start()"
        )
        r = await s.run(code)
        assert (r.status, r.state) == ("completed", "kept")
        await asyncio.sleep(0.6)
        r = await s.run("'canary' in globals()")
        assert (r.status, r.stdout, r.state) == ("completed", "False\n", "lost"), r
        assert r.stderr == (
            "The interpreter wrote to the sandbox's control channel after the previous "
            "execution.\n" + LOST_NOTE
        )
        r = await s.run("x = 1\nx")
        assert (r.stdout, r.state, r.stderr) == ("1\n", "kept", "")
    await sandbox_unharmed(box, bystander)


async def test_no_descriptor_of_the_template_reaches_a_cell(box: LocalSandbox) -> None:
    """A cell holds exactly the descriptors its mode needs: stdio, the control channel, the
    host's socket, the token pipe, timer, output pipes and children list (two hops), and in
    protected mode the holder's saved output pipes."""
    async with box.session() as s:
        code = (
            "import os\nfds = []\nfor fd in os.listdir('/proc/self/fd'):\n"
            "    try:\n        fds.append((int(fd), os.readlink(f'/proc/self/fd/{fd}')))\n"
            "    except OSError:\n        pass\n"  # listdir's own descriptor, closed by now
            "sorted(fd for fd, _ in fds)"
        )
        r = await s.run(code)
        fds = eval(r.stdout)
        if box.config.protect_state:
            # 4 and 5: the holder's saved output pipes (the same pipes as 1 and 2)
            assert fds == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
        else:
            assert fds == [0, 1, 2, 3, 6, 7, 8, 9, 10, 11, 12]
        # after a restart of the interpreter too
        r = await s.run("import os\nos._exit(1)")
        assert r.state in ("lost", "rolled_back")
        r = await s.run(code)
        assert eval(r.stdout) == fds


async def test_garbage_on_the_host_socket_ends_only_that_session(box: LocalSandbox) -> None:
    bystander = await with_state(box)
    s = await with_state(box)
    with pytest.raises(SandboxError, match="sandbox session"):
        await s.run("import os\n_ = os.write(6, b'\\x00\\x00\\x00\\x05hello')", timeout=2)
    assert s.closed
    await sandbox_unharmed(box, bystander)


async def test_a_huge_frame_header_on_the_host_socket_is_refused_at_once(
    box: LocalSandbox,
) -> None:
    """A cell announcing a 4 GB reply: the host refuses it when the header arrives instead of
    buffering what follows (or waiting for the host's own timeout)."""
    bystander = await with_state(box)
    s = await with_state(box)
    started = time.monotonic()
    code = (
        "import os, time\nos.write(6, b'\\xff\\xff\\xff\\xf0' + b'R' * 4096)\n"
        "for _ in range(64):\n    os.write(6, b'\\x00' * (1 << 20))\n"
        "time.sleep(1)"
    )
    with pytest.raises(SandboxError, match="sandbox session"):
        await s.run(code, timeout=5)
    assert time.monotonic() - started < 5  # the host's own limit would be timeout + 10 s
    await sandbox_unharmed(box, bystander)


def supervisor_links(sandbox: LocalSandbox, session: LocalSession) -> list[str]:
    """What the descriptors of the session's supervisor point to (seen from the host)."""
    for pid in processes_with(sandbox.config.env["MARK"]):
        with open(f"/proc/{pid}/status") as f:
            nspid = next(line for line in f if line.startswith("NSpid:")).split()[1:]
        if int(nspid[-1]) == session.pid:
            links = []
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
            return links
    raise AssertionError("supervisor not found")


async def test_descriptors_sent_on_the_control_channel_never_reach_the_supervisor(
    box: LocalSandbox,
) -> None:
    async with box.session() as s:
        code = (
            "import os, socket, time\nsk = socket.socket(fileno=os.dup(3))\n"
            "f = open('sent-along.txt', 'w')\n"
            "for _ in range(20):\n"
            '    socket.send_fds(sk, [b\'{"op": "ready"}\'], [f.fileno()])\n'
            "time.sleep(0.3)"
        )
        await s.run(code)
        assert not [link for link in supervisor_links(box, s) if "sent-along" in link]
        assert (await s.run("1 + 1")).stdout == "2\n"


async def test_a_cell_shutting_its_control_channel_down(box: LocalSandbox) -> None:
    """The supervisor sees the end of its channel: the session gets a new interpreter and a new
    channel at once (it used to spin on the dead channel until the host's timeout)."""
    bystander = await with_state(box)
    async with box.session() as s:
        await s.run("canary = 'alive'")
        started = time.monotonic()
        code = (
            "import os, socket, time\n"
            "socket.socket(fileno=os.dup(3)).shutdown(socket.SHUT_RDWR)\ntime.sleep(1)"
        )
        r = await s.run(code, timeout=3)
        assert time.monotonic() - started < 3
        assert (r.status, r.state) == ("error", "lost"), r
        assert "wrote to the sandbox's control channel" in r.stderr
        for _ in range(3):  # the new channel works (protected mode: one per cell)
            r = await s.run("'canary' in globals()")
            assert (r.stdout, r.state) == ("False\n", "kept")
    await sandbox_unharmed(box, bystander)


async def test_runners_ending_at_once_are_not_taken_for_forgers(box: LocalSandbox) -> None:
    """A runner that is gone before the supervisor reads its ``ready`` (the holder reaped it)
    is no forger: the cell is answered as a crash, never left hanging. A race: 40 tries hit it
    a few times at load 20 (it hung 5 sessions of 150 before it was fixed)."""
    for _ in range(40):
        async with box.session() as s:
            r = await s.run("import os\nos._exit(1)", timeout=2)
            assert (r.status, r.reason) == ("error", "exit")
            assert r.state == ("rolled_back" if box.config.protect_state else "lost")
            assert (await s.run("1")).stdout == "1\n"
