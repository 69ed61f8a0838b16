"""Inside the sandbox: confining a freshly forked session process, and cleaning up after it.

Part of :mod:`tir_agent.sandbox.isolation` (which re-exports every public name here); split out
because this code runs in the template and the session processes, not on the host. It does not
import ``isolation``: of its :class:`~tir_agent.sandbox.isolation.Protections` it needs three
flags, spelled out by :class:`SessionProtections`.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import tempfile
import time
from collections.abc import Sequence
from typing import Protocol

from tir_agent._log import get_logger
from tir_agent.sandbox import _cgroup, _seccomp
from tir_agent.sandbox.config import SandboxConfig


class SessionProtections(Protocol):
    """What confining a session needs to know of the host's protections (``Protections``)."""

    @property
    def session_uids(self) -> bool:
        """Each session runs as its own uid."""

    @property
    def seccomp(self) -> bool:
        """A seccomp filter is loaded into every session."""

    @property
    def seccomp_program(self) -> str:
        """The filter as compiled by the host (hex BPF), or empty."""

    @property
    def cgroup_fd(self) -> int:
        """The sandbox's memory cgroup directory, open for the template, or -1."""

    @property
    def cgroup_version(self) -> int:
        """That cgroup's version (1 or 2), or 0."""


log = get_logger("tir_agent.sandbox.isolation")

_RLIMITS: tuple[tuple[str, int], ...] = (
    ("memory_limit", resource.RLIMIT_AS),
    ("cpu_time_limit", resource.RLIMIT_CPU),
    ("max_file_size", resource.RLIMIT_FSIZE),
    ("max_open_files", resource.RLIMIT_NOFILE),
)


def confine_session(
    config: SandboxConfig,
    protections: SessionProtections,
    *,
    uid: int,
    workdir: str,
    keep_fds: Sequence[int] | None = None,
) -> None:
    """Confine the calling, freshly forked session process before any user code runs.

    Order matters: the work directory is made while still privileged; no-new-privs, groups, gid
    and uid follow; rlimits get soft == hard so user code cannot raise them; the parent-death
    signal is set after the uid change (which clears it); the seccomp filter comes last because
    it denies nothing this function still needs. With ``keep_fds``, every other descriptor above
    2 is closed first (so user code cannot write to the template's control pipes).
    """
    if keep_fds is not None:
        _close_fds_except(keep_fds)
    if os.path.lexists(workdir):  # left over by an earlier session of this slot
        remove_workdir(workdir)
    parent = os.path.dirname(workdir)
    if not os.path.isdir(parent):
        os.makedirs(parent, mode=0o711, exist_ok=True)
    os.mkdir(workdir, 0o700)
    if protections.session_uids:
        os.chown(workdir, uid, uid)
    os.chdir(workdir)
    os.environ["HOME"] = workdir
    os.environ["TMPDIR"] = workdir  # temp files stay private and go away with the session
    tempfile.tempdir = None  # forget a temp dir the template may have cached
    os.umask(0o077)

    _seccomp.prctl(_seccomp.PR_SET_NO_NEW_PRIVS, 1)
    if protections.session_uids:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    elif os.geteuid() == 0:  # root without session uids: at least no capabilities
        _seccomp.drop_all_capabilities()
    for field, res in _RLIMITS:
        value = getattr(config, field)
        if value is not None:
            resource.setrlimit(res, (value, value))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    nproc = _nproc_limit(config, protections)
    if nproc is not None:
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    _seccomp.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if protections.seccomp:
        _session_filter(config, protections).load()


_PR_SET_PDEATHSIG = 1
_nproc_baseline: int | None = None


def _session_filter(
    config: SandboxConfig, protections: SessionProtections
) -> _seccomp.CompiledFilter:
    if protections.seccomp_program:
        return _seccomp.filter_from_hex(protections.seccomp_program)
    return _seccomp.compiled_filter(config.network)


def _nproc_limit(config: SandboxConfig, protections: SessionProtections) -> int | None:
    """RLIMIT_NPROC for a session: its own budget with session uids; otherwise (unprivileged
    host) a budget shared with every process of the user, on top of those already running."""
    global _nproc_baseline
    if config.max_processes is None:
        return None
    if protections.session_uids:
        return config.max_processes
    if os.geteuid() == 0:  # RLIMIT_NPROC does not bind root: nothing to set
        return None
    if _nproc_baseline is None:
        _nproc_baseline = len(pids_of_uid(os.getuid())) + 1
    return _nproc_baseline + config.max_processes


def _close_fds_except(keep: Sequence[int]) -> None:
    low = 3
    for fd in sorted({fd for fd in keep if fd >= 3}):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, resource.getrlimit(resource.RLIMIT_NOFILE)[0])


def prepare_template(config: SandboxConfig, protections: SessionProtections) -> None:
    """Call once in the template before forking: sessions then skip compiling the filter and
    loading libc symbols (without it the first :func:`confine_session` costs milliseconds more)."""
    global _nproc_baseline
    if protections.cgroup_fd >= 0 and config.memory_limit is not None:
        _cgroup.adopt(protections.cgroup_fd, protections.cgroup_version, config.memory_limit)
    _seccomp.warm_up()
    if protections.seccomp:
        _session_filter(config, protections)
    if not protections.session_uids and os.geteuid() != 0:
        _nproc_baseline = len(pids_of_uid(os.getuid())) + 1


def remove_workdir(workdir: str) -> None:
    """Delete a session's work dir (symlinks inside are removed, never followed)."""
    path = os.path.abspath(workdir)
    if path.count("/") < 2:
        raise ValueError(f"refusing to remove {workdir!r}: not a session work directory")
    if os.path.islink(path):
        os.unlink(path)
        return
    shutil.rmtree(path, ignore_errors=True)
    if os.path.lexists(path):  # user code left directories without permissions (unprivileged host)
        for dirpath, dirnames, _ in os.walk(path):
            for d in dirnames:
                full = os.path.join(dirpath, d)
                if not os.path.islink(full):
                    os.chmod(full, 0o700)
        shutil.rmtree(path, ignore_errors=True)


def _live_uids(pid: str) -> tuple[int, ...]:
    """Real, effective, saved and fs uid of ``pid``; empty for zombies and vanished processes."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"State:") and line.split()[1] in (b"Z", b"X"):
                    return ()
                if line.startswith(b"Uid:"):
                    return tuple(int(x) for x in line.split()[1:])
    except (OSError, ValueError, IndexError):
        pass
    return ()


def pids_of_uid(uid: int) -> list[int]:
    """Pids of live processes whose real, effective or saved uid is ``uid`` (as /proc shows them)."""
    me = os.getpid()
    pids = []
    for entry in os.scandir("/proc"):
        name = entry.name
        if name.isdigit() and int(name) != me and uid in _live_uids(name)[:3]:
            pids.append(int(name))
    return pids


def kill_uid(uid: int, *, timeout: float = 5.0) -> int:
    """SIGKILL every process of ``uid``, repeating until none is left; return how many were killed."""
    if uid == 0 or uid == os.getuid():
        raise ValueError(f"refusing to kill every process of uid {uid}")
    killed: set[int] = set()
    deadline = time.monotonic() + timeout
    while True:
        pids = pids_of_uid(uid)
        if not pids:
            return len(killed)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except ProcessLookupError:
                pass
            except PermissionError:
                log.warning("isolation.kill_denied", pid=pid, uid=uid)
        if time.monotonic() > deadline:
            log.warning("isolation.kill_incomplete", uid=uid, left=len(pids_of_uid(uid)))
            return len(killed)
        time.sleep(0.0005)  # let the killed processes run their exit instead of racing them
