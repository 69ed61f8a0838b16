"""The runner's loop: read the host's cells straight from the session socket and run them."""

from __future__ import annotations

import mmap
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from tir_agent.sandbox.worker import prefault
from tir_agent.sandbox.worker.cells import Runner
from tir_agent.sandbox.worker.channels import Frames, await_ack, pending, send, silence
from tir_agent.sandbox.worker.direct import Direct
from tir_agent.sandbox.worker.layout import PACED, SPIN
from tir_agent.sandbox.worker.procs import has_children, kill_tree


def serve_cells(
    runner: Runner,
    ctl: socket.socket,
    frames: Frames,
    shm: mmap.mmap,
    *,
    commit: Callable[[], None] | None = None,
    family: frozenset[int] = frozenset(),
    lost: str = "",
    notes: bool = True,
) -> None:
    """Read the host's cells straight from its socket and run them, in two hops where it can
    (see :class:`Direct`; ``lost`` and ``notes`` as there). Fast mode (``commit`` is None):
    cell after cell, until the host closes. Protected mode: one cell; when it ends normally
    ``commit`` makes this process the holder (it kills the one we were forked from, if any),
    threads the cell left running go quiet, and this returns. ``family``: the session's other
    processes that are no leftovers of the cell (see :class:`Direct`)."""
    me = os.getpid()
    protect = commit is not None
    send(ctl, {"op": "ready", "pid": me})
    direct = Direct(shm, lost, notes, family | {me})
    if protect:  # while idle: copy the pages the last cell wrote (see prefault)
        prefault.populate(lambda: pending(frames.sock))
    spin = False
    while True:
        # Back-to-back cells: when the last request came within SPIN, look for the next one
        # without sleeping for that long (a wake-up costs 30-50 us); a longer gap stops this.
        waited = time.perf_counter()
        if spin:
            until = waited + SPIN
            while not pending(frames.sock) and time.perf_counter() < until:
                pass
        request = frames.next()
        came = time.perf_counter()
        spin = came - waited < SPIN
        if request is None:
            os._exit(0)  # the host closed the session
        rid, timeout, cap, mode, code = request
        faults = prefault.faults() if protect else 0
        direct.begin(rid, timeout, cap)
        result = runner.execute(code, cap, mode)
        if os.getpid() != me:  # a process the cell forked got here: it is not the runner
            os._exit(0)
        if direct.claim() and direct.alone():
            if commit is None:
                direct.answer(frames.sock, rid, timeout, cap, result)
                continue
            # Protected: threads the cell left running go quiet before its output is read;
            # the record stays in the shared page until we hold the state (see Direct.answer).
            silence()
            direct.answer(frames.sock, rid, timeout, cap, result, settle=False)
            prefault.remember(came - waited >= PACED, prefault.faults() - faults)
            commit()
            direct.settle()
            return
        handed: dict[str, Any] = direct.hand_over()
        # A request already waiting means the host gave up on this one (a cancelled run): wait
        # until the supervisor has collected this cell's output before the next cell writes any.
        waiting = pending(frames.sock)
        result.update(op="done", pid=me, rid=rid, children=has_children(), wait=waiting)
        result.update(handed)
        if protect:  # processes the cell started do not outlive it (fast mode: S kills them)
            if has_children():  # (one system call when there are none)
                kill_tree([me], include_roots=False, rounds=50)
            # This process commits and becomes the holder: threads the cell left running go
            # quiet now, before the supervisor collects the output (not into the next cell's).
            silence()
        send(ctl, result)
        direct.settle()
        if waiting:
            await_ack(ctl, me)
        if commit is not None:
            prefault.remember(came - waited >= PACED, prefault.faults() - faults)
            commit()
            return
