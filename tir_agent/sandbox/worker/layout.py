"""The descriptor layout of a session's processes and the timing constants of the sandbox.

Holders and runners find their channels at fixed descriptor numbers: the supervisor puts them
there when it forks the holder (:meth:`Supervisor.spawn_holder`, with :func:`place`), and the
holder closes everything else before user code runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

FD_CTL = 3
"""In holders and runners: the supervisor channel."""
FD_OUT_SAVED = 4
FD_ERR_SAVED = 5
"""In protected holders: the output pipes, kept for the runners while fd 1 and 2 go nowhere."""
FD_HOST = 6
"""In holders and runners: the host's session socket (runners read requests from it)."""
FD_TOKEN_R = 7
FD_TOKEN_W = 8
"""The token pipe shared with the supervisor (see :class:`~.direct.Direct`)."""
FD_TIMER = 9
"""Fast mode: a timerfd shared with the supervisor; the runner arms it when a cell starts."""
FD_OUT_R = 10
FD_ERR_R = 11
"""Read ends of the output pipes (the runner drains them when it answers itself)."""
FD_SIBLINGS = 12
"""The supervisor's ``/proc/.../children`` (processes a cell left behind show there)."""
FD_LAST = FD_SIBLINGS

SPARES = 2
"""Supervisors (each with its holder) the template keeps forked ahead of time for new sessions."""

SOFT_GRACE = 0.25
"""Fast mode: seconds between the soft interrupt and the hard kill of a timed-out cell."""

SPIN = 0.0002
"""Seconds a runner polls for the next cell before sleeping, when the last cell followed its
predecessor within that time (back-to-back cells skip a wake-up)."""

PACED = 0.002
"""Protected mode: a runner that waited at least this many seconds for its cell is in the
agent's pattern (cells with pauses between them): it leaves the next runner the list of pages
to copy while idle (see ``prefault``); cells back to back skip that work."""

DRAIN_INTERVAL = 0.005
"""Seconds between drains of a running cell's output pipes (until a flood is detected)."""
TAKEOVER = DRAIN_INTERVAL
"""A cell still running after this many seconds (or its timeout, if shorter) is taken over by
the supervisor, which then drains its output and answers the host."""
PIPE_SIZE = 1 << 20
"""Capacity of the output pipes (a cell can write this much between two drains)."""
F_SETPIPE_SZ = 1031


def place(stdout: int, stderr: int, channels: Sequence[tuple[int, int]]) -> None:
    """In a new holder (just forked by its supervisor): /dev/null on fd 0, the output pipes'
    write ends ``stdout`` and ``stderr`` on 1 and 2, each ``(descriptor, number)`` of
    ``channels`` at its number, and nothing else open."""
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(stdout, 1)
    os.dup2(stderr, 2)
    # out of the way first: a source may sit on a target number
    moved = [(fcntl.fcntl(fd, fcntl.F_DUPFD, 64), number) for fd, number in channels]
    for source, number in moved:
        os.dup2(source, number)
    # Nothing else of the supervisor reaches the session: not the spare's link to the
    # template, not the supervisor's own ends (they may sit on the numbers not placed here).
    placed = {number for _, number in channels}
    for fd in range(3, FD_LAST + 1):
        if fd not in placed:
            with contextlib.suppress(OSError):
                os.close(fd)
    os.closerange(FD_LAST + 1, 1 << 16)


DEBUG = bool(os.environ.get("TIR_AGENT_SANDBOX_DEBUG"))
"""``TIR_AGENT_SANDBOX_DEBUG=1``: supervisors trace their decisions on stderr."""


def debug(text: str) -> None:
    """One trace line on stderr (call only under ``if DEBUG``: building ``text`` costs)."""
    os.write(2, f"S{os.getpid()} {text}\n".encode())


def profile(supervisor: Any) -> None:
    """``TIR_AGENT_SANDBOX_PROFILE=1`` in the sandbox's ``env``: profile ``supervisor`` until it
    shuts down, into ``/tmp/supervisor-<pid>.prof`` (the sandbox's ``/tmp``)."""
    import cProfile

    profiler = cProfile.Profile()
    original: Callable[[bool], NoReturn] = supervisor.shutdown

    def dump(reply: bool = False) -> NoReturn:
        profiler.disable()
        profiler.dump_stats(f"/tmp/supervisor-{os.getpid()}.prof")
        original(reply)

    supervisor.shutdown = dump
    profiler.enable()
