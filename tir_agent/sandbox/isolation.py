"""Limits and isolation of sandboxed code: what the host offers, and how sessions are confined.

Two layers. The template (zygote) process starts inside namespaces made by bubblewrap (or, as a
fallback, util-linux ``unshare``): no network, its own pid/ipc/uts namespaces, a read-only view of
the few host directories Python needs, secrets hidden, fresh ``/dev``, ``/proc``, ``/tmp`` and an
in-memory workspace, a cleared environment, and only the capabilities needed to hand out uids
(:func:`template_command`). Every session process forked from it then confines itself before any
user code runs (:func:`confine_session`): a private work directory, its own unprivileged uid,
rlimits that cannot be raised, no new privileges, death with its parent and a seccomp filter;
before that, it moves into a mount and IPC namespace of its own (:func:`prepare_session`), and a
watchdog in the template holds each session's processes together to ``memory_limit``
(:func:`start_memory_watchdog`). Each sandbox has its own uids (:func:`reserve_uid_block`).

:func:`detect_protections` probes the host once (it really starts the wrapped interpreter) and
returns :class:`Protections`: what is active, and for everything missing, how to get it.
The session side lives in ``_session.py``, the file-system plan in ``_mounts.py``; see
docs/isolation.md.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tir_agent._log import get_logger
from tir_agent.errors import IsolationError
from tir_agent.sandbox import _cgroup, _memory, _mounts, _probe, _seccomp, _sessionfs
from tir_agent.sandbox._session import (  # the session side: runs in the template and sessions
    confine_session,
    kill_uid,
    pids_of_uid,
    prepare_template,
    remove_workdir,
)
from tir_agent.sandbox._uids import (  # host-wide uid blocks
    UID_BASE,
    UID_BLOCK,
    UID_BLOCKS,
    UidBlock,
    remove_stale_cgroups,
    reserve_uid_block,
)
from tir_agent.sandbox.config import SandboxConfig

log = get_logger(__name__)

__all__ = [
    "UID_BASE",
    "UID_BLOCK",
    "UID_BLOCKS",
    "WORKSPACE_ROOT",
    "Mechanism",
    "Protections",
    "UidBlock",
    "confine_session",
    "detect_protections",
    "kill_uid",
    "pids_of_uid",
    "prepare_session",
    "prepare_template",
    "remove_stale_cgroups",
    "remove_workdir",
    "reserve_uid_block",
    "sandbox_env",
    "session_uid",
    "start_memory_watchdog",
    "template_command",
]

Mechanism = Literal["bwrap", "unshare", "none"]

WORKSPACE_ROOT = _mounts.WORKSPACE_ROOT
"""Inside the sandbox: the in-memory file system holding the per-session work directories."""

ZYGOTE_CAPABILITIES: tuple[str, ...] = (
    "CAP_SETUID",  # give each session its own uid
    "CAP_SETGID",
    "CAP_CHOWN",  # hand the session its work directory
    "CAP_DAC_OVERRIDE",  # remove work directories whatever modes user code left behind
    "CAP_FOWNER",
    "CAP_KILL",  # kill_uid
    "CAP_SYS_ADMIN",  # each session's own mount and IPC namespace (sessions never hold it)
)
"""The only capabilities the template keeps inside bubblewrap (when started as root)."""

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
SESSION_NAMESPACES = (
    "run the sandbox as root, so its template may give each session its own mount and IPC "
    "namespace (unprivileged, sessions share /tmp, /dev/shm, the workspace and System V IPC)"
)
RUN_AS_ROOT = (
    "run the sandbox as root (e.g. in a container); unprivileged, processes are bounded by "
    "RLIMIT_NPROC of your own user instead"
)

_CAPABILITY_NUMBERS = {
    "CAP_CHOWN": 0,
    "CAP_DAC_OVERRIDE": 1,
    "CAP_FOWNER": 3,
    "CAP_KILL": 5,
    "CAP_SETGID": 6,
    "CAP_SETUID": 7,
    "CAP_SYS_ADMIN": 21,
}

_PROTECTION_DOCS: dict[str, str] = {
    "network": "user code runs in a new, empty network namespace",
    "filesystem": "read-only system dirs, secrets and home dirs hidden, private work dirs",
    "pid_namespace": "user code cannot see or signal host processes",
    "session_uids": "each session has its own uid: processes bounded, sessions cannot touch each other",
    "session_files": "private /tmp, /dev/shm and work dir per session, disk and inode quotas, freed on close",
    "session_ipc": "own System V IPC namespace per session, with limits, destroyed on close",
    "session_memory": "memory_limit binds the session's processes together (memory cgroup or watchdog)",
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
    session_files: bool = False
    """Each session has its own tmpfs (work dir, ``/tmp``, ``/dev/shm``) with ``disk_limit`` bytes
    and ``max_files`` inodes, in its own mount namespace: invisible to others, freed on close."""
    session_ipc: bool = False
    """Each session has its own System V IPC namespace with bounded limits, destroyed on close."""
    session_memory: bool = False
    """``memory_limit`` binds all processes of a session together (see ``memory_enforcement``)."""
    memory_enforcement: Literal["cgroup", "watchdog", "rlimit"] = "rlimit"
    """How memory is bounded: ``cgroup`` (per session, by the kernel: a memory cgroup of each
    session's processes), ``watchdog`` (per session, by the template's memory watchdog) or
    ``rlimit`` (``RLIMIT_AS`` per process only)."""
    cgroup_version: int = 0
    """With ``memory_enforcement == "cgroup"``: the cgroup version (1 or 2)."""
    cgroup_fd: int = -1
    """The sandbox cgroup's directory, open for the template (``LocalSandbox`` sets it)."""
    missing: tuple[tuple[str, str], ...] = ()
    """``(protection, how to get it)`` for each inactive protection."""
    network_allowed: bool = False
    """``config.network`` was on: no network isolation was asked for."""
    workspace_root: str = WORKSPACE_ROOT
    """Where work directories live, as seen by the template (outside a sandbox: a host temp dir)."""
    executable: str | None = None
    """The bwrap or unshare binary used by :func:`template_command`."""
    uid_base: int = UID_BASE
    """First session uid of this sandbox (see :func:`session_uid`); detection leaves ``UID_BASE``,
    ``LocalSandbox`` puts the block it reserved host-wide (:func:`reserve_uid_block`)."""
    seccomp_program: str = dataclasses.field(default="", repr=False)
    """The session filter as compiled by the host (hex BPF), so the template needs no libseccomp."""

    def active(self) -> list[str]:
        """Names of the active protections, in a fixed order."""
        return [name for name in _PROTECTION_DOCS if getattr(self, name)]

    def flags(self) -> dict[str, bool]:
        """Every protection by name, in the same order: whether it is active."""
        return {name: bool(getattr(self, name)) for name in _PROTECTION_DOCS}

    def table(self) -> str:
        """A human-readable table, one line per protection."""
        how = dict(self.missing)
        lines = [f"mechanism      {self.mechanism}"]
        for name, doc in _PROTECTION_DOCS.items():
            if name == "session_memory" and self.session_memory:
                how_ = "memory watchdog"
                if self.memory_enforcement == "cgroup":
                    how_ = f"a memory cgroup per session, v{self.cgroup_version}"
                doc = f"memory_limit binds the session's processes together ({how_})"
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


