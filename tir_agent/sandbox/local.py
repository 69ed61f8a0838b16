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
import logging
import os
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

from tir_agent._log import get_logger
from tir_agent.errors import ConfigError, SandboxClosedError, SandboxError
from tir_agent.sandbox import isolation
from tir_agent.sandbox import protocol as proto
from tir_agent.sandbox.config import SandboxConfig
from tir_agent.sandbox.result import ExecutionResult

log = get_logger(__name__)
_stdlog = logging.getLogger(__name__)

PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent.parent)
"""The directory holding the ``tir_agent`` package (added to ``sys.path`` of the template)."""

BOOT = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from tir_agent.sandbox.worker import template_main; template_main(sys.argv[2:])"
)
"""``python -I -c BOOT`` starts the template; ``-I`` keeps the host's environment and cwd out."""

START_TIMEOUT = 120.0
"""Seconds the template may take to import the preloaded modules."""

SLACK = 10.0
"""Seconds the host waits beyond an execution's timeout before declaring the session broken."""


def _expire(waiter: asyncio.Future[dict[str, Any] | None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError("the session did not answer in time"))


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _make_config(config: SandboxConfig | None, overrides: dict[str, Any]) -> SandboxConfig:
    base = config if config is not None else SandboxConfig.model_validate({})
    if not overrides:
        return base
    try:
        return SandboxConfig.model_validate({**base.model_dump(), **overrides})
    except ValueError as e:
        raise ConfigError(f"invalid sandbox option: {e}") from e


class _Channel(asyncio.Protocol):
    """The host's end of a session supervisor's socket: one request, one framed reply."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[dict[str, Any] | None] | None = None
        self.lost: Exception | None = None
        self.counter = 0
        self.rid: int | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's transports have the same methods but are not
        # subclasses of asyncio.Transport, and the sandbox must work on either loop.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        try:
            for body in proto.unframe_bodies(self.buffer):
                rid, fields = proto.parse_reply(body)
                if rid != self.rid:
                    continue  # the reply to a request that was cancelled meanwhile
                if self.waiter is not None and not self.waiter.done():
                    self.waiter.set_result(fields)
        except ValueError as e:
            self._fail(e)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionResetError("the session supervisor closed its channel"))

    def _fail(self, exc: Exception) -> None:
        self.lost = exc
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    async def request(
        self, run: tuple[float, int, str] | None, wait: float
    ) -> dict[str, Any] | None:
        """Send a run request ``(timeout, cap, code)``, or the close request (``None``); return
        the result's fields, or ``None`` once the session confirmed its close."""
        if self.lost is not None:
            raise self.lost
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        if run is not None:
            self.counter += 1
            self.rid = self.counter
            self.transport.write(proto.run_frame(self.counter, *run))
        else:  # close: half-close our side; the supervisor cleans up and confirms
            self.rid = None
            self.transport.write_eof()
        waiter = self.waiter
        timer = asyncio.get_running_loop().call_later(wait, _expire, waiter)
        try:
            return await waiter
        finally:
            timer.cancel()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class LocalSession:
    """One stateful interpreter. Use through ``async with sandbox.session() as s``."""

    def __init__(self, sandbox: LocalSandbox, slot: int, pid: int, channel: _Channel) -> None:
        self._sandbox = sandbox
        self.slot = slot
        self.pid = pid
        """Pid of the session's supervisor, as seen inside the sandbox."""
        self._channel = channel
        self._lock = asyncio.Lock()
        self._closed: str | None = None
        self.executions = 0
        self.last_used = time.monotonic()
        self.busy = False

    @property
    def closed(self) -> bool:
        """Whether the session was closed (by the caller, eviction or the sandbox)."""
        return self._closed is not None

    async def _request(
        self, run: tuple[float, int, str] | None, wait: float
    ) -> dict[str, Any] | None:
        return await self._channel.request(run, wait)

    async def run(
        self,
        code: str,
        *,
        timeout: float | None = None,
        max_output_characters: int | None = None,
    ) -> ExecutionResult:
        """Run one cell in this session; ``None`` means the sandbox's configured default."""
        config = self._sandbox.config
        t = config.timeout if timeout is None else float(timeout)
        cap = (
            config.max_output_characters if max_output_characters is None else max_output_characters
        )
        if t <= 0 or cap < 0:
            raise ConfigError("timeout must be > 0 and max_output_characters >= 0")
        async with self._lock:
            if self._closed is not None:
                raise SandboxClosedError(f"the session was closed ({self._closed})")
            self.busy = True
            try:
                fields = await self._request((t, cap, code), t + SLACK)
                if fields is None:
                    raise ValueError("the session closed instead of answering")
            except (OSError, TimeoutError, ValueError) as e:
                # ValueError: a garbled reply (only a cell writing to its session socket does it)
                await self._abort(
                    "garbled reply"
                    if isinstance(e, ValueError)
                    else f"lost its supervisor: {type(e).__name__}"
                )
                raise SandboxError(
                    f"sandbox session {self.slot} failed: {type(e).__name__}: {e}"
                ) from e
            finally:
                self.busy = False
                self.last_used = time.monotonic()
        self.executions += 1
        # protocol.parse_reply checked every field (a cell writing garbage into its session
        # socket fails there, as a ValueError above). Validating again costs ~2 us, less than
        # model_construct (pure Python) here, so the result stays validated.
        result = ExecutionResult.model_validate(fields)
        if _stdlog.isEnabledFor(logging.INFO):
            log.info(
                "execution.finish",
                session=self.slot,
                status=result.status,
                state=result.state,
                reason=result.reason,
                duration=round(result.duration, 6),
                stdout_chars=len(result.stdout),
                stderr_chars=len(result.stderr),
                truncated=result.truncated,
            )
        return result

    async def close(self) -> None:
        """Stop every process of the session and remove its work directory."""
        async with self._lock:
            if self._closed is not None:
                return
            self._closed = "closed"
            try:
                await self._request(None, 10.0)
            except (OSError, TimeoutError, ValueError):
                await self._sandbox._kill_supervisor(self.pid, self.slot)
            self._finish()
        log.info("session.stop", session=self.slot, executions=self.executions)

    async def _abort(self, why: str) -> None:
        self._closed = why
        await self._sandbox._kill_supervisor(self.pid, self.slot)
        self._finish()
        log.warning("session.lost", session=self.slot, why=why)

    def _finish(self) -> None:
        self._channel.close()
        self._sandbox._release(self)

    async def __aenter__(self) -> LocalSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class LocalSandbox:
    """Isolated, stateful Python sessions on this machine (see ``docs/sandbox.md``).

    ``LocalSandbox(config=None, **overrides)``: ``overrides`` are :class:`SandboxConfig` fields.
    The template process starts on first use (or on ``async with``); ``close()`` stops everything.
    """

    def __init__(self, config: SandboxConfig | None = None, **overrides: Any) -> None:
        self.config = _make_config(config, overrides)
        self._protections: isolation.Protections | None = None
        self._uid_block: isolation.UidBlock | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._ctl: socket.socket | None = None
        self._ctl_lock: asyncio.Lock | None = None
        self._start_lock: asyncio.Lock | None = None
        self._slots: asyncio.Semaphore | None = None
        self._free: list[int] = []
        self._next_slot = 0
        self._sessions: dict[int, LocalSession] = {}
        self._closed = False
        self._broken: str | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.preload_failures: dict[str, str] = {}
        """Modules of ``config.preload`` that failed to import in the template (name -> error)."""

    # -- lifecycle

    @property
    def protections(self) -> isolation.Protections:
        """Which protections are active for this sandbox (probes the host on first access)."""
        if self._protections is None:
            self._protections = isolation.detect_protections(self.config)
        return self._protections

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
            started = time.perf_counter()
            if self._protections is None:
                self._protections = await asyncio.to_thread(
                    isolation.detect_protections, self.config
                )
            protections = self._protections
            if self.config.strict:
                protections.require_strict()
            if protections.session_uids and self._uid_block is None:
                # uids of our own, host-wide: no other sandbox shares our process limits
                self._uid_block = isolation.reserve_uid_block()
                protections = self._protections = dataclasses.replace(
                    protections, uid_base=self._uid_block.base
                )
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
            command = isolation.template_command(
                argv, self.config, protections, pass_fds=[theirs.fileno()]
            )
            debug = bool(os.environ.get("TIR_AGENT_SANDBOX_DEBUG"))
            try:
                self._proc = await asyncio.create_subprocess_exec(
                    *command,
                    pass_fds=[theirs.fileno()],
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
                raise SandboxError(f"cannot start the sandbox template: {e}") from e
            finally:
                theirs.close()
            ours.setblocking(False)
            self._ctl = ours
            self._ctl_lock = asyncio.Lock()
            self._slots = (
                asyncio.Semaphore(self.config.max_sessions) if self.config.max_sessions else None
            )
            try:
                async with asyncio.timeout(START_TIMEOUT):
                    ready, _ = await self._recv()
            except (TimeoutError, OSError, ValueError) as e:
                await self._stop_template()
                raise SandboxError(f"the sandbox template did not start: {e}") from e
            self.preload_failures = dict(ready.get("failed", {}))
            self._tasks.append(asyncio.create_task(self._watch_template()))
            if self.config.idle_timeout is not None:
                self._tasks.append(asyncio.create_task(self._evict_idle(self.config.idle_timeout)))
            log.info(
                "sandbox.start",
                mechanism=protections.mechanism,
                active=protections.active(),
                preload_failed=sorted(self.preload_failures),
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
        if self._uid_block is not None:  # the template is gone, and its sessions with it
            self._uid_block.release()
            self._uid_block = None

    async def _watch_template(self) -> None:
        assert self._proc is not None
        code = await self._proc.wait()
        if not self._closed:
            self._broken = f"the sandbox template exited with code {code}"
            log.error("sandbox.lost", code=code)

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
        loop = asyncio.get_running_loop()
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(sock, proto.MAX_PACKET, 1)
            except BlockingIOError:
                waiter = loop.create_future()
                loop.add_reader(sock.fileno(), _wake, waiter)
                try:
                    await waiter
                finally:
                    loop.remove_reader(sock.fileno())
                continue
            if not data:
                raise OSError("the sandbox template closed its channel")
            return proto.decode(data), fds

    async def _call(self, message: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        assert self._ctl is not None and self._ctl_lock is not None
        async with self._ctl_lock:
            if self._broken:
                raise SandboxError(self._broken)
            try:
                self._ctl.send(proto.encode(message))
                async with asyncio.timeout(30.0):
                    return await self._recv()
            except (OSError, TimeoutError, ValueError) as e:
                self._broken = f"the sandbox template failed: {e}"
                raise SandboxError(self._broken) from e

    async def _kill_supervisor(self, pid: int, slot: int) -> None:
        """Last resort when a supervisor stops answering: the template kills the session."""
        if (
            self._ctl is None
            or self._broken
            or self._proc is None
            or self._proc.returncode is not None
        ):
            return
        log.warning("session.kill", session=slot)
        with contextlib.suppress(SandboxError):
            await self._call({"op": "kill", "pid": pid, "slot": slot})

    def _release(self, session: LocalSession) -> None:
        if self._sessions.pop(session.slot, None) is not None:
            self._free.append(session.slot)
            if self._slots is not None:
                self._slots.release()

    # -- sessions

    async def open_session(self) -> LocalSession:
        """A new session; the caller must ``await session.close()`` (or use :meth:`session`)."""
        await self.start()
        if self._broken:
            raise SandboxError(self._broken)
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
            except BaseException:
                self._free.append(slot)
                raise
            if not fds:
                self._free.append(slot)
                raise SandboxError("the sandbox template did not hand over a session channel")
            sock = socket.socket(fileno=fds[0])
            _, channel = await asyncio.get_running_loop().create_unix_connection(
                _Channel, sock=sock
            )
        except BaseException:
            if self._slots is not None:
                self._slots.release()
            raise
        session = LocalSession(self, slot, int(reply["pid"]), channel)
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
