"""Limits and isolation of sandboxed code: what the host offers, and how sessions are confined.

Two layers. The template (zygote) process starts inside namespaces made by bubblewrap (or, as a
fallback, util-linux ``unshare``): no network, its own pid/ipc/uts namespaces, a read-only view of
the few host directories Python needs, secrets hidden, fresh ``/dev``, ``/proc``, ``/tmp`` and an
in-memory workspace, a cleared environment, and only the capabilities needed to hand out uids
(:func:`template_command`). Every session process forked from it then confines itself before any
user code runs (:func:`confine_session`): a private work directory, its own unprivileged uid,
rlimits that cannot be raised, no new privileges, death with its parent and a seccomp filter.

:func:`detect_protections` probes the host once (it really starts the wrapped interpreter) and
returns :class:`Protections`: what is active, and for everything missing, how to get it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import resource
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tir_agent._log import get_logger
from tir_agent.errors import IsolationError
from tir_agent.sandbox import _seccomp
from tir_agent.sandbox.config import SandboxConfig

log = get_logger(__name__)

Mechanism = Literal["bwrap", "unshare", "none"]

WORKSPACE_ROOT = "/sandbox"
"""Inside the sandbox: the in-memory file system holding the per-session work directories."""

UID_BASE = 2_000_000
"""Session slot ``n`` runs as uid and gid ``UID_BASE + n`` (no /etc/passwd entry needed)."""

ZYGOTE_CAPABILITIES: tuple[str, ...] = (
    "CAP_SETUID",  # give each session its own uid
    "CAP_SETGID",
    "CAP_CHOWN",  # hand the session its work directory
    "CAP_DAC_OVERRIDE",  # remove work directories whatever modes user code left behind
    "CAP_FOWNER",
    "CAP_KILL",  # kill_uid
)
"""The only capabilities the template keeps inside bubblewrap (when started as root)."""

SYSTEM_DIRS: tuple[str, ...] = (
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc",
)
"""Host directories visible (read-only) inside the sandbox, besides Python's own."""

HIDDEN_FILES: tuple[str, ...] = ("/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-")
"""Files covered by an unreadable node inside the sandbox."""

THREAD_ENV_VARS: tuple[str, ...] = (
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)

INSTALL_BWRAP = (
    "install bubblewrap (Debian/Ubuntu: `apt-get install bubblewrap`; Fedora: `dnf install bubblewrap`)"
    " and allow user namespaces or run as root"
)
INSTALL_SECCOMP = "pip install 'tir-agent[seccomp]' (the pyseccomp bindings; needs libseccomp2)"
RUN_AS_ROOT = (
    "run the sandbox as root (e.g. in a container); unprivileged, processes are bounded by "
    "RLIMIT_NPROC of your own user instead"
)

_PROTECTION_DOCS: dict[str, str] = {
    "network": "user code runs in a new, empty network namespace",
    "filesystem": "read-only system dirs, secrets and home dirs hidden, private work dirs",
    "pid_namespace": "user code cannot see or signal host processes",
    "session_uids": "each session has its own uid: processes bounded, sessions cannot touch each other",
    "seccomp": "ptrace, mounts, namespaces, keyrings, bpf, io_uring ... are denied",
    "rlimits": "memory, CPU time, file size and open files are capped (soft == hard)",
    "env_scrubbed": "user code sees only sandbox_env(), never the host's environment",
}


