"""Memory per session with the kernel's memory controller, where the host lets us use it.

Each session's processes (its holder, runners and everything they fork) share one memory cgroup
whose limit is ``memory_limit``: the kernel charges every page once to the cgroup that first
touched it (memory shared copy-on-write with the template or between forks counts once), counts
the session's kernel memory and the files it keeps in its own tmpfs, and when the session would
go over, reclaims what it can and then OOM-kills the process of that session with the largest
footprint. Nothing is polled: this replaces the memory watchdog of ``_memory.py``, which remains
the fallback where no memory cgroup can be made.

Where the cgroup comes from:

- **cgroup v1** (a ``memory`` hierarchy, as on this project's CI hosts): a child of the cgroup the
  host process is in, when that directory is writable (root, and the hierarchy mounted
  read-write).
- **cgroup v2**: a directory delegated to us, named by ``TIR_AGENT_CGROUP`` (for example a
  systemd unit's cgroup with ``Delegate=yes``, or a container's ``/sys/fs/cgroup`` after its own
  processes were moved into a leaf), whose ``cgroup.controllers`` lists ``memory``; or the root
  of the v2 hierarchy when we run there. v2 cannot be exercised on the hosts this project is
  tested on (their v2 hierarchy has no memory controller); docs/isolation.md says so.

Layout: the host (``LocalSandbox``) makes ``<base>/tir-agent-<uid block>`` (:class:`SandboxCgroup`)
and hands the template an open directory descriptor of it; it never needs ``/sys`` inside the
sandbox. The template keeps that descriptor out of every session (:func:`adopt`); each supervisor
makes ``s<its pid>`` with the limits and moves its session's holder there when it forks it
(:func:`enter`): ahead of time in a spare, so moving a process (0.4 ms, up to several ms under
load) is never on a session's start path. The template removes the cgroup of every supervisor it
reaps (:func:`discard`, retried by :func:`sweep` until the last process is gone), and the host
removes the whole tree when the sandbox closes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import resource
import time
from dataclasses import dataclass
from typing import Literal

ENV = "TIR_AGENT_CGROUP"
"""Names a delegated cgroup v2 directory to make the sandboxes' cgroups in."""

_HIGH_FD = 1000
"""The template keeps the descriptor at or above this number (or lower, below a lower open-file
limit), out of the way of the numbers the sessions' channels take."""


class CgroupError(OSError):
    """A memory cgroup could not be made or used."""


@dataclass(frozen=True)
class Hierarchy:
    """Where this process may make memory cgroups."""

    version: Literal[1, 2]
    path: str
    """A directory of the hierarchy: the sandboxes' cgroups are made in it."""

    def limit_files(self, limit: int) -> list[tuple[str, str]]:
        """(file, value) to write into a new session cgroup, in order: memory, then no swap."""
        if self.version == 1:  # memsw (memory + swap) must stay >= the memory limit: set it after
            return [
                ("memory.limit_in_bytes", str(limit)),
                ("memory.memsw.limit_in_bytes", str(limit)),
            ]
        return [("memory.max", str(limit)), ("memory.swap.max", "0")]


def _mountinfo() -> list[tuple[str, str, str, set[str]]]:
    """(root within the hierarchy, mount point, file-system type, super options) of each mount."""
    mounts = []
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, tail = left.split(), right.split()
            if len(fields) < 5 or len(tail) < 3:
                continue
            options = set(tail[2].split(",")) | set(fields[5].split(","))
            mounts.append((fields[3], fields[4].replace("\\040", " "), tail[0], options))
    return mounts


