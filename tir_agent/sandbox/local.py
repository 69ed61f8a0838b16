"""The local sandbox: stateful Python sessions in isolated processes on this machine.

The host side of :mod:`tir_agent.sandbox.worker`. :class:`LocalSandbox` starts one template
(zygote) process inside the isolation made by :mod:`tir_agent.sandbox.isolation`; every session
is a supervisor process forked from it, reached through its own socket. See ``docs/sandbox.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tir_agent._log import get_logger
from tir_agent.errors import ConfigError, SandboxClosedError, SandboxError
from tir_agent.sandbox import _cgroup, isolation
from tir_agent.sandbox import protocol as proto
from tir_agent.sandbox.config import SandboxConfig
from tir_agent.sandbox.local_session import Channel, LocalSession, receive
from tir_agent.sandbox.result import ExecutionResult

__all__ = ["LocalSandbox", "LocalSession"]

log = get_logger(__name__)

PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent.parent)
"""The directory holding the ``tir_agent`` package (added to ``sys.path`` of the template)."""

BOOT = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from tir_agent.sandbox.worker import template_main; template_main(sys.argv[2:])"
)
"""``python -I -c BOOT`` starts the template; ``-I`` keeps the host's environment and cwd out."""

START_TIMEOUT = 120.0
"""Seconds the template may take to import the preloaded modules."""


def _make_config(config: SandboxConfig | None, overrides: dict[str, Any]) -> SandboxConfig:
    base = config if config is not None else SandboxConfig.model_validate({})
    if not overrides:
        return base
    try:
        return SandboxConfig.model_validate({**base.model_dump(), **overrides})
    except ValueError as e:
        raise ConfigError(f"invalid sandbox option: {e}") from e