def session_uid(slot: int, protections: Protections | None = None) -> int:
    """The unprivileged uid (== gid) of session slot ``slot``: ``uid_base + slot``.

    Pass the sandbox's ``protections`` to use its own uid block (``UID_BASE`` without them).
    """
    if not 0 <= slot < UID_BLOCK:
        raise ValueError(f"session slot must be in [0, {UID_BLOCK}), got {slot}")
    return (UID_BASE if protections is None else protections.uid_base) + slot


# --------------------------------------------------------------------------------------------------
# Per-session namespaces and the memory watchdog (run in the template and spare holders)


def prepare_session(config: SandboxConfig, protections: Protections) -> None:
    """In a spare holder, before its session is assigned (still privileged): with
    ``session_files``, move into the session's own mount and IPC namespace, with a private tmpfs
    of ``disk_limit`` bytes and ``max_files`` inodes for the work dir, ``/tmp`` and ``/dev/shm``."""
    if protections.session_files or protections.session_ipc:
        _sessionfs.private_session_namespace(
            protections.workspace_root, config.disk_limit, config.max_files
        )


def start_memory_watchdog(config: SandboxConfig, protections: Protections) -> int | None:
    """In the template: fork the memory watchdog (see ``_memory.py``) when ``session_memory``
    is active and ``memory_limit`` is set; return its pid. It dies with the template."""
    if protections.memory_enforcement != "watchdog" or config.memory_limit is None:
        return None
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        try:
            os.closerange(3, 1 << 16)  # none of the template's channels
            _seccomp.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            _memory.watchdog_main(protections.uid_base, UID_BLOCK, config.memory_limit, parent)
        finally:
            os._exit(0)
    return pid