def _own_cgroups() -> dict[str, str]:
    """This process's cgroup path per v1 controller (``"memory"``, ...) and ``""`` for v2."""
    paths: dict[str, str] = {}
    with open("/proc/self/cgroup", encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split(":", 2)
            if len(parts) != 3:
                continue
            for controller in parts[1].split(",") if parts[1] else [""]:
                paths[controller] = parts[2]
    return paths


def _v1_memory() -> str | None:
    """This process's own cgroup directory in the v1 memory hierarchy, if mounted read-write."""
    own = _own_cgroups().get("memory")
    if own is None:
        return None
    for root, point, fstype, options in _mountinfo():
        inside = own == root or own.startswith(root.rstrip("/") + "/")
        if fstype == "cgroup" and "memory" in options and "rw" in options and inside:
            relative = own[len(root.rstrip("/")) :].lstrip("/")
            return os.path.join(point, relative) if relative else point
    return None


def _v2_root() -> str | None:
    """The v2 hierarchy's root, when this process's cgroup is that root (nothing else to manage
    the controllers there)."""
    if _own_cgroups().get("") != "/":
        return None
    for root, point, fstype, options in _mountinfo():
        if fstype == "cgroup2" and root == "/" and "rw" in options:
            return point
    return None


def _v2_usable(path: str) -> None:
    """Raise :class:`CgroupError` unless ``path`` is a v2 cgroup that may give children memory."""
    try:
        with open(os.path.join(path, "cgroup.controllers"), encoding="ascii") as f:
            controllers = f.read().split()
    except OSError as e:
        raise CgroupError(e.errno, f"{path} is not a cgroup v2 directory: {e.strerror}") from e
    if "memory" not in controllers:
        raise CgroupError(
            errno.ENOTSUP,
            f"{path}: the memory controller is not available there (cgroup.controllers: "
            f"{' '.join(controllers) or 'empty'}); delegate it from the parent",
        )


@functools.cache
def find() -> Hierarchy | None:
    """The hierarchy to make memory cgroups in, or None (see :func:`unavailable` for why)."""
    return _find()[0]


@functools.cache
def _find() -> tuple[Hierarchy | None, str]:
    delegated = os.environ.get(ENV)
    if delegated:
        try:
            _v2_usable(delegated)
            _trial(Hierarchy(2, delegated))
        except OSError as e:
            return None, f"{ENV}={delegated}: {e}"
        return Hierarchy(2, delegated), ""
    candidates: list[Hierarchy] = []
    v1 = _v1_memory()
    if v1 is not None:
        candidates.append(Hierarchy(1, v1))
    v2 = _v2_root()
    if v2 is not None:
        candidates.append(Hierarchy(2, v2))
    errors = []
    for hierarchy in candidates:
        try:
            if hierarchy.version == 2:
                _v2_usable(hierarchy.path)
            _trial(hierarchy)
        except OSError as e:
            errors.append(f"cgroup v{hierarchy.version} at {hierarchy.path}: {e}")
            continue
        return hierarchy, ""
    if not errors:
        errors.append(
            "no memory cgroup of ours: neither a writable cgroup v1 memory hierarchy nor a "
            f"delegated cgroup v2 directory (set {ENV} to one whose cgroup.controllers lists memory)"
        )
    return None, "; ".join(errors)


def unavailable() -> str:
    """Why no memory cgroup can be used here ("" when one can)."""
    return _find()[1]


def _trial(hierarchy: Hierarchy) -> None:
    """Make, limit and remove a cgroup: the same steps as a sandbox's, so failures show now."""
    name = os.path.join(hierarchy.path, f"tir-agent-probe-{os.getpid()}")
    os.mkdir(name)
    try:
        if hierarchy.version == 2:
            _write(os.path.join(name, "cgroup.subtree_control"), "+memory")
        child = os.path.join(name, "s0")
        os.mkdir(child)
        try:
            for index, (file, value) in enumerate(hierarchy.limit_files(64 << 20)):
                _write(os.path.join(child, file), value, optional=index > 0)
        finally:
            os.rmdir(child)
    finally:
        os.rmdir(name)


def _write(path: str, value: str, *, dir_fd: int | None = None, optional: bool = False) -> None:
    try:
        fd = os.open(path, os.O_WRONLY, dir_fd=dir_fd)
    except FileNotFoundError:
        if optional:  # e.g. memsw files without swap accounting: there is no swap to bound
            return
        raise
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------------
# The host side: one cgroup per sandbox


def _remove_children(path: str) -> list[str]:
    """One pass removing the session cgroups in ``path``; the names still holding processes."""
    left = []
    for entry in os.scandir(path):
        if entry.is_dir(follow_symlinks=False):
            try:
                os.rmdir(entry.path)
            except OSError:
                left.append(entry.name)
    return left


def remove_tree(path: str) -> bool:
    """Remove a sandbox's cgroup and its session cgroups; False if some still hold processes."""
    _remove_children(path)
    try:
        os.rmdir(path)
    except OSError:
        return False
    return True


class SandboxCgroup:
    """``<hierarchy>/<name>``: the parent of a sandbox's session cgroups, open as a directory.

    ``name`` is tied to the sandbox's uid block (reserved host-wide), so a directory of that name
    left by a sandbox that died is ours to empty and reuse.
    """

    def __init__(self, hierarchy: Hierarchy, name: str) -> None:
        self.hierarchy = hierarchy
        self.path = os.path.join(hierarchy.path, name)
        if os.path.isdir(self.path):
            self._remove_children(wait=0.0)
        else:
            os.mkdir(self.path)
        if hierarchy.version == 2:
            _write(os.path.join(self.path, "cgroup.subtree_control"), "+memory")
        self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)

    def _remove_children(self, wait: float) -> list[str]:
        """Remove the session cgroups (retrying while their last processes exit); the names left."""
        deadline = time.monotonic() + wait
        while (left := _remove_children(self.path)) and time.monotonic() < deadline:
            time.sleep(0.01)
        return left

    def close(self, wait: float = 5.0) -> None:
        """Remove the whole tree (every session's processes must be gone or going)."""
        with contextlib.suppress(OSError):
            os.close(self.fd)
        left = self._remove_children(wait)
        try:
            os.rmdir(self.path)
        except OSError as e:
            raise CgroupError(
                e.errno, f"cannot remove {self.path} ({e.strerror}); cgroups still in use: {left}"
            ) from e