class LocalSandbox:
    """Isolated, stateful Python sessions on this machine (see ``docs/sandbox.md``).

    ``LocalSandbox(config=None, **overrides)``: ``overrides`` are :class:`SandboxConfig` fields.
    The template process starts on first use (or on ``async with``); ``close()`` stops everything.
    If the template dies, the sandbox starts a new one (:attr:`restarts`); the sessions of the
    dead one are lost (their next ``run`` raises :class:`SandboxError`).
    """

    def __init__(self, config: SandboxConfig | None = None, **overrides: Any) -> None:
        self.config = _make_config(config, overrides)
        self._protections: isolation.Protections | None = None
        self._uid_block: isolation.UidBlock | None = None
        self._cgroup: _cgroup.SandboxCgroup | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._ctl: socket.socket | None = None
        self._ctl_lock: asyncio.Lock | None = None
        self._start_lock: asyncio.Lock | None = None
        self._up: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None
        self._free: list[int] = []
        self._next_slot = 0
        self._sessions: dict[int, LocalSession] = {}
        self._closed = False
        self._generation = 0
        self._deaths: dict[int, str] = {}  # generation -> how its template ended
        self._down: str | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.restarts = 0
        """How many times the template died and was started again."""
        self.preload_failures: dict[str, str] = {}
        """Modules of ``config.preload`` that failed to import in the template (name -> error)."""
        self.huge_pages = 0
        """2 MiB ranges of the template's heap collapsed into huge pages at its start (0 where
        the kernel has no ``MADV_COLLAPSE``); see :mod:`tir_agent.sandbox.worker.hugepages`."""

    # -- lifecycle

    @property
    def protections(self) -> isolation.Protections:
        """Which protections are active for this sandbox (probes the host on first access)."""
        if self._protections is None:
            self._protections = isolation.detect_protections(self.config)
        return self._protections

    @property
    def problem(self) -> str | None:
        """Why the sandbox cannot run code right now (closed, or its template died and is being
        restarted); ``None`` when it can (also before the first use, which starts it)."""
        if self._closed:
            return "the sandbox was closed"
        return self._down

    @property
    def template_pid(self) -> int | None:
        """Host pid of the template interpreter (``python -I -c BOOT``, below the bwrap or
        unshare processes whose command lines hold the same text), or ``None`` when it is not
        running. Its children are the sessions' supervisors: for monitoring and benchmarks."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return None
        todo = [proc.pid]
        while todo:
            pid = todo.pop(0)
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
                if argv[1:3] == [b"-I", b"-c"] and b"template_main" in argv[3]:
                    return pid
                with open(f"/proc/{pid}/task/{pid}/children") as f:
                    todo += [int(p) for p in f.read().split()]
            except OSError:  # gone meanwhile
                continue
        return None

    @property
    def healthy(self) -> bool:
        """Whether the sandbox can run code right now (:attr:`problem` is ``None``)."""
        return self.problem is None

    async def __aenter__(self) -> LocalSandbox:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Start the template process (idempotent; ``session()`` and ``run()`` call it)."""
        if self._closed:
            raise SandboxClosedError("the sandbox was closed")
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._proc is not None:
                return
            if self._protections is None:
                self._protections = await asyncio.to_thread(
                    isolation.detect_protections, self.config
                )
            if self.config.strict:
                self._protections.require_strict()
            if self._protections.session_uids and self._uid_block is None:
                # uids of our own, host-wide: no other sandbox shares our process limits. Kept
                # across template restarts, released when the sandbox is closed.
                self._uid_block = isolation.reserve_uid_block()
                self._protections = dataclasses.replace(
                    self._protections, uid_base=self._uid_block.base
                )
            if self._protections.memory_enforcement == "cgroup" and self._cgroup is None:
                self._cgroup = self._make_cgroup(self._protections)
                self._protections = dataclasses.replace(
                    self._protections, cgroup_fd=self._cgroup.fd
                )
            self._up = asyncio.Event()
            self._slots = (
                asyncio.Semaphore(self.config.max_sessions) if self.config.max_sessions else None
            )
            await self._launch()
            if self.config.idle_timeout is not None:
                self._tasks.append(asyncio.create_task(self._evict_idle(self.config.idle_timeout)))

    @staticmethod
    def _make_cgroup(protections: isolation.Protections) -> _cgroup.SandboxCgroup:
        """The parent of this sandbox's session cgroups, named after its uid block (kept across
        template restarts, removed when the sandbox is closed)."""
        hierarchy = _cgroup.find()
        try:
            if hierarchy is None:
                raise _cgroup.CgroupError(0, _cgroup.unavailable())
            stale = isolation.remove_stale_cgroups(hierarchy.path)
            if stale:
                log.info("sandbox.cgroups_removed", stale=stale)
            return _cgroup.SandboxCgroup(hierarchy, f"tir-agent-{protections.uid_base}")
        except OSError as e:
            raise SandboxError(
                f"cannot make this sandbox's memory cgroup ({e}); to run without it pass "
                "memory_enforcement='watchdog'"
            ) from e

    async def _launch(self) -> None:
        """Start a template process and wait until it is ready."""
        assert self._protections is not None and self._up is not None
        started = time.perf_counter()
        protections = self._protections
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        argv = [
            self.config.python,
            "-I",
            "-c",
            BOOT,
            PACKAGE_PARENT,
            str(theirs.fileno()),
            json.dumps(protections.to_dict()),
            self.config.model_dump_json(),
        ]
        pass_fds = [theirs.fileno()]
        if protections.cgroup_fd >= 0:
            pass_fds.append(protections.cgroup_fd)
        command = isolation.template_command(argv, self.config, protections, pass_fds=pass_fds)
        debug = bool(os.environ.get("TIR_AGENT_SANDBOX_DEBUG"))
        try:
            self._proc = proc = await asyncio.create_subprocess_exec(
                *command,
                pass_fds=pass_fds,
                stdin=subprocess.DEVNULL,
                stdout=None if debug else subprocess.DEVNULL,
                stderr=None if debug else subprocess.DEVNULL,
                env={},
                cwd="/",
                # Its own process group: a Ctrl-C (SIGINT to the terminal's foreground
                # group) is the host's to handle and must not kill running cells. The
                # template still dies with the host (--die-with-parent / PR_SET_PDEATHSIG).
                start_new_session=True,
            )
        except OSError as e:
            ours.close()
            raise SandboxError(f"cannot start the sandbox template: {e}") from e
        finally:
            theirs.close()
        ours.setblocking(False)
        self._ctl = ours
        self._ctl_lock = asyncio.Lock()
        self._generation += 1
        try:
            async with asyncio.timeout(START_TIMEOUT):
                ready, _ = await self._recv()
        except (TimeoutError, OSError, ValueError) as e:
            await self._stop_template()
            raise SandboxError(f"the sandbox template did not start: {e}") from e
        self.preload_failures = dict(ready.get("failed", {}))
        self.huge_pages = int(ready.get("huge_pages", 0))
        self._down = None
        self._up.set()
        self._tasks.append(asyncio.create_task(self._watch_template(proc, self._generation)))
        log.info(
            "sandbox.start",
            mechanism=protections.mechanism,
            active=protections.active(),
            preload_failed=sorted(self.preload_failures),
            huge_pages=self.huge_pages,
            restarts=self.restarts,
            duration=round(time.perf_counter() - started, 3),
        )

    async def close(self) -> None:
        """Close every session and stop the template: no process of this sandbox remains."""
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(
            *(s.close() for s in list(self._sessions.values())), return_exceptions=True
        )
        await self._stop_template()
        if self._cgroup is not None:  # the template is gone, and its sessions with it
            try:
                await asyncio.to_thread(self._cgroup.close)
            except OSError as e:
                log.warning("sandbox.cgroup_left", error=str(e))
            self._cgroup = None
        if self._uid_block is not None:
            self._uid_block.release()
            self._uid_block = None
        log.info("sandbox.stop")

    async def _stop_template(self) -> None:
        if self._ctl is not None:
            self._ctl.close()
        proc = self._proc
        if proc is not None and proc.returncode is None:
            try:
                async with asyncio.timeout(5.0):
                    await proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()

    async def _watch_template(self, proc: asyncio.subprocess.Process, generation: int) -> None:
        """Notice the template's death; start a new one (backing off while starts fail)."""
        code = await proc.wait()
        if self._closed or generation != self._generation:
            return
        why = f"the sandbox template exited with code {code}"
        self._deaths[generation] = f"{why} and the sandbox was restarted"
        self._down = f"{why}; restarting it"
        assert self._up is not None
        self._up.clear()
        log.error("sandbox.lost", code=code, sessions=len(self._sessions))
        # Its sessions died with it (their supervisors have its death signal): free their
        # slots now; each reports the loss on its next use.
        for session in list(self._sessions.values()):
            if session._generation == generation:
                self._release(session)
        delay = 0.1
        while not self._closed:
            if self._ctl is not None:
                self._ctl.close()
            try:
                await self._launch()
            except SandboxError as e:
                self._down = f"{why}; starting a new one failed ({e}), retrying in {delay:g} s"
                log.error("sandbox.restart_failed", error=str(e), retry=delay)
                await asyncio.sleep(delay)
                delay = min(2 * delay, 30.0)
                continue
            self.restarts += 1
            return

    def _restarted_since(self, generation: int) -> str | None:
        """How the template of ``generation`` ended, if it did."""
        return self._deaths.get(generation)

    async def _evict_idle(self, idle: float) -> None:
        interval = min(max(idle / 4, 0.05), 5.0)
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for s in list(self._sessions.values()):
                if not s.busy and not s._lock.locked() and now - s.last_used > idle:
                    await s.close()
                    s._closed = f"evicted after {idle:g} s idle"
                    log.info("session.evict", session=s.slot)

    # -- template channel

    async def _recv(self) -> tuple[dict[str, Any], list[int]]:
        sock = self._ctl
        assert sock is not None
        return await receive(sock, "the sandbox template closed its channel")

    async def _call(self, message: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        assert self._ctl_lock is not None and self._up is not None
        generation = self._generation
        async with self._ctl_lock:
            if self._closed:
                raise SandboxClosedError("the sandbox was closed")
            if self._down or generation != self._generation or self._ctl is None:
                raise SandboxError(f"the sandbox is not running: {self._down}")
            try:
                self._ctl.send(proto.encode(message))
                async with asyncio.timeout(30.0):
                    return await self._recv()
            except (OSError, TimeoutError, ValueError) as e:
                # A template that does not answer is killed: the watcher then starts a new one.
                if self._proc is not None and self._proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        self._proc.kill()
                raise SandboxError(f"the sandbox template failed: {e}") from e

    async def _wait_until_up(self) -> None:
        """Return once the template runs (at once, unless it is being restarted)."""
        assert self._up is not None
        if self._up.is_set():
            return
        try:
            async with asyncio.timeout(START_TIMEOUT):
                await self._up.wait()
        except TimeoutError:
            raise SandboxError(f"the sandbox is not running: {self._down}") from None

    async def _kill_supervisor(self, session: LocalSession) -> None:
        """Last resort when a supervisor stops answering: the template kills the session."""
        if self._closed or self._down or session._generation != self._generation:
            return  # a template that died took its sessions along
        log.warning("session.kill", session=session.slot)
        with contextlib.suppress(SandboxError):
            await self._call({"op": "kill", "pid": session.pid, "slot": session.slot})

    def _release(self, session: LocalSession) -> None:
        if self._sessions.get(session.slot) is session:
            del self._sessions[session.slot]
            self._free.append(session.slot)
            if self._slots is not None:
                self._slots.release()

    # -- sessions

    async def open_session(self) -> LocalSession:
        """A new session; the caller must ``await session.close()`` (or use :meth:`session`)."""
        await self.start()
        await self._wait_until_up()
        if self._slots is not None:
            await self._slots.acquire()
        try:
            if self._closed:
                raise SandboxClosedError("the sandbox was closed")
            slot = self._free.pop() if self._free else self._next_slot
            if slot == self._next_slot:
                self._next_slot += 1
            started = time.perf_counter()
            try:
                reply, fds = await self._call(
                    {"op": "new", "slot": slot, "protect": self.config.protect_state}
                )
                generation = self._generation
            except BaseException:
                self._free.append(slot)
                raise
            if not fds:
                self._free.append(slot)
                raise SandboxError("the sandbox template did not hand over a session channel")
            sock = socket.socket(fileno=fds[0])
            control = socket.socket(fileno=fds[1]) if len(fds) > 1 else None
            try:
                if control is not None:
                    control.setblocking(False)
                _, channel = await asyncio.get_running_loop().create_unix_connection(
                    Channel, sock=sock
                )
            except BaseException:
                if control is not None:
                    control.close()
                raise
        except BaseException:
            if self._slots is not None:
                self._slots.release()
            raise
        session = LocalSession(self, slot, int(reply["pid"]), channel, generation, control)
        self._sessions[slot] = session
        log.info("session.start", session=slot, duration=round(time.perf_counter() - started, 6))
        return session

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[LocalSession]:
        """``async with sandbox.session() as s``: a new isolated session, closed afterwards."""
        s = await self.open_session()
        try:
            yield s
        finally:
            await s.close()

    async def run(
        self,
        code: str,
        *,
        timeout: float | None = None,
        max_output_characters: int | None = None,
    ) -> ExecutionResult:
        """Run ``code`` once in a fresh session that is thrown away afterwards."""
        async with self.session() as s:
            return await s.run(code, timeout=timeout, max_output_characters=max_output_characters)
