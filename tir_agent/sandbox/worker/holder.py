"""The holder: the first confined process of a session, the one that holds its state.

Forked by the supervisor ahead of time (while the session is still a spare), it prepares its
namespaces, waits for its assignment (uid, work dir, mode), confines itself and then either runs
the cells itself (``protect_state=False``) or only forks runners (``protect_state=True``): each
runner is a copy of the state from before its cell; a runner whose cell commits becomes the next
holder, and one that times out or crashes is killed while this process keeps the state.
"""

from __future__ import annotations

import contextlib
import functools
import mmap
import os
import random
import select
import signal
import socket
import time
from typing import NoReturn

from tir_agent.sandbox import isolation
from tir_agent.sandbox.config import SandboxConfig
from tir_agent.sandbox.worker.cells import Runner
from tir_agent.sandbox.worker.channels import Frames, await_assignment, send
from tir_agent.sandbox.worker.layout import (
    FD_CTL,
    FD_ERR_SAVED,
    FD_HOST,
    FD_LAST,
    FD_OUT_SAVED,
)
from tir_agent.sandbox.worker.procs import PR_SET_DUMPABLE, PR_SET_PDEATHSIG, prctl
from tir_agent.sandbox.worker.runner import serve_cells

# Bound to ``random``'s own instance when the template imports this module, so a cell that
# rebinds the module's functions cannot make the holder run its code.
_random_state = random.getstate
_set_random_state = random.setstate


def _fork_runner() -> tuple[int, dict[int, int]]:
    """``os.fork()`` for a runner, with what a rollback must put back: returns the pid and
    the positions of this process's open files (see :func:`_file_positions`).

    CPython reseeds ``random`` in every child it forks (a fork hook that ``random`` registers),
    which is right for siblings but wrong here: the runner *is* the session from now on, so a
    stream seeded by an earlier cell (``random.seed(42)``) must go on where it was, and after a
    rollback where the holder has it. Costs ~10 µs a fork."""
    state = _random_state()
    positions = _file_positions()
    pid = os.fork()
    if pid == 0:
        _set_random_state(state)
    return pid, positions


def _file_positions() -> dict[int, int]:
    """The offsets of the files the session's cells opened (descriptors above ``FD_LAST``).
    A fork shares open files instead of copying them: a cell that reads or seeks moves the
    holder's file too, so a rolled-back cell's reads would otherwise stay done in the kernel
    while the holder's Python objects (a file's buffer, ``tell()``) say they were not."""
    positions: dict[int, int] = {}
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return positions
    for name in names:
        fd = int(name)
        if fd > FD_LAST:
            with contextlib.suppress(OSError):  # pipes, sockets; the listing's own descriptor
                positions[fd] = os.lseek(fd, 0, os.SEEK_CUR)
    return positions


def _put_back(positions: dict[int, int]) -> None:
    """A runner died without committing: its cell's reads and seeks are undone."""
    for fd, offset in positions.items():
        with contextlib.suppress(OSError):
            os.lseek(fd, offset, os.SEEK_SET)


def _await_reparenting(old: int) -> None:
    """Wait until our parent ``old`` (the holder we replaced and killed) is gone. On its pidfd,
    not by polling: its exit (tearing down its memory) takes milliseconds, more under load, and
    dozens of sessions polling every 0.2 ms meanwhile kept the cores busy (issue #14)."""
    try:
        fd = os.pidfd_open(old)
    except OSError:
        fd = -1  # gone already (or no pidfds)
    try:
        while os.getppid() == old:
            if fd >= 0:
                select.select([fd], [], [], 0.1)
            else:
                time.sleep(0.0002)
    finally:
        if fd >= 0:
            os.close(fd)


def holder_main(
    config: SandboxConfig, protections: isolation.Protections, shm: mmap.mmap
) -> NoReturn:
    """The first process of a session's state: forked ahead of time, it waits for its session
    (uid, work dir, mode), confines itself, then runs cells (fast) or forks runners (protected).
    ``shm`` is the page shared with the supervisor (fast mode, see :class:`~.direct.Direct`)."""
    try:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        isolation.prepare_session(config, protections)  # ahead of time: own mounts and IPC
        ctl = socket.socket(fileno=FD_CTL)
        assignment = await_assignment(ctl)
        protect = bool(assignment["protect"])
        isolation.confine_session(
            config, protections, uid=int(assignment["uid"]), workdir=str(assignment["workdir"])
        )
        prctl(PR_SET_DUMPABLE, 1)  # /proc/self stays readable by the session's own uid
        runner = Runner()
        frames = Frames(socket.socket(fileno=FD_HOST))
    except BaseException as e:
        os.write(2, f"session start failed: {e!r}\n".encode())
        os._exit(70)
    lost = str(assignment.get("lost") or "")
    if not protect:
        serve_cells(runner, ctl, frames, shm, lost=lost, notes=config.state_notes)
        os._exit(0)
    # Runners get the supervisor's pipes back on fd 1 and 2 from these.
    os.dup2(1, FD_OUT_SAVED)
    os.dup2(2, FD_ERR_SAVED)
    # The session's first cell runs here, without a copy: the state before it is a fresh
    # interpreter, which the supervisor makes again (a new holder) if the cell times out or
    # crashes. One fork and one exit fewer per session, and none on the first cell's path.
    # A committed cell leaves this process silenced (threads it left running go quiet).
    serve_cells(runner, ctl, frames, shm, commit=_stay, lost=lost, notes=config.state_notes)
    old = 0
    while True:  # protected: this process holds the state and only forks runners
        me = os.getpid()
        send(ctl, {"op": "holder", "pid": me})
        if not config.fork_ahead:  # fork when the next cell comes (or the host closes)
            if old:
                _await_reparenting(old)
                prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
                old = 0
            select.select([frames.sock], [], [])
        while True:
            try:
                pid, positions = _fork_runner()
                break
            except OSError:
                time.sleep(0.01)
        if pid == 0:
            os.dup2(FD_OUT_SAVED, 1)
            os.dup2(FD_ERR_SAVED, 2)
            if not protections.pid_namespace:
                # no pid namespace takes us down with the host: die with the holder (a cell
                # that kills its holder then loses the session, instead of outliving the host)
                prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            family = frozenset(p for p in (me, old) if p)
            serve_cells(
                runner, ctl, frames, shm, commit=functools.partial(_replace, me), family=family
            )
            # committed: this runner is the holder now (S may notice the old one's exit first)
            old = me
            continue
        if old:  # off the critical path: wait to be reparented, then die with the supervisor
            _await_reparenting(old)
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            old = 0
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
            except ChildProcessError:
                status = -1
                break
        _put_back(positions)  # before the next runner is forked
        send(ctl, {"op": "died", "pid": pid, "status": status})


def _stay() -> None:
    """A holder's own first cell commits: it holds the state already."""


def _replace(holder: int) -> None:
    """A runner's cell commits: the runner becomes the holder and the old one goes. Our
    parent-death signal is re-armed for the supervisor once we are reparented."""
    prctl(PR_SET_PDEATHSIG, 0)
    with contextlib.suppress(OSError):
        os.kill(holder, signal.SIGKILL)