_PR_SET_PDEATHSIG = 1


# --------------------------------------------------------------------------------------------------
# The template's command line


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
    features = _mounts.bwrap_features(protections.executable)
    if not root:
        args.append("--unshare-user")
        if "--disable-userns" in features:
            args.append("--disable-userns")
    args += _mounts.bwrap_args(_mounts.mount_plan(config), features)
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
    """``unshare`` makes the namespaces; ``_nsroot.py`` builds the file system inside them."""
    assert protections.executable is not None
    args: list[str] = []
    setpriv = shutil.which("setpriv")
    if setpriv:  # die with the host (PR_SET_PDEATHSIG survives exec)
        args += [setpriv, "--pdeathsig", "KILL"]
    args += [protections.executable, "--mount", "--pid", "--fork", "--kill-child", "--ipc", "--uts"]
    if not config.network:
        args.append("--net")
    spec = {
        "plan": _mounts.mount_plan(config),
        "env": sandbox_env(config),
        "caps": [_CAPABILITY_NUMBERS[c] for c in ZYGOTE_CAPABILITIES],
        "chdir": WORKSPACE_ROOT,
        "hostname": "sandbox",
        "loopback_up": not config.network,
    }
    nsroot = [config.python, "-I", "-S", "-c", _mounts.nsroot_source(), json.dumps(spec)]
    return [*args, "--", *nsroot]


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
        return [*_env_prefix(config), *_unshare_args(config, protections), *argv]
    setpriv = shutil.which("setpriv")
    return [*_env_prefix(config), *([setpriv, "--pdeathsig", "KILL"] if setpriv else []), *argv]


# --------------------------------------------------------------------------------------------------
# Detection


def _unreachable_python(python: str) -> str:
    closed = [
        str(p)
        for p in [*reversed(Path(os.path.realpath(python)).parents)]
        if p.is_dir() and not p.stat().st_mode & 0o001
    ]
    return (
        f"a session uid cannot run {python} (directories closed to other users: "
        f"{', '.join(closed) or 'unknown'}); install Python where other users can read it, "
        "or install bubblewrap, which exposes only the interpreter's directories"
    )


@functools.cache
def _host_workspace() -> str:
    """Work-dir root when there is no mount namespace: a private directory under the host's /tmp."""
    path = tempfile.mkdtemp(prefix="tir-agent-ws-")
    os.chmod(path, 0o711)  # session uids may traverse to their own dirs, not list the others
    atexit.register(shutil.rmtree, path, True)
    return path


def _cgroup_version() -> int:
    hierarchy = _cgroup.find()
    return hierarchy.version if hierarchy else 0


