"""Sandbox configuration: limits, timeouts, preloading, isolation switches."""

from __future__ import annotations

import sys
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

GiB = 1024**3
MiB = 1024**2


class SandboxConfig(BaseModel):
    """Every knob of :class:`~tir_agent.sandbox.LocalSandbox`; ``None`` means "no limit"."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    timeout: float = Field(10.0, gt=0)
    """Default hard wall-clock limit of one execution, in seconds."""
    max_output_characters: int = Field(1000, ge=0)
    """Default cap of each stream (stdout, stderr); longer output ends with ``<output cut>``."""
    protect_state: bool = True
    """Run each cell in a forked copy of the session so a timeout or crash rolls back to the state
    before that cell instead of losing the session. Costs a fork per execution (see docs)."""
    fork_ahead: bool = True
    """Protected mode: fork the runner of a session's next cell as soon as a cell ends (off that
    cell's path, while the model thinks), or (``False``) only when the next cell arrives: each
    cell after the first then waits for its fork (a few ms), but no copy is made for a cell that
    never comes, such as after a batch sample's last cell. ``tir-agent generate`` uses ``False``
    unless it is set (docs/batch.md)."""
    state_notes: bool = True
    """Append a line to ``stderr`` telling the model when state was rolled back or lost."""
    memory_limit: int | None = Field(4 * GiB, gt=0)
    """Memory of a session in bytes: each process's address space (``RLIMIT_AS``) and, where the
    host allows (``protections.session_memory``), all of the session's processes together."""
    memory_enforcement: Literal["auto", "cgroup", "watchdog"] = "auto"
    """How ``memory_limit`` binds a session's processes together: ``cgroup`` (a memory cgroup per
    session, enforced by the kernel; needs root and a writable memory cgroup, see
    docs/isolation.md), ``watchdog`` (a process that adds up each session's memory every 0.1 s),
    or ``auto``: the cgroup where the host allows it, else the watchdog. ``cgroup`` refuses to
    start a sandbox that cannot have one."""
    cpu_time_limit: int | None = Field(3600, gt=0)
    """CPU seconds one session process may use in total (``RLIMIT_CPU``)."""
    max_file_size: int | None = Field(256 * MiB, gt=0)
    """Largest file a session may write, in bytes (``RLIMIT_FSIZE``)."""
    max_open_files: int | None = Field(256, gt=0)
    """Open file descriptors per session process (``RLIMIT_NOFILE``)."""
    max_processes: int | None = Field(64, gt=0)
    """Processes and threads per session; binds even as root through a per-session uid."""
    workspace_size: int | None = Field(1 * GiB, gt=0)
    """Size of each sandbox-wide in-memory file system (``/sandbox``, ``/tmp``, ``/dev/shm``), in
    bytes; sessions use them only where they cannot have their own (no ``session_files``)."""
    disk_limit: int | None = Field(1 * GiB, gt=0)
    """Bytes a session may keep in its work directory, ``/tmp`` and ``/dev/shm`` together (its own
    tmpfs), and in System V shared memory (``protections.session_files``/``session_ipc``)."""
    max_files: int | None = Field(65536, gt=0)
    """Files and directories a session may have at once (inodes of its own tmpfs)."""
    network: bool = False
    """Allow network access from user code (off: a new, empty network namespace)."""
    strict: bool = False
    """Refuse to start unless network and file-system isolation are both active."""
    preload: tuple[str, ...] = ("numpy", "sympy", "scipy", "mpmath")
    """Modules imported once in the template process, so sessions start with them warm."""
    max_sessions: int | None = Field(256, gt=0)
    """Concurrent sessions; further ``session()`` calls wait for a free slot."""
    idle_timeout: float | None = Field(600.0, gt=0)
    """Seconds after which an idle session is closed and its processes stopped."""
    python: str = sys.executable
    """The interpreter that runs user code (needs the math stack installed)."""
    env: dict[str, str] = Field(default_factory=dict)
    """Extra environment variables for user code; the host's environment is never passed."""
    url: str | list[str] | None = None
    """Remote tir-agent sandbox server(s) (``http://host:6000``, or a list to spread sessions
    over); when set, code runs there (:class:`~tir_agent.sandbox.RemoteSandbox`) and the local
    options other than ``timeout``/``max_output_characters`` are the server's business."""
