"""template_command really confines the template process: network, files, processes, environment."""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.isolation.conftest import detect, run_wrapped
from tir_agent.sandbox import _mounts, _probe, isolation
from tir_agent.sandbox.config import SandboxConfig


@pytest.fixture(scope="module", params=["bwrap", "unshare"])
def protections(request: pytest.FixtureRequest, config: SandboxConfig) -> isolation.Protections:
    """Every test here runs with bubblewrap and with the unshare fallback."""
    return detect(config, request.param)


@pytest.fixture
def listener() -> Iterator[int]:
    """A real TCP listener on the host's 127.0.0.1."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


def run_json(
    code: str, config: SandboxConfig, protections: isolation.Protections, **kw: object
) -> dict[str, object]:
    proc = run_wrapped(code, config, protections, **kw)  # type: ignore[arg-type]
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_host_listener_is_unreachable(
    config: SandboxConfig, protections: isolation.Protections, listener: int
) -> None:
    # Sanity: the listener is reachable from the host itself.
    with socket.create_connection(("127.0.0.1", listener), timeout=2):
        pass
    code = f"""
import json, socket
try:
    socket.create_connection(("127.0.0.1", {listener}), timeout=2)
    r = "connected"
except OSError as e:
    r = type(e).__name__
print(json.dumps({{"connect": r, "ifaces": [n for _, n in socket.if_nameindex()]}}))
"""
    out = run_json(code, config, protections)
    assert out == {"connect": "ConnectionRefusedError", "ifaces": ["lo"]}


def test_network_config_keeps_the_host_network(
    protections: isolation.Protections, listener: int
) -> None:
    config = SandboxConfig(network=True)
    protections = detect(config, protections.mechanism)
    code = f"""
import json, socket
socket.create_connection(("127.0.0.1", {listener}), timeout=2).close()
print(json.dumps({{"ok": True}}))
"""
    assert run_json(code, config, protections) == {"ok": True}


def test_file_system_is_read_only_outside_the_workspace(
    config: SandboxConfig, protections: isolation.Protections, tmp_path: Path
) -> None:
    target = tmp_path / "host-file.txt"
    target.write_text("original")
    package_file = str(Path(isolation.__file__).resolve())
    code = f"""
import json, os
res = {{}}
def attempt(name, fn):
    try:
        fn()
        res[name] = "ok"
    except OSError as e:
        res[name] = e.strerror
def write(path):
    with open(path, "w") as f:
        f.write("pwned")
for name, path in [("usr", "/usr/pwned"), ("etc", "/etc/passwd"), ("package", {package_file!r}),
                   ("root_dir", "/pwned"), ("host_tmp_file", {str(target)!r})]:
    attempt(name, lambda p=path: write(p))
os.mkdir("/sandbox/w")
os.symlink({str(target)!r}, "/sandbox/w/link-host")
os.symlink("/etc/passwd", "/sandbox/w/link-etc")
attempt("symlink_host", lambda: write("/sandbox/w/link-host"))
attempt("symlink_etc", lambda: write("/sandbox/w/link-etc"))
attempt("workspace", lambda: write("/sandbox/w/fine.txt"))
attempt("tmp", lambda: write("/tmp/fine.txt"))
print(json.dumps(res))
"""
    out = run_json(code, config, protections)
    assert out == {
        "usr": "Read-only file system",
        "etc": "Read-only file system",
        "package": "Read-only file system",
        "root_dir": "Read-only file system",
        "host_tmp_file": "No such file or directory",  # the host's /tmp is not even visible
        "symlink_host": "No such file or directory",
        "symlink_etc": "Read-only file system",
        "workspace": "ok",
        "tmp": "ok",
    }
    assert target.read_text() == "original"


def test_secrets_and_homes_are_hidden(
    config: SandboxConfig, protections: isolation.Protections
) -> None:
    roots = _mounts.bind_roots(config)
    checkout = os.path.dirname(_mounts.package_dir())
    # One host file from every home directory and one beside the checkout (e.g. /root/.bashrc).
    secrets = _probe.sentinel_secrets(roots, _mounts.package_dir())
    assert secrets and all(os.path.lexists(p) for p in secrets)
    code = f"""