def _memory_enforcement(
    config: SandboxConfig, session_uids: bool, facts: Mapping[str, object]
) -> tuple[Literal["cgroup", "watchdog", "rlimit"], str]:
    """How ``memory_limit`` will bind sessions here, and (for ``rlimit``) why nothing better."""
    per_process = "memory_limit binds each process only (RLIMIT_AS): "
    cgroup_why = _cgroup.unavailable()
    if config.memory_enforcement == "cgroup" and (cgroup_why or not session_uids):
        raise IsolationError(
            "memory_enforcement='cgroup' but no memory cgroup can be used here: "
            f"{cgroup_why or 'it needs session uids (run as root)'}. To fix: delegate one (see "
            "docs/isolation.md), or use memory_enforcement='auto' or 'watchdog'."
        )
    if not session_uids:
        return (
            "rlimit",
            per_process + "a memory cgroup or the watchdog needs session uids (run as root)",
        )
    if config.memory_enforcement != "watchdog" and not cgroup_why:
        return "cgroup", ""
    if facts.get("smaps_fsuid") is True:
        return "watchdog", ""
    return "rlimit", (
        per_process + f"no memory cgroup ({cgroup_why or 'not asked for'}) and the memory "
        "watchdog cannot read the sessions' /proc/PID/smaps_rollup on this host"
    )


def _all_true(mapping: object, keys: Sequence[str]) -> bool:
    return isinstance(mapping, dict) and all(mapping.get(k) is True for k in keys)


def _try(
    mechanism: Mechanism, executable: str | None, config: SandboxConfig, arg: dict[str, object]
) -> _probe.ProbeResult:
    trial = Protections(mechanism, False, False, False, False, False, executable=executable)
    argv = [config.python, "-I", "-S", "-c", _probe.probe_source()]
    return _probe.run_probe(template_command(argv, config, trial), {**arg, "session_ns": True})


def _detect(config: SandboxConfig, mechanisms: tuple[Mechanism, ...]) -> Protections:
    try:
        bpf = _seccomp.compiled_filter(config.network).bpf.hex()
        seccomp_error = ""
    except _seccomp.SeccompUnavailableError as e:
        bpf, seccomp_error = "", str(e)
    arg: dict[str, object] = {
        "uid": session_uid(0),
        "bpf": bpf,
        "workspace": WORKSPACE_ROOT,
        "secrets": _probe.sentinel_secrets(_mounts.bind_roots(config), _mounts.package_dir()),
    }
    mechanism: Mechanism = "none"
    executable: str | None = None
    result = _probe.ProbeResult(False, {})
    errors: list[str] = []
    for candidate in mechanisms:
        if candidate == "none":
            continue
        executable = shutil.which(candidate)
        if executable is None:
            errors.append(f"{candidate} not found")
            continue
        if candidate == "unshare" and os.geteuid() != 0:
            errors.append("unshare needs root")
            continue
        result = _try(candidate, executable, config, arg)
        if result.ok:
            mechanism = candidate
            break
        errors.append(f"{candidate} failed: {result.error}")
    if mechanism == "none":
        executable = None
        arg["workspace"] = _host_workspace()
        # no session namespaces on the host: its /tmp may hold the interpreter or the checkout
        result = _try("none", None, config, {**arg, "session_ns": False})
        if not result.ok:
            raise IsolationError(
                f"cannot start the sandbox interpreter {config.python!r}: {result.error}"
            )

    facts = result.facts
    namespaces = mechanism != "none"
    how = f"{INSTALL_BWRAP} ({'; '.join(errors)})" if errors else INSTALL_BWRAP
    missing: list[tuple[str, str]] = []
    network = namespaces and not config.network and facts.get("ifaces") == ["lo"]
    if config.network:
        missing.append(("network", "network access allowed by config (network=True)"))
    elif not network:
        missing.append(("network", how))
    filesystem = (
        namespaces
        and facts.get("root_writable") is False
        # "/" itself is the sandbox's own tmpfs (read-only too, unless bwrap lacks --remount-ro)
        and _all_true(facts.get("read_only"), ("/usr", "/etc", "/proc/sys"))
        and facts.get("workspace_writable") is True
        and facts.get("shadow_readable") is False
        and facts.get("secrets_visible") == []
    )
    if not filesystem:
        missing.append(("filesystem", how))
    pid = facts.get("pid")
    pid_namespace = namespaces and isinstance(pid, int) and pid <= 3
    if not pid_namespace:
        missing.append(("pid_namespace", how))
    session_uids = facts.get("setuid_reach") is True and facts.get("nproc_binds") is True
    if facts.get("setuid") is not True:
        missing.append(("session_uids", RUN_AS_ROOT))
    elif facts.get("setuid_reach") is not True:
        missing.append(("session_uids", _unreachable_python(config.python)))
    elif not session_uids:
        missing.append(("session_uids", "RLIMIT_NPROC does not bind a session uid on this host"))
    session_ns = facts.get("session_ns")
    ns_facts = session_ns if isinstance(session_ns, dict) else {}
    ns_error = ns_facts.get("error")
    session_files = namespaces and _all_true(
        ns_facts, ("quota", "inodes", "private", "proc_sys_ro")
    )
    session_ipc = namespaces and _all_true(ns_facts, ("ipc_ns", "ipc_limits", "proc_sys_ro"))
    if not namespaces:
        no_ns = f"needs a mount and an IPC namespace per session: {how}"
        missing += [("session_files", no_ns), ("session_ipc", no_ns)]
    else:
        why = f" ({ns_error})" if ns_error else ""
        if not session_files:
            missing.append(("session_files", f"{SESSION_NAMESPACES}{why}"))
        if not session_ipc:
            missing.append(("session_ipc", f"{SESSION_NAMESPACES}{why}"))
    enforcement, memory_why = _memory_enforcement(config, session_uids, facts)
    session_memory = enforcement != "rlimit"
    if not session_memory:
        missing.append(("session_memory", memory_why))
    seccomp = facts.get("seccomp") is True
    if seccomp and not session_ipc:
        # no IPC namespace per session: System V objects are refused instead (same filter plus
        # four rules; the probe loaded the filter without them)
        bpf = _seccomp.compiled_filter(config.network, ipc=False).bpf.hex()
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
        session_files=session_files,
        session_ipc=session_ipc,
        session_memory=session_memory,
        memory_enforcement=enforcement,
        cgroup_version=_cgroup_version() if enforcement == "cgroup" else 0,
        missing=tuple(missing),
        network_allowed=config.network,
        workspace_root=WORKSPACE_ROOT if namespaces else _host_workspace(),
        executable=executable,
        uid_base=UID_BASE,
        seccomp_program=bpf if seccomp else "",
    )
    log.info(
        "isolation.detected",
        mechanism=mechanism,
        active=protections.active(),
        missing=[m for m, _ in missing],
    )
    return protections