# --------------------------------------------------------------------------------------------------
# In the sandbox: the template and its supervisors

_fd = -1
_version: int = 0
_limits: list[tuple[str, str]] = []
_pending: set[int] = set()


def adopt(fd: int, version: int, limit: int) -> None:
    """In the template: keep the sandbox cgroup's descriptor high and close-on-exec (sessions
    close everything above their own channels, so it never reaches user code)."""
    global _fd, _version, _limits
    # high, but below the open-file limit (F_DUPFD refuses a number at or above it)
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    low = _HIGH_FD if soft == resource.RLIM_INFINITY else max(16, min(_HIGH_FD, soft - 64))
    _fd = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, low)
    if _fd != fd:
        os.close(fd)
    _version = version
    _limits = Hierarchy(1 if version == 1 else 2, "").limit_files(limit)


def enter(pid: int) -> None:
    """In a supervisor: put its session process ``pid`` (and so all it forks) into the
    supervisor's own session cgroup, made with the limits on first use."""
    if _fd < 0:
        return
    name = f"s{os.getpid()}"
    for _ in range(3):  # the directory may be removed under us by a sweep for an earlier pid
        try:
            os.mkdir(name, 0o755, dir_fd=_fd)
            for index, (file, value) in enumerate(_limits):
                _write(f"{name}/{file}", value, dir_fd=_fd, optional=index > 0)
        except FileExistsError:
            pass
        try:
            _write(f"{name}/cgroup.procs", str(pid), dir_fd=_fd)
            return
        except FileNotFoundError:
            continue


def members() -> list[int] | None:
    """In a supervisor: the processes in its session cgroup (every process of the session: none
    can leave it), or None without a session cgroup."""
    if _fd < 0:
        return None
    try:
        fd = os.open(f"s{os.getpid()}/cgroup.procs", os.O_RDONLY, dir_fd=_fd)
    except FileNotFoundError:
        return None  # (no holder entered it: the caller falls back to its uid)
    try:
        data = b""
        while chunk := os.read(fd, 1 << 16):
            data += chunk
    finally:
        os.close(fd)
    return [int(x) for x in data.split()]


def discard(pid: int) -> None:
    """In the template: supervisor ``pid`` is gone; remove its cgroup once it is empty."""
    if _fd >= 0:
        _pending.add(pid)
        sweep()


def sweep() -> None:
    """Retry removing the cgroups of gone supervisors (their last processes may be exiting)."""
    for pid in list(_pending):
        try:
            os.rmdir(f"s{pid}", dir_fd=_fd)
        except FileNotFoundError:
            pass
        except OSError:
            continue  # busy: a process of the session is still exiting
        _pending.discard(pid)
