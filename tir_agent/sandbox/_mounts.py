"""The file-system view of the sandbox, as a plan of mount operations.

One plan, two executors: :func:`bwrap_args` turns it into bubblewrap options, and
``_nsroot.py`` carries it out itself with ``mount(2)`` in a mount namespace made by ``unshare``.
Each operation is a JSON-ready list whose first item names it:

- ``["dir", path, mode]``: an empty directory
- ``["symlink", target, path]``
- ``["ro-bind", host_path, path]``: a read-only, nosuid, nodev bind mount
- ``["hide", path]``: ``/dev/null`` bound on a nodev mount, so opening ``path`` fails (EACCES)
- ``["tmpfs", path, mode, size_or_None]``
- ``["dev", path]``: a minimal ``/dev`` (null, zero, full, random, urandom, tty)
- ``["proc", path]``: the procfs of the new pid namespace, with :data:`PROC_COVERED` read-only
- ``["remount-ro", "/"]``: make the sandbox's own root read-only (last)
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from tir_agent.errors import IsolationError
from tir_agent.sandbox.config import SandboxConfig

MountOp = list[object]

WORKSPACE_ROOT = "/sandbox"
"""Inside the sandbox: the in-memory file system holding the per-session work directories."""

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


PROC_COVERED: tuple[str, ...] = ("sys", "sysrq-trigger", "irq", "bus")
"""Parts of /proc mounted read-only in the sandbox (the kernel's knobs)."""


@functools.cache
def python_paths(python: str) -> tuple[str, ...]:
    """Directories the interpreter ``python`` needs: its prefixes and ``sys.path`` (as with -I)."""
    code = (
        "import json, sys; print(json.dumps("
        "[sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix] + sys.path))"
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
    real = os.path.realpath(python)
    paths.append(os.path.dirname(os.path.dirname(real)))  # the prefix the binary really lives in
    if real != os.path.abspath(python):  # a venv's symlink: its bin dir too
        paths.append(os.path.dirname(os.path.abspath(python)))
    return tuple(paths)


def package_dir() -> str:
    """The ``tir_agent`` package directory (may be an editable checkout)."""
    return str(Path(__file__).resolve().parent.parent)


def _covered(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def bind_roots(config: SandboxConfig) -> list[str]:
    """Minimal set of host directories to bind read-only for Python and tir_agent."""
    system = [d for d in SYSTEM_DIRS if os.path.isdir(d) and not os.path.islink(d)]
    candidates: list[str] = []
    for p in (*python_paths(config.python), package_dir()):
        for q in {os.path.abspath(p), os.path.realpath(p)}:
            if os.path.isdir(q):
                candidates.append(q)
            elif os.path.isfile(q):  # e.g. a zip on sys.path
                candidates.append(os.path.dirname(q))
    roots: list[str] = []
    for p in sorted(set(candidates), key=len):
        if p == "/" or _covered(p, system) or _covered(p, roots):
            continue
        roots.append(p)
    return roots


def mount_plan(config: SandboxConfig) -> list[MountOp]:
    """The mount operations that build the sandbox's file system, in order."""
    plan: list[MountOp] = []
    for d in SYSTEM_DIRS:
        if os.path.islink(d):
            plan.append(["symlink", os.readlink(d), d])
        elif os.path.isdir(d):
            plan.append(["ro-bind", d, d])
    size = config.workspace_size
    # Fresh /dev, /dev/shm and /tmp come before the package binds: a checkout or virtualenv that
    # lives under /tmp (a CI clone, say) is bound on top of the new /tmp instead of hidden by it.
    scratch = ["/dev", "/dev/shm", "/tmp"]
    plan += [
        ["dev", "/dev"],
        ["tmpfs", "/dev/shm", 0o1777, size],
        ["tmpfs", "/tmp", 0o1777, size],
    ]
    roots = bind_roots(config)
    made: set[str] = set(scratch)
    for d in roots:
        # Missing parents (e.g. /root for /root/.pyenv/...) would otherwise be created 0700 by
        # bwrap, locking session uids out of the interpreter.
        parent = os.path.dirname(d)
        ancestors: list[str] = []
        while parent not in ("/", "") and parent not in made:
            ancestors.append(parent)
            parent = os.path.dirname(parent)
        for a in reversed(ancestors):
            plan.append(["dir", a, 0o755])
            made.add(a)
    for d in roots:
        plan.append(["ro-bind", d, d])
        if os.path.isdir(os.path.join(d, ".git")):  # an editable checkout: keep its git config out
            plan.append(["tmpfs", os.path.join(d, ".git"), 0o755, 4096])
    plan += [["hide", f] for f in HIDDEN_FILES if os.path.exists(f)]
    plan += [
        ["proc", "/proc"],
        ["tmpfs", WORKSPACE_ROOT, 0o711, size],
        ["remount-ro", "/"],
    ]
    return plan


OPTIONAL_BWRAP_OPTIONS = ("--perms", "--size", "--remount-ro", "--disable-userns")
"""Options newer than bubblewrap 0.4 that are left out when the installed bwrap lacks them."""


@functools.cache
def bwrap_features(executable: str) -> frozenset[str]:
    """Which of :data:`OPTIONAL_BWRAP_OPTIONS` the bwrap at ``executable`` understands."""
    try:
        text = subprocess.run(
            [executable, "--help"], capture_output=True, text=True, timeout=10, env={}
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    words = set(text.split())
    return frozenset(o for o in OPTIONAL_BWRAP_OPTIONS if o in words)


def bwrap_args(
    plan: list[MountOp], features: frozenset[str] = frozenset(OPTIONAL_BWRAP_OPTIONS)
) -> list[str]:
    """The plan as bubblewrap options (leaving out options missing from ``features``)."""

    def perms(mode: object) -> list[str]:
        return ["--perms", f"{int(str(mode)):04o}"] if "--perms" in features else []

    args: list[str] = []
    for op in plan:
        kind, rest = op[0], [str(x) for x in op[1:]]
        if kind == "dir":
            args += [*perms(op[2]), "--dir", rest[0]]
        elif kind == "symlink":
            args += ["--symlink", rest[0], rest[1]]
        elif kind == "ro-bind":
            args += ["--ro-bind", rest[0], rest[1]]
        elif kind == "hide":
            args += ["--ro-bind", "/dev/null", rest[0]]
        elif kind == "tmpfs":
            size = [] if op[3] is None or "--size" not in features else ["--size", str(op[3])]
            args += [*perms(op[2]), *size, "--tmpfs", rest[0]]
        elif kind == "dev":
            args += ["--dev", rest[0]]
        elif kind == "proc":
            args += ["--proc", rest[0]]
            # bwrap started by real root skips covering these (its access() check fails), so a
            # root template could write sysctls: cover them read-only ourselves.
            for name in PROC_COVERED:
                args += ["--ro-bind-try", f"/proc/{name}", f"{rest[0]}/{name}"]
        elif kind == "remount-ro":
            if "--remount-ro" in features:
                args += ["--remount-ro", rest[0]]
        else:
            raise ValueError(f"unknown mount operation {kind!r}")
    return args


def nsroot_source() -> str:
    """Source of the bootstrap that carries out a plan without bubblewrap (run with ``-c``)."""
    return (Path(__file__).parent / "_nsroot.py").read_text()