@functools.cache
def _detect_cached(
    network: bool,
    python: str,
    workspace_size: int | None,
    memory_enforcement: str,
    mechanisms: tuple[Mechanism, ...],
) -> Protections:
    config = SandboxConfig.model_validate(
        {
            "network": network,
            "python": python,
            "workspace_size": workspace_size,
            "memory_enforcement": memory_enforcement,
        }
    )
    return _detect(config, mechanisms)


def detect_protections(
    config: SandboxConfig, *, mechanisms: Sequence[Mechanism] = ("bwrap", "unshare")
) -> Protections:
    """Probe the host once per setting (really starting the wrapped interpreter) and report what
    is active. ``mechanisms`` are tried in order; ``()`` forces ``none`` (rlimits, seccomp, uids)."""
    return _detect_cached(
        config.network,
        config.python,
        config.workspace_size,
        config.memory_enforcement,
        tuple(mechanisms),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tir_agent.sandbox.isolation [--network] [--strict]``: print this host's table.

    Exit status 0, or 1 with ``--strict`` when network or file-system isolation is missing.
    """
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m tir_agent.sandbox.isolation",
        description="Show which sandbox protections work on this host.",
    )
    parser.add_argument(
        "--network", action="store_true", help="as with SandboxConfig(network=True)"
    )
    parser.add_argument("--strict", action="store_true", help="fail unless strict mode would start")
    args = parser.parse_args(argv)
    protections = detect_protections(SandboxConfig.model_validate({"network": args.network}))
    print(protections.table())
    if args.strict:
        try:
            protections.require_strict()
        except IsolationError as e:
            print(f"\n{e}")
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
