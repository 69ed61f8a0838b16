"""Per-session kernel objects: a private mount and IPC namespace for each session.

Run by a spare holder (still privileged, before it knows its session) through
:func:`private_session_namespace`. The holder moves into a new mount namespace and a new IPC
namespace and mounts one tmpfs of ``disk`` bytes and ``inodes`` inodes over the workspace root;
the session's ``/tmp`` and ``/dev/shm`` are directories of that same tmpfs, bound in place. So
the work directory, ``/tmp`` and ``/dev/shm`` of one session share one quota, no other session
sees them, and the kernel frees them (and every System V object of the session, whose limits
are set here too) when the session's last process exits. Nothing has to be removed on close.

Standard library only: the detection probe runs this very source (see ``_probe.py``).
"""

from __future__ import annotations

import ctypes
import os

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2
PAGE = os.sysconf("SC_PAGE_SIZE")

_SHARED_SCRATCH: tuple[tuple[str, str], ...] = (("/tmp", ".tmp"), ("/dev/shm", ".shm"))
"""Sandbox-wide scratch directories, each replaced by a directory of the session's tmpfs."""

_libc_handle: ctypes.CDLL | None = None


def _libc() -> ctypes.CDLL:
    global _libc_handle
    if _libc_handle is None:
        _libc_handle = ctypes.CDLL(None, use_errno=True)
    return _libc_handle


def _check(rv: int, what: str) -> None:
    if rv != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    enc = [None if s is None else s.encode() for s in (source, target, fstype)]
    rv = _libc().mount(enc[0], enc[1], enc[2], ctypes.c_ulong(flags), data.encode() or None)
    _check(rv, f"mount {target}")


def ipc_limits(disk: int | None) -> dict[str, str]:
    """System V limits of a session's IPC namespace: shared memory within ``disk`` bytes,
    few message queues and semaphore sets (the kernel's defaults allow gigabytes of each)."""
    limits = {"msgmni": "32", "sem": "250 8000 32 32", "shmmni": "64"}
    if disk is not None:
        limits["shmmax"] = str(disk)
        limits["shmall"] = str(max(1, disk // PAGE))
    return limits


def _set_ipc_limits(limits: dict[str, str]) -> None:
    """Write the IPC sysctls of the new namespace through a writable view of /proc/sys.

    The sandbox covers /proc/sys with a read-only bind; this mount namespace is private, so
    making that bind writable here for the writes (a remount each way, cheaper than unmounting
    it) never shows the host's knobs to anyone else.
    """
    covered = bool(os.statvfs("/proc/sys").f_flag & os.ST_RDONLY)
    flags = MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV
    if covered:
        _mount(None, "/proc/sys", None, flags)
    try:
        for name, value in limits.items():
            with open(f"/proc/sys/kernel/{name}", "w") as f:
                f.write(value)
    finally:
        _mount(None, "/proc/sys", None, flags | MS_RDONLY)


def _submounts(roots: tuple[str, ...]) -> list[str]:
    """Mount points strictly below any of ``roots`` (e.g. a checkout bound under /tmp), shallow
    first."""
    prefixes = tuple(root.rstrip("/") + "/" for root in roots)
    found = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefixes):
                found.add(point)
    return sorted(found, key=lambda p: p.count("/"))


def private_session_namespace(workspace: str, disk: int | None, inodes: int | None) -> None:
    """Move the calling process into its own mount and IPC namespace with a private tmpfs of
    ``disk`` bytes and ``inodes`` inodes on ``workspace``, ``/tmp`` and ``/dev/shm``.

    Needs CAP_SYS_ADMIN (the template keeps it for this; sessions lose it with their uid).
    """
    _check(_libc().unshare(CLONE_NEWNS | CLONE_NEWIPC), "unshare")
    # Nothing mounted here may propagate back into the template's namespace.
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    # Keep what lies below /tmp (a checkout or virtualenv bound there) reachable through fds.
    kept: list[tuple[str, int]] = []
    scratch_dirs = tuple(scratch for scratch, _ in _SHARED_SCRATCH)
    # an empty directory has nothing mounted below it (the usual case): skip reading mountinfo
    crowded = tuple(d for d in scratch_dirs if os.path.isdir(d) and os.listdir(d))
    for point in _submounts(crowded) if crowded else ():
        if not any(point.startswith(p + "/") for p, _ in kept):
            kept.append((point, os.open(point, os.O_PATH)))
    options = ["mode=711"]
    if disk is not None:
        options.append(f"size={disk}")
    if inodes is not None:
        options.append(f"nr_inodes={inodes}")
    _mount("tmpfs", workspace, "tmpfs", MS_NOSUID | MS_NODEV, ",".join(options))
    for scratch, name in _SHARED_SCRATCH:
        private = os.path.join(workspace, name)
        os.mkdir(private)
        os.chmod(private, 0o1777)
        _mount(private, scratch, None, MS_BIND)
    for point, fd in kept:
        os.makedirs(point, exist_ok=True)
        _mount(f"/proc/self/fd/{fd}", point, None, MS_BIND | MS_REC)
        _mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
        os.close(fd)
    _set_ipc_limits(ipc_limits(disk))
