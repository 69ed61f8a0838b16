"""Build the sandbox's root file system without bubblewrap, then start the template in it.

Run by ``isolation.template_command`` as ``python -I -S -c <this source> SPEC ARGV...`` under
``unshare --mount --pid --fork ...`` (as root: it needs CAP_SYS_ADMIN in its mount namespace).
SPEC is JSON: ``{"plan": [...], "env": {...}, "caps": [...], "chdir": ..., "hostname": ...}``
with the mount plan of ``_mounts.mount_plan``. Steps: a private tmpfs becomes the new root, the
plan is carried out under it, ``pivot_root`` switches to it and detaches the host's tree; the
capability bounding set is cut to ``caps``; then, like bwrap, this process stays as pid 1 of
the pid namespace (reaping orphans) while its child execs the template. Standard library only.
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import sys

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
PROC_COVERED = ("sys", "sysrq-trigger", "irq", "bus")
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}

libc = ctypes.CDLL(None, use_errno=True)


def _check(rv: int, what: str) -> None:
    if rv != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(
    source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None
) -> None:
    """``mount(2)``."""
    enc = [None if s is None else s.encode() for s in (source, target, fstype, data)]
    _check(libc.mount(enc[0], enc[1], enc[2], ctypes.c_ulong(flags), enc[3]), f"mount {target}")


def ro_bind(source: str, target: str, extra: int = 0) -> None:
    """A read-only, nosuid, nodev bind mount of ``source`` on ``target`` (created as needed)."""
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    elif not os.path.exists(target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    mount(source, target, None, MS_BIND | MS_REC)
    mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | extra)


def tmpfs(target: str, mode: int, size: int | None) -> None:
    """A tmpfs on ``target`` with ``mode`` and an optional size in bytes."""
    os.makedirs(target, exist_ok=True)
    data = f"mode={mode:o}" + (f",size={size}" if size else "")
    mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, data)


def build(root: str, plan: list[list[object]], host_tmp: int | None = None) -> None:
    """Carry out the mount plan under ``root``; ``host_tmp`` is an fd of the host's /tmp, which
    the staging tmpfs covers (sources under /tmp, e.g. a checkout, are bound through it)."""

    def source(path: str) -> str:
        if host_tmp is not None and (path == "/tmp" or path.startswith("/tmp/")):
            return f"/proc/self/fd/{host_tmp}{path[len('/tmp') :]}"
        return path

    for op in plan:
        kind = op[0]
        path = root + str(op[-1] if kind in ("symlink", "ro-bind") else op[1])
        if kind == "dir":
            os.makedirs(path, exist_ok=True)
            os.chmod(path, int(str(op[2])))
        elif kind == "symlink":
            os.symlink(str(op[1]), path)
        elif kind == "ro-bind":
            ro_bind(source(str(op[1])), path)
        elif kind == "hide":
            ro_bind("/dev/null", path)  # nodev: opening it fails with EACCES
        elif kind == "tmpfs":
            tmpfs(path, int(str(op[2])), None if op[3] is None else int(str(op[3])))
        elif kind == "dev":
            tmpfs(path, 0o755, 1 << 20)
            for name in DEVICES:
                if os.path.exists(f"/dev/{name}"):
                    open(f"{path}/{name}", "a").close()
                    mount(f"/dev/{name}", f"{path}/{name}", None, MS_BIND)
            for name, target in (
                ("fd", "/proc/self/fd"),
                ("stdin", "/proc/self/fd/0"),
                ("stdout", "/proc/self/fd/1"),
                ("stderr", "/proc/self/fd/2"),
            ):
                os.symlink(target, f"{path}/{name}")
        elif kind == "proc":
            os.makedirs(path, exist_ok=True)
            mount("proc", path, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
            for name in PROC_COVERED:  # as bwrap does: the kernel's knobs stay read-only
                if os.path.exists(f"{path}/{name}"):
                    ro_bind(f"{path}/{name}", f"{path}/{name}")
        elif kind == "remount-ro":
            mount(None, root, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
        else:
            raise ValueError(f"unknown mount operation {kind!r}")


def loopback_up() -> None:
    """Bring ``lo`` up in the new network namespace (as bwrap does): localhost works, nothing else."""
    import fcntl
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = 0x1 | 0x8 | 0x40  # IFF_UP | IFF_LOOPBACK | IFF_RUNNING
        fcntl.ioctl(s, 0x8914, struct.pack("16sH14x", b"lo", flags))  # SIOCSIFFLAGS


def drop_capabilities(keep: list[int]) -> None:
    """Cut the bounding set to ``keep``: after exec, root holds only those capabilities."""
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    for cap in range(last + 1):
        if cap not in keep:
            _check(libc.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0), f"drop cap {cap}")
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, ctypes.c_ulong(1), 0, 0, 0), "no_new_privs")


def main(argv: list[str]) -> int:
    """Build the root, pivot into it, and run ``argv[1:]`` as pid 2 under a reaping pid 1."""
    spec = json.loads(argv[0])
    command = argv[1:]
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    # The new root lives on a tmpfs over the host's /tmp: nothing is created on the host. What
    # lies under the host's /tmp stays reachable through an fd opened before.
    host_tmp = os.open("/tmp", os.O_PATH | os.O_DIRECTORY)
    tmpfs("/tmp", 0o755, 1 << 20)
    root = "/tmp/root"
    tmpfs(root, 0o755, 16 << 20)
    build(root, spec["plan"], host_tmp)
    os.close(host_tmp)
    os.chdir(root)
    nr = SYS_PIVOT_ROOT[os.uname().machine]
    _check(libc.syscall(nr, b".", b"."), "pivot_root")  # put_old == new_root: no directory needed
    _check(libc.umount2(b".", MNT_DETACH), "detach the host tree")
    os.chdir("/")
    if spec.get("loopback_up"):
        loopback_up()
    if spec.get("hostname"):
        socket.sethostname(spec["hostname"])
    drop_capabilities([int(c) for c in spec["caps"]])
    pid = os.fork()
    if pid == 0:
        os.setsid()
        os.chdir(spec["chdir"])
        os.execve(command[0], command, spec["env"])
    while True:  # pid 1: reap everything until the template exits
        try:
            child, status = os.wait()
        except ChildProcessError:
            return 1
        if child == pid:
            return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
