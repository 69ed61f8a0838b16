"""Two hops: a runner answers the host itself when its cell ends normally and quickly."""

from __future__ import annotations

import contextlib
import mmap
import os
import socket
import time
from typing import Any

from tir_agent.sandbox import protocol as proto
from tir_agent.sandbox.worker import timers
from tir_agent.sandbox.worker.layout import (
    FD_ERR_R,
    FD_OUT_R,
    FD_SIBLINGS,
    FD_TIMER,
    FD_TOKEN_R,
    FD_TOKEN_W,
    TAKEOVER,
)
from tir_agent.sandbox.worker.output import Stream
from tir_agent.sandbox.worker.procs import has_children
from tir_agent.sandbox.worker.verdicts import join


class Direct:
    """Two hops: the runner answers the host itself when its cell ends normally.

    Who answers a cell is decided by a token: when a cell starts, the runner writes the cell's
    record (:data:`protocol.RECORD`, atomic: smaller than ``PIPE_BUF``) into a pipe it shares
    with the supervisor and arms a shared timerfd for :data:`TAKEOVER` seconds (or the timeout,
    if shorter). Whoever reads the record first owns the answer; a pipe read is atomic, so
    exactly one does. The runner reads when the cell ends; the supervisor when the timer fires
    (the cell runs long: it then drains the output while the cell runs, enforces the timeout and
    answers after the runner's ``done``) or when the runner dies. The token also decides who
    reads the output pipes: only the owner. Nobody reads them between cells.

    A normal short cell so costs the supervisor nothing (it sleeps through it), and the runner a
    few syscalls instead of two messages. When the cell left processes behind (its own children,
    or orphans below the supervisor), the runner hands the cell over: the supervisor sweeps them
    and answers. While the runner writes its answer, the record also sits in a shared memory
    page, so a supervisor that sees the runner die then still answers that request.

    ``family``: the processes the supervisor may have as children besides leftovers of the
    cell: this runner in fast mode (and for a protected holder's own first cell); in protected
    mode the holder it was forked from and the holder that one replaced (it may still be
    exiting).
    """

    def __init__(self, shm: mmap.mmap, lost: str, notes: bool, family: frozenset[int]) -> None:
        self.family = frozenset(str(pid).encode() for pid in family)
        self.shm = shm
        self.lost = lost
        """Why the interpreter was restarted before its first cell (see ``Supervisor.restart``):
        the first answer says so, and that the state was lost."""
        self.notes = notes
        self.out = Stream(FD_OUT_R)
        self.err = Stream(FD_ERR_R)
        self.spec = timers.itimerspec(TAKEOVER)
        self.off = timers.itimerspec(0)
        self.record = proto.ZERO_RECORD

    def begin(self, rid: int, timeout: float, cap: int) -> None:
        """Announce a cell (its record on the token pipe) and arm the takeover timer."""
        self.record = proto.RECORD.pack(rid, cap, timeout, time.monotonic())
        with contextlib.suppress(OSError):
            os.write(FD_TOKEN_W, self.record)
        spec = self.spec if timeout >= TAKEOVER else timers.itimerspec(timeout)
        timers.settime(FD_TIMER, spec)

    def claim(self) -> bool:
        """Take the token: True when this runner answers the cell, False when the supervisor
        took the cell over (it then waits for ``done``)."""
        self.shm[: proto.RECORD.size] = self.record
        try:
            if os.read(FD_TOKEN_R, 4096):
                return True
        except OSError:
            pass
        self.shm[: proto.RECORD.size] = proto.ZERO_RECORD
        return False

    def alone(self) -> bool:
        """Whether the cell left no process behind: no child of ours, no orphan below the
        supervisor (its children are all of :attr:`family`)."""
        if has_children():
            return False
        try:
            siblings = os.pread(FD_SIBLINGS, 4096, 0).split()
        except OSError:
            return False
        return bool(siblings) and all(pid in self.family for pid in siblings)

    def answer(
        self,
        sock: socket.socket,
        rid: int,
        timeout: float,
        cap: int,
        result: proto.Message,
        *,
        settle: bool = True,
    ) -> None:
        """Drain this cell's output and send the result to the host. ``settle=False``: the
        record stays in the shared page until :meth:`settle` (a protected runner commits
        first: a supervisor that sees it die before then knows the host may have an answer
        for a state that is not there)."""
        budget = proto.byte_budget(cap)
        self.out.start(budget)
        self.err.start(budget)
        self.out.drain()
        self.err.drain()
        stdout, out_cut = self.out.text(cap)
        stderr, err_cut = self.err.text(cap)
        status = result["status"]
        if status == "timeout":  # a cell that sent itself the soft-interrupt signal
            stderr = join(stderr, proto.timeout_text(timeout))
        state = "kept"
        if self.lost:
            state, stderr = "lost", join(stderr, self.lost)
            if self.notes:
                stderr += proto.LOST_NOTE
            self.lost = ""
        frame = proto.result_frame(
            rid,
            status,
            stdout,
            stderr,
            out_cut,
            err_cut,
            result["duration"],
            state,
            result["reason"],
        )
        with contextlib.suppress(OSError):
            sock.sendall(frame)
        # after the answer (off the critical path): no supervisor wake-up at TAKEOVER
        timers.settime(FD_TIMER, self.off)
        if settle:
            self.settle()

    def hand_over(self) -> dict[str, Any]:
        """The fields for ``done``: the cell's record (a supervisor that does not own the cell,
        because the runner won the token but the cell left processes behind, sweeps them and
        answers) and the pending restart notice. Call :meth:`settle` once ``done`` is sent."""
        fields: dict[str, Any] = {"record": list(proto.RECORD.unpack(self.record))}
        if self.lost:
            fields["lost"], self.lost = self.lost, ""
        return fields

    def settle(self) -> None:
        """The supervisor has the cell's ``done``: no answer of ours is in flight any more (a
        death before this point makes the supervisor answer, at worst a second time: the host
        drops the duplicate by its request id)."""
        self.shm[: proto.RECORD.size] = proto.ZERO_RECORD