import json, os
res = {{}}
for path in {["/etc/shadow", "/etc/gshadow", *secrets]!r}:
    try:
        with open(path) as f:
            res[path] = "read %d bytes" % len(f.read())
    except OSError as e:
        res[path] = e.strerror
res["root"] = sorted(os.listdir("/root")) if os.path.isdir("/root") else None
res["home"] = os.path.exists("/home")
res["checkout"] = sorted(os.listdir({checkout!r}))
res["git"] = os.listdir({checkout + "/.git"!r}) if os.path.isdir({checkout + "/.git"!r}) else None
print(json.dumps(res))
"""
    out = run_json(code, config, protections)
    assert out["/etc/shadow"] == out["/etc/gshadow"] == "Permission denied"
    for path in secrets:
        assert out[path] in ("No such file or directory", "Is a directory", "Not a directory"), path
        assert not out[path].startswith("read")
    # Only the interpreter's own directories are bound back under /root and /home.
    under_root = sorted({r.split("/")[2] for r in roots if r.startswith("/root/")})
    assert out["root"] == (under_root or None)
    assert out["home"] is any(r.startswith("/home/") for r in roots)
    # Only the package directory is bound (or the whole checkout, when an editable install puts it
    # on sys.path), read-only; the checkout's .git is covered by an empty tmpfs.
    expected = sorted(os.listdir(checkout)) if checkout in roots else ["tir_agent"]
    assert out["checkout"] == expected
    assert out["git"] in (None, [])


def test_host_processes_and_environment_are_invisible(
    config: SandboxConfig, protections: isolation.Protections
) -> None:
    env = dict(os.environ, OPENAI_API_KEY="sk-fake-key-for-test")
    code = """
import json, os
pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
cmdlines = []
for p in pids:
    try:
        with open("/proc/%d/cmdline" % p, "rb") as f:
            cmdlines.append(f.read().replace(b"\\0", b" ").decode())
    except OSError:
        pass
try:  # pid 1 is the namespace's reaper (bwrap's, or _nsroot's with more capabilities than us)
    with open("/proc/1/environ", "rb") as f:
        env1 = f.read().decode()
except PermissionError:
    env1 = "denied"
print(json.dumps({"pid": os.getpid(), "pids": pids, "cmdlines": cmdlines, "env": dict(os.environ),
                  "env1": env1, "hostname": os.uname().nodename}))
"""
    out = run_json(code, config, protections, env=env)
    assert out["pid"] == 2 and out["pids"] == [1, 2]  # the namespace's reaper and us
    assert not any("pytest" in c for c in out["cmdlines"])  # type: ignore[union-attr]
    env_seen = dict(out["env"])  # type: ignore[call-overload]
    assert env_seen.pop("PWD", "/sandbox") == "/sandbox"  # bwrap sets PWD with --chdir
    assert env_seen == isolation.sandbox_env(config)
    assert "sk-fake" not in json.dumps(out)
    assert out["hostname"] == "sandbox"


def test_template_keeps_only_the_capabilities_it_needs(
    config: SandboxConfig, protections: isolation.Protections
) -> None:
    code = """
import json
status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\\t" in line)
print(json.dumps({k: status[k].strip() for k in ("CapEff", "CapPrm", "NoNewPrivs", "Uid")}))
"""
    out = run_json(code, config, protections)
    # CAP_CHOWN 0, DAC_OVERRIDE 1, FOWNER 3, KILL 5, SETGID 6, SETUID 7, SYS_ADMIN 21 (sessions'
    # own namespaces; the sessions themselves hold no capability, see test_confine.py)
    caps = (0, 1, 3, 5, 6, 7, 21)
    expected = hex(sum(1 << c for c in caps))[2:].zfill(16)
    assert out == {"CapEff": expected, "CapPrm": expected, "NoNewPrivs": "1", "Uid": "0\t0\t0\t0"}


def test_workspace_is_a_sized_tmpfs(protections: isolation.Protections) -> None:
    config = SandboxConfig(workspace_size=8 * 1024 * 1024)
    protections = detect(config, protections.mechanism)
    code = """
