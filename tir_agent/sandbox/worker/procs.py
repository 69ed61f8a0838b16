"""Process utilities of the sandbox: ``prctl``, the process tree from ``/proc``, killing trees.

Everything here reads ``/proc`` directly (no psutil): the sandbox's processes import as little
as possible, and these calls sit on the paths that end cells.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from collections.abc import Callable

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36

libc = ctypes.CDLL(None, use_errno=True)

madvise = libc.madvise
"""``madvise(address, length, advice)``: 0, or -1 with ``ctypes.get_errno()`` set."""
madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
madvise.restype = ctypes.c_int


def prctl(option: int, value: int) -> None:
    """``prctl(option, value, 0, 0, 0)``."""
    libc.prctl(
        ctypes.c_int(option),
        ctypes.c_ulong(value),
        ctypes.c_ulong(0),
        ctypes.c_ulong(0),
        ctypes.c_ulong(0),
    )


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (every thread's), from /proc."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                out.extend(int(x) for x in f.read().split())
        except (OSError, ValueError):
            pass
    return out


def descendants(roots: list[int], exclude: tuple[int, ...] = ()) -> list[int]:
    """``roots`` and every process below them, skipping ``exclude`` and their subtrees."""
    seen: list[int] = []
    stack = [p for p in roots if p not in exclude]
    while stack:
        pid = stack.pop()
        seen.append(pid)
        stack.extend(p for p in children(pid) if p not in exclude)
    return seen


def kill_until_gone(targets: Callable[[], list[int]], rounds: int) -> set[int]:
    """SIGKILL what ``targets()`` lists, again and again (fork bombs race us), until it lists
    nothing or ``rounds`` are spent; return the pids signalled."""
    killed: set[int] = set()
    for _ in range(rounds):
        pids = targets()
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        killed.update(pids)
        time.sleep(0.0002)
    return killed


def kill_tree(roots: list[int], *, include_roots: bool = True, rounds: int = 200) -> None:
    """SIGKILL ``roots`` (unless ``include_roots`` is False) and every live process below them,
    repeating while new ones appear."""

    def targets() -> list[int]:
        pids = [p for p in descendants(roots) if alive(p)]
        return pids if include_roots else [p for p in pids if p not in roots]

    kill_until_gone(targets, rounds)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (exists and is no zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        return False


def parent(pid: int) -> int:
    """The parent of ``pid`` (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def has_children() -> bool:
    """Whether this process (any of its threads) has a child, alive or not: one syscall."""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    except OSError:
        return True
    return True


def private_writable(*, anonymous: bool = False) -> list[tuple[int, int]]:
    """``(start, end)`` of this process's private writable mappings (``/proc/self/maps``); with
    ``anonymous``, only those without a file behind them (the heap and mmap'd arenas)."""
    regions: list[tuple[int, int]] = []
    with contextlib.suppress(OSError), open("/proc/self/maps") as f:
        for row in f:
            fields = row.split()
            perms = fields[1]
            if not perms.startswith("rw") or perms[3] != "p":
                continue
            if anonymous and (fields[5] if len(fields) > 5 else "") not in ("", "[heap]"):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            regions.append((start, end))
    return regions
