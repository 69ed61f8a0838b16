"""The seccomp filter of session processes: built once with libseccomp, loaded per session via prctl.

Building a filter with libseccomp and compiling it to BPF takes about a millisecond; loading the
compiled program with ``prctl(PR_SET_SECCOMP)`` takes microseconds. The template process therefore
compiles the program once (:func:`compiled_filter`) and every forked session only calls
:func:`load_filter`, which needs nothing but libc.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import socket

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2

DENIED_SYSCALLS: tuple[str, ...] = (
    # tracing and reading other processes' memory
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "process_madvise",
    "pidfd_getfd",
    "kcmp",
    # mounts, roots and namespaces
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "open_by_handle_at",
    "name_to_handle_at",
    # kernel keyrings, BPF, perf, io_uring (bypasses the socket rule), userfaultfd
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "userfaultfd",
    "fanotify_init",
    # the machine itself
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "syslog",
    "quotactl",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "sethostname",
    "setdomainname",
    "iopl",
    "ioperm",
    "vhangup",
    "uselib",
    "lookup_dcookie",
)
"""Syscalls that fail with EPERM in session processes."""

SYSV_IPC_SYSCALLS: tuple[str, ...] = ("shmget", "shmat", "msgget", "semget")
"""Also denied where sessions have no IPC namespace of their own: System V objects would outlive
the session, uncapped, and be visible to the sandbox's other sessions (``ipc=False`` below)."""

NAMESPACE_CLONE_FLAGS: tuple[int, ...] = (
    0x00000080,  # CLONE_NEWTIME
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
)
"""``clone`` flags that create namespaces; ``clone`` with any of them fails with EPERM."""

DENIED_IOCTLS: tuple[int, ...] = (
    0x5412,  # TIOCSTI: push characters into the terminal's input queue
    0x541C,  # TIOCLINUX
)

NETWORK_FAMILIES: tuple[int, ...] = (
    socket.AF_INET,
    socket.AF_INET6,
    getattr(socket, "AF_PACKET", 17),
)
"""Socket families denied when the network is off (AF_UNIX stays allowed)."""


class SeccompUnavailableError(OSError):
    """libseccomp or its Python bindings (``pyseccomp``) are missing or unusable."""


@functools.cache
def _libc() -> ctypes.CDLL:
    # The interpreter's own symbol namespace includes libc; find_library would spawn ldconfig.
    return ctypes.CDLL(None, use_errno=True)


def warm_up() -> None:
    """Load libc's symbols now (in the template) so the first ``prctl`` in a session is cheap."""
    libc = _libc()
    libc.prctl  # noqa: B018 - resolves and caches the function pointer
    libc.unshare  # noqa: B018
    libc.capset  # noqa: B018


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> None:
    """Call ``prctl(2)``; raise :class:`OSError` on failure."""
    libc = _libc()
    ulong = ctypes.c_ulong
    if libc.prctl(option, ulong(arg2), ulong(arg3), ulong(arg4), ulong(arg5)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")


PR_CAPBSET_DROP = 24


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def drop_all_capabilities() -> None:
    """Empty the bounding, effective, permitted and inheritable sets of the calling thread.

    For root without a session uid: uid 0 stays, but no privilege bypasses a permission check
    any more, and with no_new_privs not even executing a program brings capabilities back.
    """
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    for cap in range(last + 1):
        prctl(PR_CAPBSET_DROP, cap)
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)()
    if _libc().capset(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset: {os.strerror(err)}")


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class CompiledFilter:
    """A seccomp BPF program ready to be loaded with ``prctl`` (kept alive for the process)."""

    def __init__(self, bpf: bytes) -> None:
        if not bpf or len(bpf) % 8:
            raise SeccompUnavailableError(errno.EINVAL, "empty or malformed BPF program")
        self.bpf = bpf
        self._buffer = ctypes.create_string_buffer(bpf, len(bpf))
        self._prog = _SockFprog(len(bpf) // 8, ctypes.addressof(self._buffer))

    def load(self) -> None:
        """Install the filter on the calling thread (needs ``PR_SET_NO_NEW_PRIVS`` or CAP_SYS_ADMIN)."""
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(self._prog))


def _build_bpf(network: bool, ipc: bool = True) -> bytes:
    try:
        import pyseccomp as sc
    except (ImportError, OSError) as e:  # OSError: the bindings load libseccomp.so at import
        raise SeccompUnavailableError(errno.ENOSYS, f"pyseccomp unavailable: {e}") from e
    eperm = sc.ERRNO(errno.EPERM)
    filt = sc.SyscallFilter(sc.ALLOW)
    for name in DENIED_SYSCALLS + (() if ipc else SYSV_IPC_SYSCALLS):
        try:
            filt.add_rule(eperm, name)
        except (OSError, ValueError):  # not a syscall on this architecture
            continue
    for flag in NAMESPACE_CLONE_FLAGS:
        filt.add_rule(eperm, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    # clone3 passes its flags in memory, out of seccomp's reach: ENOSYS makes libc fall back to clone.
    filt.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    for request in DENIED_IOCTLS:
        filt.add_rule(eperm, "ioctl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, request))
    if not network:
        for family in NETWORK_FAMILIES:
            filt.add_rule(eperm, "socket", sc.Arg(0, sc.MASKED_EQ, 0xFFFFFFFF, family))
    with open(os.memfd_create("tir-agent-seccomp"), "w+b") as out:  # no file system needed
        filt.export_bpf(out)
        out.seek(0)
        return out.read()


@functools.cache
def filter_from_hex(program: str) -> CompiledFilter:
    """A program compiled elsewhere (e.g. by the host, which has libseccomp) ready to load."""
    return CompiledFilter(bytes.fromhex(program))


@functools.cache
def compiled_filter(network: bool, ipc: bool = True) -> CompiledFilter:
    """The session filter for ``network`` (cached: compile once in the template, load per session);
    ``ipc=False`` denies System V IPC too (:data:`SYSV_IPC_SYSCALLS`)."""
    try:
        return CompiledFilter(_build_bpf(network, ipc))
    except SeccompUnavailableError:
        raise
    except OSError as e:
        raise SeccompUnavailableError(e.errno or errno.EINVAL, f"libseccomp failed: {e}") from e