import json, os
st = os.statvfs("/sandbox")
try:
    with open("/sandbox/big", "wb") as f:
        f.write(b"x" * (16 * 1024 * 1024))
    r = "ok"
except OSError as e:
    r = e.strerror
print(json.dumps({"size": st.f_blocks * st.f_frsize, "write": r}))
"""
    out = run_json(code, config, protections)
    assert out == {"size": 8 * 1024 * 1024, "write": "No space left on device"}


def test_template_dies_with_the_host(
    config: SandboxConfig, protections: isolation.Protections
) -> None:
    # A host process starts the template, then is SIGKILLed: nothing of the sandbox may survive.
    marker = f"tir_isolation_marker_{os.getpid()}_{time.monotonic_ns()}"
    template = isolation.template_command(
        [config.python, "-I", "-c", f"import time; {marker} = 1; time.sleep(60)"],
        config,
        protections,
    )
    host_code = (
        "import json, subprocess, sys; p = subprocess.Popen(json.loads(sys.argv[1])); "
        "print(p.pid, flush=True); p.wait()"
    )
    host = subprocess.Popen(
        [sys.executable, "-c", host_code, json.dumps(template)], stdout=subprocess.PIPE, text=True
    )
    assert host.stdout is not None
    host.stdout.readline()

    def survivors() -> str:
        return subprocess.run(
            ["pgrep", "-f", marker], capture_output=True, text=True
        ).stdout.strip()

    deadline = time.monotonic() + 5
    while not survivors() and time.monotonic() < deadline:  # wait until the template runs
        time.sleep(0.02)
    assert survivors(), "the template never started"
    host.kill()
    host.wait()
    deadline = time.monotonic() + 5
    while survivors() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert survivors() == ""


def test_start_up_cost(config: SandboxConfig, protections: isolation.Protections) -> None:
    def timed(cmd: list[str]) -> float:
        t = time.perf_counter()
        subprocess.run(cmd, check=True, env={})
        return time.perf_counter() - t

    bare = [config.python, "-I", "-S", "-c", "pass"]
    wrapped = isolation.template_command(bare, config, protections)
    plain = statistics.median(timed(bare) for _ in range(7))
    boxed = statistics.median(timed(wrapped) for _ in range(7))
    print(
        f"\n[{protections.mechanism}] python -I -S -c pass: {plain * 1000:.1f} ms bare, {boxed * 1000:.1f} ms wrapped "
        f"(+{(boxed - plain) * 1000:.1f} ms)"
    )
    assert boxed - plain < 0.2


def test_kernel_knobs_in_proc_are_read_only(
    config: SandboxConfig, protections: isolation.Protections
) -> None:
    # Checked through the mount flags, never by writing: a write to sysrq-trigger would act.
    code = """
import json, os
res = {}
for path in ("/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus", "/", "/usr", "/etc"):
    if os.path.exists(path):
        res[path] = bool(os.statvfs(path).f_flag & os.ST_RDONLY)
res["/proc"] = bool(os.statvfs("/proc/self").f_flag & os.ST_RDONLY)
for path in ("/tmp", "/sandbox", "/dev/shm"):
    res[path] = bool(os.statvfs(path).f_flag & os.ST_RDONLY)
print(json.dumps(res))
"""
    out = run_json(code, config, protections)
    assert out.pop("/proc") is False and out.pop("/tmp") is False
    assert out.pop("/sandbox") is False and out.pop("/dev/shm") is False
    assert out and all(out.values()), out
