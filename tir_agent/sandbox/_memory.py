"""Memory per session without cgroups: a watchdog that sums each session's processes.

``RLIMIT_AS`` caps each process; a session with many processes could use many times
``memory_limit``. Where no memory cgroup is delegated to the sandbox, the template forks one
privileged watchdog (:func:`watchdog_main`) that, every :data:`INTERVAL` seconds, adds up the
memory of each session uid's processes and, when a session is over ``memory_limit``, kills its
largest processes (SIGKILL) until the rest fit.

What counts is the memory only that session holds: anonymous and shared-memory pages, each
shared page divided among the processes that map it (``Pss_Anon + Pss_Shmem`` from
``/proc/PID/smaps_rollup``), so pages a fork still shares copy-on-write with the template or
with its parent are not counted once per process. A scan stays cheap: the processes of each
uid are found from the owners of the ``/proc/PID`` directories (no file read, except for
root's processes, see :func:`session_processes`); a session with one process is skipped
(``RLIMIT_AS`` already holds it); the others' resident sets (``/proc/PID/statm``) are added up,
an upper bound; and only a session over the limit by that bound has its ``smaps_rollup`` read.
Reading another uid's ``smaps_rollup`` needs ptrace access: the watchdog takes the session's uid
as its file-system uid for those reads (``setfsuid``) instead of holding CAP_SYS_PTRACE. A
process that made itself undumpable is counted at its full resident set.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from collections.abc import Iterable

INTERVAL = 0.1
"""Seconds between two scans (a session can overshoot its limit for about this long)."""
PAGE = os.sysconf("SC_PAGE_SIZE")

_libc = ctypes.CDLL(None, use_errno=True)


def process_status(pid: str) -> tuple[int, int] | None:
    """(real uid, RssAnon + RssShmem in bytes) of a live process, or None."""
    uid = -1
    rss = 0
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"State:") and line.split()[1] in (b"Z", b"X"):
                    return None
                if line.startswith(b"Uid:"):
                    uid = int(line.split()[1])
                elif line.startswith((b"RssAnon:", b"RssShmem:")):
                    rss += int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return (uid, rss) if uid >= 0 else None


def _proportional(pid: int) -> int | None:
    """``Pss_Anon + Pss_Shmem`` of ``pid`` in bytes, or None when unreadable."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            total = 0
            for line in f:
                if line.startswith((b"Pss_Anon:", b"Pss_Shmem:")):
                    total += int(line.split()[1]) * 1024
            return total
    except (OSError, ValueError, IndexError):
        return None


def session_usage(uid: int, pids: Iterable[tuple[int, int]]) -> dict[int, int]:
    """Bytes each process of session ``uid`` holds, proportionally: ``{pid: bytes}``.

    ``pids`` are ``(pid, RssAnon + RssShmem)``; that figure stands in for a process whose
    ``smaps_rollup`` cannot be read. The caller must be root (it switches its fs uid).
    """
    usage: dict[int, int] = {}
    _libc.setfsgid(uid)
    _libc.setfsuid(uid)
    try:
        for pid, rss in pids:
            pss = _proportional(pid)
            usage[pid] = rss if pss is None else pss
    finally:
        _libc.setfsuid(0)
        _libc.setfsgid(0)
    return usage


def over_limit(usage: dict[int, int], limit: int) -> list[int]:
    """The processes to kill, largest first, so that what is left fits in ``limit``."""
    total = sum(usage.values())
    victims = []
    for pid, size in sorted(usage.items(), key=lambda item: -item[1]):
        if total <= limit:
            break
        victims.append(pid)
        total -= size
    return victims


def _resident(pid: int) -> int:
    """Resident set of ``pid`` in bytes (``/proc/PID/statm``, readable by anyone), or 0."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, ValueError, IndexError):
        return 0


def session_processes(uid_base: int, uid_count: int) -> dict[int, list[int]]:
    """Live processes of each session uid of the block: ``{uid: [pid, ...]}``.

    The owner of ``/proc/PID`` is the process's uid, found without reading a file. The kernel
    may show root as the owner of a process that is not dumpable, so root's entries (the
    template, the supervisors, spare holders, and perhaps session processes that made
    themselves undumpable) are looked up in ``/proc/PID/status``.
    """
    groups: dict[int, list[int]] = {}
    end = uid_base + uid_count
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            owner = entry.stat().st_uid
        except OSError:
            continue
        if owner == 0:
            found = process_status(entry.name)
            if found is None:
                continue
            owner = found[0]
        if uid_base <= owner < end:
            groups.setdefault(owner, []).append(int(entry.name))
    return groups


def scan(uid_base: int, uid_count: int, limit: int) -> list[tuple[int, list[int]]]:
    """One pass over /proc: ``(uid, pids killed)`` for each session found over ``limit``."""
    killed = []
    for uid, pids in session_processes(uid_base, uid_count).items():
        if len(pids) < 2:  # one process alone is held to the limit by RLIMIT_AS
            continue
        rough = [(pid, _resident(pid)) for pid in pids]  # an upper bound: counts shared pages
        if sum(size for _, size in rough) <= limit:
            continue
        victims = over_limit(session_usage(uid, rough), limit)
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if victims:
            killed.append((uid, victims))
    return killed


def watchdog_main(uid_base: int, uid_count: int, limit: int, parent: int) -> None:
    """Scan every :data:`INTERVAL` seconds until ``parent`` (the template) is gone."""
    _libc.prctl(15, b"tir-memwatch", 0, 0, 0)  # PR_SET_NAME: shows in /proc/PID/comm and ps
    while os.getppid() == parent:
        time.sleep(INTERVAL)
        for uid, victims in scan(uid_base, uid_count, limit):
            os.write(
                2, f"memory watchdog: session uid {uid} over its limit, killed {victims}\n".encode()
            )
