"""prepare_session: each session's own mount and IPC namespace, in a real template (bwrap and
unshare), with small quotas. The engine-level attacks are in tests/sandbox/test_attacks_*.py."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.isolation.conftest import Template, detect, session_processes
from tir_agent.sandbox import _mounts, isolation
from tir_agent.sandbox.config import SandboxConfig

QUOTA = {"disk_limit": 2 * 1024**2, "max_files": 100}


@pytest.fixture(scope="module", params=["bwrap", "unshare"])
def protections(request: pytest.FixtureRequest, config: SandboxConfig) -> isolation.Protections:
    """Sessions get their namespaces the same way whichever tool made the sandbox."""
    p = detect(config, request.param)
    assert p.session_files and p.session_ipc, p.table()
    return p


@pytest.fixture(autouse=True)
def _nothing_left_behind(protections: isolation.Protections) -> object:
    yield
    assert session_processes(protections) == []


def bound_in_tmp(config: SandboxConfig) -> list[str]:
    """What a fresh /tmp in the sandbox holds: a checkout or virtualenv under the host's /tmp (a
    CI clone) is bound below it, read-only."""
    return sorted({d.split("/")[2] for d in _mounts.bind_roots(config) if d.startswith("/tmp/")})


def test_tmp_shm_and_workdir_are_one_private_quota(
    template: Template, config: SandboxConfig
) -> None:
    code = """
import errno, os
top = {}  # the topmost mount of each place: (device, super options)
for line in open("/proc/self/mountinfo"):
    fields = line.split()
    if fields[4] in ("/tmp", "/dev/shm", "/sandbox"):
        top[fields[4]] = (fields[2], fields[-1])
out["mounts"] = sorted(top.values())
out["empty"] = [os.listdir("/tmp"), os.listdir("/dev/shm")]
written = 0
try:
    for path in ("/tmp/a", "/dev/shm/b", "c"):
        with open(path, "wb") as f:
            for _ in range(2):
                f.write(b"x" * (512 * 1024))
                f.flush()
                written += 512 * 1024
except OSError as e:
    out["full"] = errno.errorcode[e.errno]
out["written"] = written
"""
    r = template.run(code, slot=1, session_ns=True, config=QUOTA)
    out = r["out"]
    assert "error" not in out, out
    (dev, options), *others = out["mounts"]
    assert all(o == [dev, options] for o in others), out["mounts"]  # one tmpfs for all three
    assert "size=2048k" in options and "nr_inodes=100" in options
    assert out["empty"] == [bound_in_tmp(config), []]
    assert out["full"] == "ENOSPC"  # 2 MiB for the three places together
    assert 1024**2 < out["written"] <= 2 * 1024**2  # and the third place was refused


def test_inodes_are_capped(template: Template) -> None:
    code = """
import errno
n = 0
try:
    while n < 1000:
        open(f"/tmp/{n}", "w").close()
        n += 1
except OSError as e:
    out["full"] = errno.errorcode[e.errno]
out["n"] = n
"""
    out = template.run(code, slot=1, session_ns=True, config=QUOTA)["out"]
    assert out["full"] == "ENOSPC" and 90 <= out["n"] < 100


def test_system_v_ipc_is_private_bounded_and_gone_with_the_session(
    template: Template, config: SandboxConfig
) -> None:
    code = """
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
out["limits"] = [open(f"/proc/sys/kernel/{k}").read().split() for k in ("shmmax", "shmall", "shmmni", "msgmni")]
def shmget(key, size):
    if libc.shmget(key, ctypes.c_size_t(size), 0o1600) == -1:
        return errno.errorcode[ctypes.get_errno()]
    return "ok"
out["too_big"] = shmget(0x7171, 3 * 1024 * 1024)
out["fits"] = shmget(0x7172, 1024 * 1024)
out["over_total"] = [shmget(0x7173 + i, 1024 * 1024) for i in range(2)]
queues = [libc.msgget(0x100 + i, 0o1600) for i in range(40)]
out["queues"] = sum(q >= 0 for q in queues)
out["segments"] = len(open("/proc/sysvipc/shm").read().splitlines()) - 1
"""
    out = template.run(code, slot=2, session_ns=True, config=QUOTA)["out"]
    assert "error" not in out, out
    assert out["limits"] == [[str(2 * 1024**2)], [str(2 * 1024**2 // 4096)], ["64"], ["32"]]
    assert out["too_big"] == "EINVAL"  # over shmmax
    assert out["fits"] == "ok" and out["over_total"] == ["ok", "ENOSPC"]  # shmall
    assert out["queues"] == 32
    assert out["segments"] == 2
    # The same slot again: a fresh IPC namespace, the segments died with the session.
    again = template.run(
        "out['segments'] = len(open('/proc/sysvipc/shm').read().splitlines()) - 1",
        slot=2,
        session_ns=True,
        config=QUOTA,
    )["out"]
    assert again["segments"] == 0
    # and the template's own namespace never saw them
    mine = template.run("out['segments'] = len(open('/proc/sysvipc/shm').read().splitlines()) - 1")
    assert mine["out"]["segments"] == 0


def test_proc_sys_stays_read_only_and_the_template_is_untouched(
    template: Template, config: SandboxConfig
) -> None:
    code = """
