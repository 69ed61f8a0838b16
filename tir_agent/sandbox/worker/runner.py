"""The runner's loop: read the host's cells straight from the session socket and run them."""

from __future__ import annotations

import mmap
import os
import socket
import time
from typing import Any

from tir_agent.sandbox.worker.cells import Runner
from tir_agent.sandbox.worker.channels import Frames, await_ack, pending, send, silence
from tir_agent.sandbox.worker.direct import Direct
from tir_agent.sandbox.worker.layout import SPIN
from tir_agent.sandbox.worker.procs import has_children, kill_tree


def serve_cells(
    runner: Runner,
    ctl: socket.socket,
    frames: Frames,
    *,
    protect: bool,
    shm: mmap.mmap | None = None,
    lost: str = "",
    notes: bool = True,
) -> None:
    """Read the host's cells straight from its socket and run them. Protected mode: the
    supervisor hears of each start and end (it answers the host), and this returns after a
    committed cell (the caller becomes the holder). Fast mode (``shm`` given): two hops, see
    :class:`Direct`; ``lost`` and ``notes`` as there."""
    me = os.getpid()
    send(ctl, {"op": "ready", "pid": me})
    direct = Direct(me, shm, lost, notes) if shm is not None and not protect else None
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
        spin = time.perf_counter() - waited < SPIN
        if request is None:
            os._exit(0)  # the host closed the session
        rid, timeout, cap, mode, code = request
        if direct is not None:
            direct.begin(rid, timeout, cap)
        else:
            send(ctl, {"op": "start", "pid": me, "rid": rid, "cap": cap, "timeout": timeout})
        result = runner.execute(code, cap, mode)
        if os.getpid() != me:  # a process the cell forked got here: it is not the runner
            os._exit(0)
        handed: dict[str, Any] = {}
        if direct is not None:
            if direct.claim() and direct.alone():
                direct.answer(frames.sock, rid, timeout, cap, result)
                continue
            handed = direct.hand_over()
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
        if direct is not None:
            direct.settle()
        if waiting:
            await_ack(ctl, me)
        if protect:
            return
