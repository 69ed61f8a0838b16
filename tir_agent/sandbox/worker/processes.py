"""What a supervisor knows of its session's processes: the holder, the runner, and strays.

The supervisor is the session's child subreaper, so every process of the session is below it:
the holder and its runner, and whatever a cell forked and left behind (orphans end up as the
supervisor's own children). It watches the holder and the runner through ``pidfd``s and kills
only processes below itself, whatever a message of the session named.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Iterable

from tir_agent.sandbox.worker.layout import DEBUG, debug
from tir_agent.sandbox.worker.procs import alive, children, descendants, kill_until_gone


class SessionProcesses:
    """The processes of one session as its supervisor tracks them."""

    def __init__(self) -> None:
        self.holder = 0
        self.runner = 0
        self.statuses: dict[int, int] = {}
        self.pidfds: dict[int, int] = {}  # pidfd -> pid
        self.retired: dict[int, None] = {}  # see retire()
        self.children_fd = os.open(f"/proc/{os.getpid()}/task/{os.getpid()}/children", os.O_RDONLY)
        self.poll = select.poll()

    def watch(self, pid: int) -> None:
        """Learn at once (its pidfd in :attr:`poll`) when ``pid`` ends."""
        self.retired.pop(pid, None)
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            return
        self.pidfds[fd] = pid
        self.poll.register(fd, select.POLLIN)

    def unwatch(self, pid: int) -> None:
        """Stop watching ``pid`` (and count what it sent as stale from now on)."""
        self.retire((pid,))
        for fd, p in list(self.pidfds.items()):
            if p == pid:
                self.poll.unregister(fd)
                os.close(fd)
                del self.pidfds[fd]

    def reap(self) -> None:
        """Reap every exited child; keep the statuses of the holder and the runner."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            except InterruptedError:
                continue
            if pid == 0:
                return
            if DEBUG:
                debug(f"reaped {pid} status {status}")
            if pid in (self.holder, self.runner):
                self.statuses[pid] = status

    def exit_status(self, pid: int, within: float = 0.5) -> int | None:
        """The exit status of ``pid``, which has ended, waiting up to ``within`` seconds until
        it can be reaped: a process whose last thread is still tearing down its memory, or that
        ended as the child of a holder that is itself still exiting (ours only once that one
        is gone), shows as ended before its status is ours. ``None`` if it never comes."""
        deadline = time.monotonic() + within
        while True:
            self.reap()
            if pid in self.statuses or time.monotonic() >= deadline:
                return self.statuses.pop(pid, None)
            time.sleep(0.002)

    def strays(self) -> list[int]:
        """Children of the supervisor that are neither the holder nor the runner (orphans)."""
        try:  # the supervisor is single-threaded: one children file, kept open (1 syscall)
            pids = [int(x) for x in os.pread(self.children_fd, 1 << 16, 0).split()]
        except (OSError, ValueError):
            pids = children(os.getpid())
        return [p for p in pids if p not in (self.holder, self.runner)]

    def purge(self, extra: tuple[int, ...] = (), ignore: tuple[int, ...] = ()) -> None:
        """Kill ``extra`` and every orphan (all children of the supervisor but the holder and
        ``ignore``), with everything below them, until none is left (fork bombs race us)."""

        # Only ever processes below this supervisor: whatever the session claimed, nothing of
        # the template or of another session is named here.
        if extra:
            ours = set(descendants(children(os.getpid())))
            extra = tuple(p for p in extra if p in ours)

        def targets() -> list[int]:
            self.reap()
            keep = tuple(p for p in (self.holder, self.runner) if p and p not in extra) + ignore
            roots = [p for p in (*extra, *self.strays()) if alive(p) and p not in ignore]
            return [p for p in descendants(roots, keep) if alive(p)]

        self.retire(kill_until_gone(targets, 2000))

    def retire(self, pids: Iterable[int]) -> None:
        """Remember processes of the session that we killed or stopped watching: what they
        sent before they went is stale, not forged."""
        self.retired.update(dict.fromkeys(pids))
        if len(self.retired) > 4096:  # a fork bomb's worth at most; forget the oldest
            for pid in list(self.retired)[:1024]:
                del self.retired[pid]