import os
out["ro"] = bool(os.statvfs("/proc/sys").f_flag & os.ST_RDONLY)
open("/tmp/mark", "w").close()
"""
    out = template.run(code, slot=3, session_ns=True, config=QUOTA)["out"]
    assert out["ro"] is True
    after = template.run(
        "import os\nout['tmp'] = os.listdir('/tmp')\nout['ws'] = sorted(os.listdir('/sandbox'))"
    )["out"]
    assert after["tmp"] == bound_in_tmp(config) and "mark" not in str(after)


def test_detection_reports_missing_without_cap_sys_admin(
    config: SandboxConfig, monkeypatch: pytest.MonkeyPatch, protections: isolation.Protections
) -> None:
    # A template without CAP_SYS_ADMIN cannot make the sessions' namespaces: reported, not assumed.
    caps = tuple(c for c in isolation.ZYGOTE_CAPABILITIES if c != "CAP_SYS_ADMIN")
    monkeypatch.setattr(isolation, "ZYGOTE_CAPABILITIES", caps)
    weak = isolation._detect(config, (protections.mechanism,))
    assert weak.mechanism == protections.mechanism and weak.filesystem and weak.session_uids
    assert not weak.session_files and not weak.session_ipc
    how = dict(weak.missing)
    assert "run the sandbox as root" in how["session_files"]
    assert "Operation not permitted" in how["session_files"]
    assert "session_files" not in weak.active()
    assert dataclasses.replace(weak, missing=()).session_memory  # independent of the namespaces
    # System V IPC is refused by seccomp instead of being confined to the session
    assert weak.seccomp_program == isolation._seccomp.compiled_filter(False, ipc=False).bpf.hex()
    assert protections.seccomp_program == isolation._seccomp.compiled_filter(False).bpf.hex()
    assert os.geteuid() == 0


def test_what_is_bound_below_tmp_stays_visible_read_only(
    config: SandboxConfig,
    protections: isolation.Protections,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # A checkout or virtualenv under the host's /tmp (a CI clone, say) is bound below the
    # sandbox's /tmp; a session's own /tmp must keep it reachable (read-only).
    (tmp_path / "module.py").write_text("VALUE = 42\n")
    roots = _mounts.bind_roots(config)
    monkeypatch.setattr(_mounts, "bind_roots", lambda config: [*roots, str(tmp_path)])
    code = (
        (Path(isolation.__file__).parent / "_sessionfs.py").read_text()
        + f"""
import json
private_session_namespace("/sandbox", 1 << 20, 64)
out = {{"read": open({str(tmp_path / "module.py")!r}).read()}}
try:
    open({str(tmp_path / "new.py")!r}, "w")
    out["write"] = "ok"
except OSError as e:
    out["write"] = e.strerror
out["tmp_private"] = sorted(os.listdir("/tmp"))
print(json.dumps(out))
"""
    )
    argv = [config.python, "-I", "-S", "-c", code]
    proc = subprocess.run(
        isolation.template_command(argv, config, protections),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["read"] == "VALUE = 42\n"
    assert out["write"] == "Read-only file system"
    assert str(tmp_path).startswith("/tmp/pytest-of-root/")
    assert out["tmp_private"] == sorted({*bound_in_tmp(config), "pytest-of-root"})


def test_ipc_limits_leave_proc_sys_read_only_even_if_it_was_not_covered(
    config: SandboxConfig, protections: isolation.Protections
) -> None:
    # A sandbox whose /proc/sys is not a read-only mount of its own (an older bwrap, say) must
    # not end up with writable kernel knobs after a session set its IPC limits.
    code = (
        (Path(isolation.__file__).parent / "_sessionfs.py").read_text()
        + """
import json
_check(_libc().unshare(CLONE_NEWNS | CLONE_NEWIPC), "unshare")
_mount(None, "/", None, MS_REC | MS_PRIVATE)
_check(_libc().umount2(b"/proc/sys", MNT_DETACH), "umount")
before = bool(os.statvfs("/proc/sys").f_flag & os.ST_RDONLY)
_set_ipc_limits(ipc_limits(1 << 20))
print(json.dumps({
    "before": before,
    "after": bool(os.statvfs("/proc/sys").f_flag & os.ST_RDONLY),
    "shmmax": open("/proc/sys/kernel/shmmax").read().strip(),
}))
"""
    )
    argv = [config.python, "-I", "-S", "-c", code]
    proc = subprocess.run(
        isolation.template_command(argv, config, protections),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"before": False, "after": True, "shmmax": str(1 << 20)}
