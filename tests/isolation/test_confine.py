"""confine_session in real sessions forked by a real template inside bubblewrap."""

from __future__ import annotations

import os
import statistics

import pytest

from tests.isolation.conftest import Template, detect, session_processes
from tir_agent.sandbox import isolation
from tir_agent.sandbox.config import SandboxConfig


@pytest.fixture(scope="module", params=["bwrap", "unshare"])
def protections(request: pytest.FixtureRequest, config: SandboxConfig) -> isolation.Protections:
    """Sessions are confined the same way whichever tool made the namespaces."""
    return detect(config, request.param)


@pytest.fixture(autouse=True)
def _nothing_left_behind(protections: isolation.Protections) -> object:
    yield
    assert session_processes(protections) == []


def test_session_runs_as_its_own_uid_in_a_private_workdir(
    template: Template, protections: isolation.Protections
) -> None:
    code = """
import os, resource
out["ids"] = [os.getresuid(), os.getresgid(), os.getgroups()]
out["cwd"] = os.getcwd()
out["home"] = os.environ["HOME"]
st = os.stat(".")
out["workdir"] = [st.st_uid, oct(st.st_mode & 0o777)]
with open("note.txt", "w") as f:
    f.write("hi")
out["file_mode"] = oct(os.stat("note.txt").st_mode & 0o777)
status = open("/proc/self/status").read()
out["caps"] = [l.split()[1] for l in status.splitlines() if l.startswith(("CapEff", "CapPrm"))]
out["nnp"] = [l.split()[1] for l in status.splitlines() if l.startswith(("NoNewPrivs", "Seccomp:"))]
"""
    r = template.run(code, slot=3)
    uid = isolation.session_uid(3, protections)
    out = r["out"]
    assert "error" not in out, out
    assert out["ids"] == [[uid] * 3, [uid] * 3, []]
    assert out["cwd"] == out["home"] == f"{protections.workspace_root}/s3"
    assert out["workdir"] == [uid, "0o700"]
    assert out["file_mode"] == "0o600"
    assert out["caps"] == ["0000000000000000"] * 2
    assert out["nnp"] == ["1", "2"]  # no_new_privs, seccomp mode 2 (filter)
    assert r["workdir_left"] is False


def test_rlimits_are_set_and_cannot_be_raised(template: Template, config: SandboxConfig) -> None:
    code = """
import resource
names = ["RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_NPROC", "RLIMIT_CORE"]
out["limits"] = {n: list(resource.getrlimit(getattr(resource, n))) for n in names}
out["raise"] = {}
for n in names:
    soft, hard = resource.getrlimit(getattr(resource, n))
    try:
        resource.setrlimit(getattr(resource, n), (hard + 1, hard + 1))
        out["raise"][n] = "raised"
    except (ValueError, OSError) as e:
        out["raise"][n] = type(e).__name__
"""
    out = template.run(code)["out"]
    assert out["limits"] == {
        "RLIMIT_AS": [config.memory_limit] * 2,
        "RLIMIT_CPU": [config.cpu_time_limit] * 2,
        "RLIMIT_FSIZE": [config.max_file_size] * 2,
        "RLIMIT_NOFILE": [config.max_open_files] * 2,
        "RLIMIT_NPROC": [config.max_processes] * 2,
        "RLIMIT_CORE": [0, 0],
    }
    assert set(out["raise"].values()) == {"ValueError"}


def test_memory_limit_turns_a_huge_allocation_into_memory_error(template: Template) -> None:
    code = """
try:
    x = bytearray(50 * 1024**3)
    out["alloc"] = "allocated"
except MemoryError:
    out["alloc"] = "MemoryError"
y = bytearray(10 * 1024**2)
out["small"] = len(y)
"""
    out = template.run(code)["out"]
    assert (out["alloc"], out["small"]) == ("MemoryError", 10 * 1024**2)


def test_fork_bomb_is_bounded_and_killed(template: Template, config: SandboxConfig) -> None:
    code = """
import os, time
n = 0
err = None
while n < 10_000:
    try:
        pid = os.fork()
    except OSError as e:
        err = type(e).__name__
        break
    if pid == 0:
        time.sleep(300)  # children hang around: only kill_uid ends them
        os._exit(0)
    n += 1
out["forked"] = n
out["error"] = err
"""
    assert config.max_processes is not None
    r = template.run(code, slot=1)
    out = r["out"]
    assert out["error"] == "BlockingIOError"  # EAGAIN from RLIMIT_NPROC
    assert 0 < out["forked"] < config.max_processes  # the session itself counts too
    # The children remain, plus the session itself if it has not exited yet: never more than the limit.
    assert out["forked"] <= r["alive_before_kill"] <= out["forked"] + 1 <= config.max_processes
    # kill_uid got every child (and the session, unless it exited in between); none is left.
    assert out["forked"] <= r["killed"] <= r["alive_before_kill"] and r["left_after_kill"] == 0
    print(f"\nfork bomb: {out['forked']} forks, kill_uid took {r['kill_ms']:.2f} ms")