@dataclass(frozen=True)
class Protections:
    """Which protections are active on this host for a given SandboxConfig."""

    mechanism: Mechanism
    """How the namespaces are made: ``bwrap``, ``unshare``, or ``none``."""
    network: bool
    """User code runs in a new, empty network namespace."""
    filesystem: bool
    """The root file system is read-only, secrets are hidden, work directories are private."""
    pid_namespace: bool
    """User code cannot see or signal host processes."""
    session_uids: bool
    """Each session runs as its own unprivileged uid (fork bombs bounded even as root)."""
    seccomp: bool
    """A seccomp filter blocks ptrace, mounts, namespaces, keyrings, ..."""
    rlimits: bool = True
    """Resource limits are applied (always)."""
    env_scrubbed: bool = True
    """The host's environment never reaches user code (always)."""
    missing: tuple[tuple[str, str], ...] = ()
    """``(protection, how to get it)`` for each inactive protection."""
    network_allowed: bool = False
    """``config.network`` was on: no network isolation was asked for."""
    workspace_root: str = WORKSPACE_ROOT
    """Where work directories live, as seen by the template (outside a sandbox: a host temp dir)."""
    executable: str | None = None
    """The bwrap or unshare binary used by :func:`template_command`."""

    def active(self) -> list[str]:
        """Names of the active protections, in a fixed order."""
        return [name for name in _PROTECTION_DOCS if getattr(self, name)]

    def table(self) -> str:
        """A human-readable table, one line per protection."""
        how = dict(self.missing)
        lines = [f"mechanism      {self.mechanism}"]
        for name, doc in _PROTECTION_DOCS.items():
            if getattr(self, name):
                lines.append(f"{name:<14} active    {doc}")
            else:
                lines.append(f"{name:<14} MISSING   {how.get(name, doc)}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict (to hand the host's detection result to the template process)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Protections:
        """Inverse of :meth:`to_dict`."""
        values = dict(data)
        values["missing"] = tuple(tuple(pair) for pair in values.get("missing", ()))
        return cls(**values)

    def require_strict(self) -> None:
        """Raise :class:`IsolationError` unless network (when not allowed) and file-system isolation are active."""
        needed = ["filesystem"] + ([] if self.network_allowed else ["network"])
        lacking = [name for name in needed if not getattr(self, name)]
        if lacking:
            how = dict(self.missing)
            reasons = "; ".join(f"{name}: {how.get(name, 'unavailable')}" for name in lacking)
            raise IsolationError(
                f"strict sandbox refused to start: no {' and no '.join(lacking)} isolation ({reasons}). "
                f"To fix: {INSTALL_BWRAP}, or pass strict=False to run with weaker isolation."
            )


# --------------------------------------------------------------------------------------------------
# Environment and uids


def sandbox_env(config: SandboxConfig, *, home: str = WORKSPACE_ROOT) -> dict[str, str]:
    """The whole environment of user code; nothing of the host's."""
    python_bin = os.path.dirname(config.python)
    env = {
        "PATH": f"{python_bin}:/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "MPLBACKEND": "Agg",
    }
    env.update(dict.fromkeys(THREAD_ENV_VARS, "1"))
    env.update(config.env)
    return env


def session_uid(slot: int) -> int:
    """The unprivileged uid (== gid) of session slot ``slot``."""
    if slot < 0:
        raise ValueError(f"session slot must be >= 0, got {slot}")
    return UID_BASE + slot


# --------------------------------------------------------------------------------------------------
# The template's command line


@functools.cache
def _python_paths(python: str) -> tuple[str, ...]:
    """Directories the interpreter ``python`` needs: its prefixes and ``sys.path`` (as with -I)."""
    code = (
        "import json, sys; "
        "print(json.dumps([sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix] + sys.path))"
    )
    try:
        out = subprocess.run(
            [python, "-I", "-c", code],
            capture_output=True,
            text=True,
            timeout=30,
            env={},
            check=True,
        ).stdout
        paths = [str(p) for p in json.loads(out) if p]
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        raise IsolationError(f"cannot start the sandbox interpreter {python!r}: {e}") from e
    exe = os.path.realpath(python)
    paths.append(os.path.dirname(os.path.dirname(exe)))  # the prefix the binary really lives in
    if os.path.realpath(python) != os.path.abspath(python):
        paths.append(os.path.dirname(os.path.abspath(python)))
    return tuple(paths)


def _package_dir() -> str:
    """The ``tir_agent`` package directory (may be an editable checkout)."""
    return str(Path(__file__).resolve().parent.parent)


def _covered(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _bind_roots(config: SandboxConfig) -> list[str]:
    """Minimal set of host directories to bind read-only for Python and tir_agent."""
    system = [d for d in SYSTEM_DIRS if os.path.isdir(d)]
    candidates: list[str] = []
    for p in (*_python_paths(config.python), _package_dir()):
        for q in {os.path.abspath(p), os.path.realpath(p)}:
            if os.path.isdir(q):
                candidates.append(q)
            elif os.path.isfile(q):  # e.g. a zip on sys.path
                candidates.append(os.path.dirname(q))
    roots: list[str] = []
    for p in sorted(set(candidates), key=len):
        if _covered(p, system) or _covered(p, roots) or p == "/":
            continue
        roots.append(p)
    return roots


def _bwrap_args(config: SandboxConfig, protections: Protections) -> list[str]:
    assert protections.executable is not None
    root = os.geteuid() == 0
    args = [
        protections.executable,
        "--die-with-parent",
        "--new-session",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--hostname",
        "sandbox",
        "--unshare-cgroup-try",
    ]
    if not config.network:
        args.append("--unshare-net")
    if not root:
        args += ["--unshare-user", "--disable-userns"]
    for d in SYSTEM_DIRS:
        if os.path.islink(d):
            args += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            args += ["--ro-bind", d, d]
    roots = _bind_roots(config)
    made: set[str] = set()
    for d in roots:
        # bwrap would create missing parents (e.g. /root for /root/.pyenv/...) with mode 0700,
        # which locks session uids out of the interpreter: create them 0755 first.
        parent = os.path.dirname(d)
        ancestors: list[str] = []
        while parent not in ("/", "") and parent not in made:
            ancestors.append(parent)
            parent = os.path.dirname(parent)
        for a in reversed(ancestors):
            args += ["--perms", "0755", "--dir", a]
            made.add(a)
    for d in roots:
        args += ["--ro-bind", d, d]
        if os.path.isdir(os.path.join(d, ".git")):  # an editable checkout: keep its git config out
            args += ["--tmpfs", os.path.join(d, ".git")]
    for f in HIDDEN_FILES:
        if os.path.exists(f):
            # /dev/null on a nodev mount: opening it fails with EACCES, even for root.
            args += ["--ro-bind", "/dev/null", f]
    args += ["--dev", "/dev", "--proc", "/proc"]
    args += ["--perms", "1777", "--tmpfs", "/dev/shm"]
    size = [] if config.workspace_size is None else ["--size", str(config.workspace_size)]
    args += ["--perms", "1777", *size, "--tmpfs", "/tmp"]
    args += ["--perms", "0755", *size, "--tmpfs", WORKSPACE_ROOT]
    args += [
        "--remount-ro",
        "/",
    ]  # the root tmpfs bwrap builds on; mounts below keep their own mode
    if root:
        args += ["--cap-drop", "ALL"]
        for cap in ZYGOTE_CAPABILITIES:
            args += ["--cap-add", cap]
    args.append("--clearenv")
    for key, value in sandbox_env(config).items():
        args += ["--setenv", key, value]
    args += ["--chdir", WORKSPACE_ROOT]
    return args


def _env_prefix(config: SandboxConfig) -> list[str]:
    """``env -i K=V ...``: start the wrapper itself with a clean environment."""
    env_bin = shutil.which("env") or "/usr/bin/env"
    return [env_bin, "-i", *(f"{k}={v}" for k, v in sandbox_env(config).items())]


def _unshare_args(config: SandboxConfig, protections: Protections) -> list[str]:
    assert protections.executable is not None
    args: list[str] = []
    setpriv = shutil.which("setpriv")
    if setpriv:  # die with the host (PR_SET_PDEATHSIG survives exec)
        args += [setpriv, "--pdeathsig", "KILL"]
    args += [
        protections.executable,
        "--pid",
        "--fork",
        "--kill-child",
        "--mount-proc",
        "--ipc",
        "--uts",
    ]
    if not config.network:
        args.append("--net")
    return args


def template_command(
    argv: list[str],
    config: SandboxConfig,
    protections: Protections,
    *,
    pass_fds: Sequence[int] = (),
) -> list[str]:
    """Wrap the command that starts the template (zygote) so everything it forks is confined.

    File descriptors in ``pass_fds`` stay open (neither bwrap nor unshare closes inherited fds;
    the caller still passes them to ``subprocess``). The returned command starts from an empty
    environment plus :func:`sandbox_env`, whatever environment the caller passes.
    """
    del pass_fds  # inherited fds are kept by every mechanism
    if protections.mechanism == "bwrap":
        return [*_env_prefix(config), *_bwrap_args(config, protections), "--", *argv]
    if protections.mechanism == "unshare":
        return [*_env_prefix(config), *_unshare_args(config, protections), "--", *argv]
    setpriv = shutil.which("setpriv")
    return [*_env_prefix(config), *([setpriv, "--pdeathsig", "KILL"] if setpriv else []), *argv]


# --------------------------------------------------------------------------------------------------
# Detection

_PROBE = r"""
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
r["setuid"] = os.geteuid() == 0 and child(drop)
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
print(json.dumps(r))
"""


@dataclass(frozen=True)
class _ProbeResult:
    ok: bool
    facts: dict[str, object]
    error: str = ""


def _run_probe(command: list[str], arg: dict[str, object]) -> _ProbeResult:
    try:
        proc = subprocess.run(
            [*command, json.dumps(arg)], capture_output=True, text=True, timeout=30, env={}
        )
    except (OSError, subprocess.SubprocessError) as e:
        return _ProbeResult(False, {}, str(e))
    if proc.returncode != 0:
        err = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return _ProbeResult(False, {}, err)
    try:
        return _ProbeResult(True, json.loads(proc.stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError) as e:
        return _ProbeResult(False, {}, f"unreadable probe output: {e}")


def _sentinel_secrets(config: SandboxConfig, limit: int = 8) -> list[str]:
    """Host paths in home directories that must be invisible inside the sandbox."""
    roots = _bind_roots(config)
    found: list[str] = []
    homes = ["/root"] + (
        sorted(str(p) for p in Path("/home").iterdir()) if os.path.isdir("/home") else []
    )
    homes.append(os.path.dirname(os.path.dirname(_package_dir())))  # next to an editable checkout
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


@functools.cache
def _host_workspace() -> str:
    """Work-dir root when there is no mount namespace: a private directory under the host's /tmp."""
    return tempfile.mkdtemp(prefix="tir-agent-ws-")


def _detect(config: SandboxConfig) -> Protections:
    root = os.geteuid() == 0
    missing: list[tuple[str, str]] = []
    try:
        bpf = _seccomp.compiled_filter(config.network).bpf.hex()
        seccomp_error = ""
    except _seccomp.SeccompUnavailableError as e:
        bpf, seccomp_error = "", str(e)

    arg: dict[str, object] = {
        "uid": session_uid(0),
        "bpf": bpf,
        "workspace": WORKSPACE_ROOT,
        "secrets": _sentinel_secrets(config),
    }
    probe_argv = [config.python, "-I", "-S", "-c", _PROBE]
    mechanism: Mechanism = "none"
    result = _ProbeResult(False, {})
    errors: list[str] = []
    bwrap = shutil.which("bwrap")
    unshare = shutil.which("unshare")
    if bwrap:
        trial = Protections("bwrap", False, False, False, False, False, executable=bwrap)
        result = _run_probe(template_command(probe_argv, config, trial), arg)
        if result.ok:
            mechanism = "bwrap"
        else:
            errors.append(f"bwrap failed: {result.error}")
    else:
        errors.append("bwrap not found")
    if mechanism == "none" and root and unshare:
        trial = Protections("unshare", False, False, False, False, False, executable=unshare)
        arg["workspace"] = _host_workspace()
        result = _run_probe(template_command(probe_argv, config, trial), arg)
        if result.ok:
            mechanism = "unshare"
        else:
            errors.append(f"unshare failed: {result.error}")
    if mechanism == "none":
        arg["workspace"] = _host_workspace()
        trial = Protections("none", False, False, False, False, False)
        result = _run_probe(template_command(probe_argv, config, trial), arg)
        if not result.ok:
            raise IsolationError(
                f"cannot start the sandbox interpreter {config.python!r}: {result.error}"
            )

    facts = result.facts
    namespaces = mechanism != "none"
    why = "; ".join(errors)
    network = namespaces and not config.network and facts.get("ifaces") == ["lo"]
    if config.network:
        missing.append(("network", "network access allowed by config (network=True)"))
    elif not network:
        missing.append(("network", f"{INSTALL_BWRAP} ({why})" if why else INSTALL_BWRAP))
    filesystem = (
        mechanism == "bwrap"
        and not facts.get("root_writable", True)
        and bool(facts.get("workspace_writable"))
        and not facts.get("shadow_readable", True)
        and not facts.get("secrets_visible", True)
    )
    if not filesystem:
        missing.append(("filesystem", f"{INSTALL_BWRAP} ({why})" if why else INSTALL_BWRAP))
    pid_namespace = namespaces and isinstance(facts.get("pid"), int) and int(str(facts["pid"])) <= 3
    if not pid_namespace:
        missing.append(("pid_namespace", f"{INSTALL_BWRAP} ({why})" if why else INSTALL_BWRAP))
    session_uids = bool(facts.get("setuid"))
    if not session_uids:
        missing.append(("session_uids", RUN_AS_ROOT))
    seccomp = bool(facts.get("seccomp"))
    if not seccomp:
        missing.append(
            ("seccomp", f"{INSTALL_SECCOMP} ({seccomp_error or 'the filter did not load'})")
        )
    protections = Protections(
        mechanism=mechanism,
        network=network,
        filesystem=filesystem,
        pid_namespace=pid_namespace,
        session_uids=session_uids,
        seccomp=seccomp,
        missing=tuple(missing),
        network_allowed=config.network,
        workspace_root=WORKSPACE_ROOT if mechanism == "bwrap" else _host_workspace(),
        executable={"bwrap": bwrap, "unshare": unshare, "none": None}[mechanism],
    )
    log.info(
        "isolation.detected",
        mechanism=mechanism,
        active=protections.active(),
        missing=[m for m, _ in missing],
    )
    return protections


@functools.cache
def _detect_cached(network: bool, python: str, workspace_size: int | None) -> Protections:
    config = SandboxConfig.model_validate(
        {"network": network, "python": python, "workspace_size": workspace_size}
    )
    return _detect(config)


def detect_protections(config: SandboxConfig) -> Protections:
    """Probe the host (once per network/python/workspace setting) and report what is active."""
    return _detect_cached(config.network, config.python, config.workspace_size)


# --------------------------------------------------------------------------------------------------
# Inside the sandbox: confining a session process

_RLIMITS: tuple[tuple[str, int], ...] = (
    ("memory_limit", resource.RLIMIT_AS),
    ("cpu_time_limit", resource.RLIMIT_CPU),
    ("max_file_size", resource.RLIMIT_FSIZE),
    ("max_open_files", resource.RLIMIT_NOFILE),
)


def confine_session(
    config: SandboxConfig, protections: Protections, *, uid: int, workdir: str
) -> None:
    """Confine the calling, freshly forked session process before any user code runs.

    Order matters: the work directory is made while still privileged; no-new-privs, groups, gid
    and uid follow; rlimits get soft == hard so user code cannot raise them; the parent-death
    signal is set after the uid change (which clears it); the seccomp filter comes last because
    it denies nothing this function still needs.
    """
    if os.path.lexists(workdir):  # left over by an earlier session of this slot
        remove_workdir(workdir)
    parent = os.path.dirname(workdir)
    if not os.path.isdir(parent):
        os.makedirs(parent, mode=0o755, exist_ok=True)
    os.mkdir(workdir, 0o700)
    if protections.session_uids:
        os.chown(workdir, uid, uid)
    os.chdir(workdir)
    os.environ["HOME"] = workdir
    os.umask(0o077)

    _seccomp.prctl(_seccomp.PR_SET_NO_NEW_PRIVS, 1)
    if protections.session_uids:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    for field, res in _RLIMITS:
        value = getattr(config, field)
        if value is not None:
            resource.setrlimit(res, (value, value))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if protections.session_uids and config.max_processes is not None:
        resource.setrlimit(resource.RLIMIT_NPROC, (config.max_processes, config.max_processes))
    _seccomp.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if protections.seccomp:
        _seccomp.compiled_filter(config.network).load()


_PR_SET_PDEATHSIG = 1


def prepare_template(config: SandboxConfig, protections: Protections) -> None:
    """Call once in the template before forking: sessions then skip compiling the filter and
    loading libc symbols (without it the first :func:`confine_session` costs milliseconds more)."""
    _seccomp.warm_up()
    if protections.seccomp:
        _seccomp.compiled_filter(config.network)


# --------------------------------------------------------------------------------------------------
# Cleanup


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
        os.sched_yield()
