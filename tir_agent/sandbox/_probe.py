"""The probe that detect_protections runs inside a candidate sandbox, and its result.

The probe is a small standard-library script started exactly as the template would be (through
``template_command``). It reports what it can see and do: network interfaces, whether the root is
writable, whether secrets and home directories are visible, whether it can switch to a session
uid, and whether the compiled seccomp program loads and denies ``unshare``.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

PROBE_SOURCE = r"""
import ctypes, errno, json, os, socket, sys
arg = json.loads(sys.argv[1])
r = {"pid": os.getpid(), "euid": os.geteuid(), "env": sorted(os.environ)}
try:
    r["ifaces"] = sorted(n for _, n in socket.if_nameindex())
except OSError:
    r["ifaces"] = None
def readable(path):
    try:
        with open(path, "rb") as f:
            f.read(1)
        return True
    except OSError:
        return False
r["shadow_readable"] = any(readable(p) for p in ("/etc/shadow", "/etc/gshadow") if os.path.exists(p))
try:
    with open("/usr/.tir-agent-probe", "w"):
        pass
    os.unlink("/usr/.tir-agent-probe")
    r["root_writable"] = True
except OSError:
    r["root_writable"] = False
def read_only(path):
    return os.path.exists(path) and bool(os.statvfs(path).f_flag & os.ST_RDONLY)
r["read_only"] = {p: read_only(p) for p in ("/", "/usr", "/etc", "/proc/sys")}
ws = arg["workspace"]
try:
    p = os.path.join(ws, ".probe-%d" % os.getpid())
    with open(p, "w"):
        pass
    os.unlink(p)
    r["workspace_writable"] = True
except OSError:
    r["workspace_writable"] = False
r["secrets_visible"] = [p for p in arg["secrets"] if os.path.lexists(p)]
def child(fn):
    pid = os.fork()
    if pid == 0:
        try:
            os._exit(0 if fn() else 1)
        except BaseException:
            os._exit(2)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
def drop():
    uid = arg["uid"]
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    return os.getuid() == uid
def reach():
    drop()
    # A session uid must still run and import from the interpreter (lazy imports, subprocesses).
    return os.access(sys.executable, os.X_OK) and bool(os.listdir(os.path.dirname(os.__file__)))
def nproc():
    drop()
    # RLIMIT_NPROC must bind a session uid: with a limit of 1, this process already fills it.
    import resource
    resource.setrlimit(resource.RLIMIT_NPROC, (1, 1))
    try:
        pid = os.fork()
    except BlockingIOError:
        return True
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return False
r["setuid"] = os.geteuid() == 0 and child(drop)
r["setuid_reach"] = r["setuid"] and child(reach)
r["nproc_binds"] = r["setuid"] and child(nproc)
def seccomp():
    libc = ctypes.CDLL(None, use_errno=True)
    bpf = bytes.fromhex(arg["bpf"])
    buf = ctypes.create_string_buffer(bpf, len(bpf))
    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
    prog = Prog(len(bpf) // 8, ctypes.addressof(buf))
    u = ctypes.c_ulong
    if libc.prctl(38, u(1), u(0), u(0), u(0)) != 0:
        return False
    if libc.prctl(22, u(2), u(ctypes.addressof(prog)), u(0), u(0)) != 0:
        return False
    return libc.unshare(0) == -1 and ctypes.get_errno() == errno.EPERM
r["seccomp"] = bool(arg["bpf"]) and child(seccomp)
def session_ns():
    # A spare holder's own namespaces (_sessionfs, prepended to this source), tried in a child.
    rd, wr = os.pipe()
    marker = "/tmp/.tir-agent-probe-%d" % os.getpid()
    pid = os.fork()
    if pid == 0:
        out = {}
        try:
            os.close(rd)
            parent_ipc = os.readlink("/proc/self/ns/ipc")
            private_session_namespace(ws, 1 << 20, 64)
            out["ipc_ns"] = os.readlink("/proc/self/ns/ipc") != parent_ipc
            with open("/proc/sys/kernel/shmmni") as f:
                out["ipc_limits"] = f.read().strip() == "64"
            out["proc_sys_ro"] = bool(os.statvfs("/proc/sys").f_flag & os.ST_RDONLY)
            open(marker, "w").close()
            try:
                with open("/tmp/.probe-big", "wb") as f:
                    f.write(b"x" * (2 << 20))
                out["quota"] = False
            except OSError as e:
                out["quota"] = e.errno == errno.ENOSPC
            try:
                for i in range(100):
                    open("/dev/shm/.probe-%d" % i, "w").close()
                out["inodes"] = False
            except OSError as e:
                out["inodes"] = e.errno == errno.ENOSPC
        except BaseException as e:
            out["error"] = repr(e)
        os.write(wr, json.dumps(out).encode())
        os._exit(0)
    os.close(wr)
    data = b""
    while True:
        chunk = os.read(rd, 65536)
        if not chunk:
            break
        data += chunk
    os.close(rd)
    os.waitpid(pid, 0)
    out = json.loads(data or b"{}")
    out["private"] = not os.path.lexists(marker)
    return out
r["session_ns"] = session_ns() if arg.get("session_ns") else {}
def smaps_fsuid():
    # The memory watchdog reads a session's smaps_rollup with the session's uid as its fs uid.
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(rd)
            drop()
            ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE
            os.write(wr, b"1")
            import time
            time.sleep(30)  # until killed
        finally:
            os._exit(0)
    os.close(wr)
    os.read(rd, 1)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.setfsgid(arg["uid"])
    libc.setfsuid(arg["uid"])
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            ok = "Pss_Anon" in f.read()
    except OSError:
        ok = False
    finally:
        libc.setfsuid(0)
        libc.setfsgid(0)
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.close(rd)
    return ok
r["smaps_fsuid"] = r["setuid"] and smaps_fsuid()
print(json.dumps(r))
"""


def probe_source() -> str:
    """The probe script: ``_sessionfs.py`` (the code it tries) followed by :data:`PROBE_SOURCE`."""
    return (Path(__file__).parent / "_sessionfs.py").read_text() + PROBE_SOURCE


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    facts: dict[str, object]
    error: str = ""


def run_probe(command: list[str], arg: dict[str, object]) -> ProbeResult:
    try:
        proc = subprocess.run(
            [*command, json.dumps(arg)], capture_output=True, text=True, timeout=30, env={}
        )
    except (OSError, subprocess.SubprocessError) as e:
        return ProbeResult(False, {}, str(e))
    if proc.returncode != 0:
        err = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return ProbeResult(False, {}, err)
    try:
        return ProbeResult(True, json.loads(proc.stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError) as e:
        return ProbeResult(False, {}, f"unreadable probe output: {e}")


def sentinel_secrets(roots: list[str], package_dir: str, limit: int = 8) -> list[str]:
    """Host paths (one per home directory, and next to the checkout) that must stay invisible."""
    found: list[str] = []
    homes = ["/root"] + (
        sorted(str(p) for p in Path("/home").iterdir()) if os.path.isdir("/home") else []
    )
    homes.append(os.path.dirname(os.path.dirname(package_dir)))  # beside an editable checkout
    for home in homes:
        try:
            entries = sorted(os.listdir(home))
        except OSError:
            continue
        for name in entries:
            path = os.path.join(home, name)
            if not any(r == path or r.startswith(path + "/") for r in roots):
                found.append(path)
                break
        if len(found) >= limit:
            break
    return found