def test_tracing_and_reading_other_processes_memory_are_denied(template: Template) -> None:
    code = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
ppid = os.getppid()
def call(name, *args):
    ctypes.set_errno(0)
    rv = getattr(libc, name)(*args)
    return [rv, os.strerror(ctypes.get_errno()) if rv == -1 else None]
out["ptrace_attach"] = call("ptrace", 16, ppid, None, None)   # PTRACE_ATTACH on the template
out["ptrace_traceme"] = call("ptrace", 0, 0, None, None)      # PTRACE_TRACEME
buf = ctypes.create_string_buffer(16)
class IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
local = IoVec(ctypes.addressof(buf), 16)
remote = IoVec(0x400000, 16)
out["process_vm_readv"] = call("syscall", 310, ppid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
for path in ("/proc/%d/mem" % ppid, "/proc/%d/environ" % ppid, "/proc/1/environ"):
    try:
        open(path, "rb").read(1)
        out[path.split("/")[-1] + str(path.count("1/"))] = "read"
    except OSError as e:
        out[path] = e.strerror
out["unshare"] = call("unshare", 0x10000000)  # CLONE_NEWUSER
out["mount"] = call("mount", b"none", b"/tmp", b"tmpfs", 0, None)
"""
    out = template.run(code)["out"]
    eperm = [-1, "Operation not permitted"]
    assert out["ptrace_attach"] == out["ptrace_traceme"] == out["process_vm_readv"] == eperm
    assert out["unshare"] == out["mount"] == eperm
    denied = {k: v for k, v in out.items() if k.startswith("/proc/")}
    assert len(denied) == 3 and set(denied.values()) == {"Permission denied"}, out


def test_cannot_signal_the_template_or_pid_1(template: Template) -> None:
    code = """
import os, signal
for name, pid in (("parent", os.getppid()), ("pid1", 1)):
    for sig in (signal.SIGKILL, signal.SIGTERM, 0):
        try:
            os.kill(pid, sig)
            out["kill"][f"{name}-{int(sig)}"] = "sent"
        except OSError as e:
            out["kill"][f"{name}-{int(sig)}"] = type(e).__name__
"""
    r = template.run("out['kill'] = {}\n" + code)
    kills = r["out"]["kill"]
    assert set(kills) == {f"{n}-{s}" for n in ("parent", "pid1") for s in (9, 15, 0)}
    assert set(kills.values()) == {"PermissionError"}
    assert template.proc.poll() is None  # the template is alive: the next request works
    assert template.run("out['ok'] = 1")["out"]["ok"] == 1


def test_sessions_cannot_read_each_others_files(
    template: Template, protections: isolation.Protections
) -> None:
    first = template.run("open('secret.txt', 'w').write('s1 secret')", slot=0, keep_workdir=True)
    assert "error" not in first["out"] and first["workdir_left"] is True
    code = (
        f"""
import os
s0 = {protections.workspace_root + "/s0"!r}
"""
        + """
res = {}
for what, fn in (("list", lambda: os.listdir(s0)),
                 ("read", lambda: open(s0 + "/secret.txt").read()),
                 ("write", lambda: open(s0 + "/evil.txt", "w")),
                 ("remove", lambda: os.rmdir(s0)),
                 ("chmod", lambda: os.chmod(s0, 0o777))):
    try:
        fn()
        res[what] = "allowed"
    except OSError as e:
        res[what] = e.strerror
out["attempts"] = res
"""
    )
    second = template.run(code, slot=1)
    attempts = second["out"]["attempts"]
    assert len(attempts) == 5 and "allowed" not in attempts.values(), attempts
    assert attempts["chmod"] == "Operation not permitted"  # EPERM: not the owner
    cleanup = template.run("", slot=0, cleanup_only=True)
    assert cleanup == {"killed": 0, "workdir_left": False}


def test_a_slot_reused_starts_with_an_empty_workdir(template: Template) -> None:
    template.run("open('left.txt', 'w').write('x')", slot=2, keep_workdir=True)
    out = template.run("import os; out['files'] = os.listdir('.')", slot=2)["out"]
    assert out["files"] == []


def test_network_sockets_are_denied_by_seccomp(template: Template) -> None:
    code = """
import socket
for name, fam in (("inet", socket.AF_INET), ("inet6", socket.AF_INET6), ("unix", socket.AF_UNIX)):
    try:
        socket.socket(fam, socket.SOCK_STREAM).close()
        out[name] = "created"
    except OSError as e:
        out[name] = e.strerror
"""
    out = template.run(code)["out"]
    assert out["inet"] == out["inet6"] == "Operation not permitted"
    assert out["unix"] == "created"


def test_threads_and_subprocesses_still_work(template: Template) -> None:
    code = """
import subprocess, threading, sys
t = threading.Thread(target=lambda: out.__setitem__("thread", "ran"))
t.start(); t.join()
out["child"] = subprocess.run([sys.executable, "-c", "print(6 * 7)"], capture_output=True, text=True).stdout
import numpy
out["numpy"] = int(numpy.arange(10).sum())
"""
    out = template.run(code)["out"]
    assert (out.get("error"), out["thread"], out["child"], out["numpy"]) == (
        None,
        "ran",
        "42\n",
        45,
    )


def test_confine_session_is_fast(template: Template) -> None:
    times = [template.run("pass", slot=i % 4)["out"]["confine_ms"] for i in range(20)]
    median = statistics.median(times)
    print(
        f"\nconfine_session: median {median:.2f} ms, max {max(times):.2f} ms over {len(times)} sessions"
    )
    assert median < 5


def test_inherited_descriptors_are_closed_and_temp_files_stay_in_the_workdir(
    template: Template, protections: isolation.Protections
) -> None:
    code = """
import os, tempfile
def is_open(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False
out["open"] = [is_open(fd) for fd in (0, 1, 2, out["report_fd"], *out["control_fds"])]
out["tmp"] = tempfile.mkstemp()[1]
"""
    out = template.run(code, slot=4, close_fds=True)["out"]
    assert out["open"] == [True, True, True, True, False, False]  # the control pipe is gone
    assert out["tmp"].startswith(f"{protections.workspace_root}/s4/")
    out = template.run(code, slot=4)["out"]
    assert out["open"] == [True] * 6  # without keep_fds everything is inherited


X86_64_SYSCALLS = {
    "clone_newuser": (56, 0x10000000 | 17),  # clone(CLONE_NEWUSER | SIGCHLD)
    "clone_newnet": (56, 0x40000000 | 17),
    "clone3": (435, 0, 0),
    "io_uring_setup": (425, 1, 0),
    "bpf": (321, 0, 0, 0),
    "keyctl": (250, 0, 0),
    "add_key": (248, 0, 0, 0, 0, 0),
    "perf_event_open": (298, 0, 0, -1, -1, 0),
    "setns": (308, -1, 0),
    "userfaultfd": (323, 0),
    "pidfd_getfd": (438, -1, 0, 0),
}


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="raw syscall numbers are x86_64's")
def test_namespace_and_kernel_surface_syscalls_are_denied(template: Template) -> None:
    code = f"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
for name, args in {X86_64_SYSCALLS!r}.items():
    ctypes.set_errno(0)
    rv = libc.syscall(*[ctypes.c_long(a) for a in args])
    if rv == 0 and name.startswith("clone"):
        os._exit(0)  # a child was created: must not happen, and must not run on
    out[name] = [rv, os.strerror(ctypes.get_errno())]
"""
    out = template.run(code)["out"]
    expected = {name: [-1, "Operation not permitted"] for name in X86_64_SYSCALLS}
    expected["clone3"] = [-1, "Function not implemented"]  # ENOSYS: libc falls back to clone
    assert {k: v for k, v in out.items() if k in X86_64_SYSCALLS} == expected, out


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the x32 ABI is x86_64's")
def test_x32_syscall_numbers_are_no_bypass(template: Template) -> None:
    # unshare(CLONE_NEWUSER) through the x32 ABI (nr | 0x40000000): the filter kills the process
    # (bad architecture) or the kernel lacks x32 (ENOSYS); either way it must not succeed.
    code = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
rv = libc.syscall(ctypes.c_long(0x40000000 | 272), ctypes.c_long(0x10000000))
out["x32_unshare"] = [rv, os.strerror(ctypes.get_errno())]
"""
    r = template.run(code)
    assert r["out"] is None or r["out"]["x32_unshare"][0] == -1, r
    if r["out"] is None:
        assert r["exitcode"] == -31  # SIGSYS
