"""Host-wide uid blocks: each sandbox's sessions get uids no other sandbox on the host uses.

Part of :mod:`tir_agent.sandbox.isolation`, which re-exports the public names. A block is
reserved with an exclusive ``flock`` on a lock file per block (:func:`reserve_uid_block`); the
memory cgroup trees of sandboxes that died are found by the same locks
(:func:`remove_stale_cgroups`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import tempfile

from tir_agent.errors import IsolationError
from tir_agent.sandbox import _cgroup, _memory

UID_BASE = 2_000_000
"""Session uids start here (no /etc/passwd entries needed)."""

UID_BLOCK = 65_536
UID_BLOCKS = 1024
"""Each sandbox reserves one of ``UID_BLOCKS`` blocks of ``UID_BLOCK`` uids host-wide
(:func:`reserve_uid_block`), so no two sandboxes running at the same time share uids (which
would share ``RLIMIT_NPROC``)."""


UID_LOCK_DIRS: tuple[str, ...] = ("/run/lock", "/var/lock", "/run", "/tmp")
"""Where the host-wide uid block locks live: the first of these that exists (the same for every
process of the host), in a ``tir-agent-uids`` directory."""


class UidBlock:
    """A block of :data:`UID_BLOCK` session uids reserved host-wide for one sandbox.

    The reservation is an exclusive ``flock`` on ``<lock dir>/tir-agent-uids/<base>.lock``: the
    kernel drops it when the holder closes it (:meth:`release`, which also removes the file) or
    dies (the empty file then stays until the next :func:`reserve_uid_block` removes it), so a
    crashed server never keeps a block.
    """

    def __init__(self, base: int, fd: int, path: str) -> None:
        self.base = base
        """First uid of the block."""
        self.path = path
        """The lock file."""
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        """Whether the block is still reserved by this object."""
        return self._fd is not None

    def release(self) -> None:
        """Give the block back and remove its lock file (idempotent)."""
        if self._fd is not None:
            # unlinked while still locked: whoever opened it meanwhile sees the inode change
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            os.close(self._fd)
            self._fd = None


def _uid_lock_dir() -> str:
    base = next((d for d in UID_LOCK_DIRS if os.path.isdir(d)), tempfile.gettempdir())
    path = os.path.join(base, "tir-agent-uids")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def _block_in_use(base: int) -> bool:
    """Whether a process with a uid of the block is alive (left by a sandbox that did not lock)."""
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            found = _memory.process_status(entry.name)
            if found is not None and base <= found[0] < base + UID_BLOCK:
                return True
    return False


def _same_file(fd: int, path: str) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _remove_stale_locks(directory: str) -> None:
    """Remove the lock files of holders that died (nobody holds their lock), under the lock."""
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if _same_file(fd, path):
                os.unlink(path)
        except OSError:
            pass  # held: a live sandbox's
        finally:
            os.close(fd)


def _lock_block(path: str) -> int | None:
    """The uid block lock file ``path``, opened (made if missing) and locked by us, or None when
    another holds it or it was released (unlinked) between our open and our lock."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    if not _same_file(fd, path):
        os.close(fd)
        return None
    return fd


def reserve_uid_block() -> UidBlock:
    """Reserve a free uid block for one sandbox, host-wide: no other sandbox (in this process or
    another) gets it until :meth:`UidBlock.release` or the holder's death. Blocks are tried from a
    random start; a block whose uids still run processes is skipped."""
    directory = _uid_lock_dir()
    _remove_stale_locks(directory)
    start = secrets.randbelow(UID_BLOCKS)
    for i in range(UID_BLOCKS):
        base = UID_BASE + (start + i) % UID_BLOCKS * UID_BLOCK
        path = os.path.join(directory, f"{base}.lock")
        fd = _lock_block(path)
        if fd is None:
            continue
        if _block_in_use(base):
            os.close(fd)
            continue
        return UidBlock(base, fd, path)
    raise IsolationError(
        f"all {UID_BLOCKS} session uid blocks are in use (locks in {directory}); "
        "close other sandboxes on this host"
    )


def remove_stale_cgroups(parent: str) -> list[str]:
    """Remove the memory cgroup trees (``tir-agent-<uid base>``) that sandboxes which died left in
    ``parent``: those whose uid block nobody holds. The block's lock is held while its tree is
    removed, so a sandbox reserving it meanwhile cannot lose a tree it is making. Returns the
    trees removed."""
    directory = _uid_lock_dir()
    removed = []
    for entry in os.scandir(parent):
        base = entry.name.removeprefix("tir-agent-")
        if base == entry.name or not base.isdigit() or not entry.is_dir(follow_symlinks=False):
            continue
        path = os.path.join(directory, f"{base}.lock")
        fd = _lock_block(path)
        if fd is None:
            continue  # a live sandbox's (ours included: held through another descriptor)
        try:
            if _cgroup.remove_tree(entry.path):
                removed.append(entry.path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        finally:
            os.close(fd)
    return removed
