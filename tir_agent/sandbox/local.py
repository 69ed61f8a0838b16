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
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

from tir_agent._log import get_logger
from tir_agent.errors import ConfigError, SandboxClosedError, SandboxError
from tir_agent.sandbox import _cgroup, isolation
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

OVERDUE = 1.0
"""Seconds past an execution's timeout after which the host, still without an answer, asks the
session's supervisor to time the cell out (it does when it was not watching the cell: a cell
can take its own token or disarm its takeover timer, docs/sandbox.md)."""


def _expire(waiter: asyncio.Future[dict[str, Any] | None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError("the session did not answer in time"))


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def _receive(sock: socket.socket, eof: str) -> tuple[dict[str, Any], list[int]]:
    """One message (and the descriptors sent along) from a non-blocking SEQPACKET socket; an
    ``OSError(eof)`` once the other end closed it."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(sock, proto.MAX_PACKET, 2)
        except BlockingIOError:
            waiter = loop.create_future()
            loop.add_reader(sock.fileno(), _wake, waiter)
            try:
                await waiter
            finally:
                loop.remove_reader(sock.fileno())
            continue
        if not data:
            for fd in fds:
                os.close(fd)
            raise OSError(eof)
        return proto.decode(data), fds


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
        self.limit = proto.reply_limit(0)
        self.eof_sent = False
        self.confirmed = False
        """The supervisor confirmed the close (it killed everything and removed the work dir)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's transports have the same methods but are not
        # subclasses of asyncio.Transport, and the sandbox must work on either loop.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.lost is not None:
            return
        self.buffer += data
        try:
            for body in proto.unframe_bodies(self.buffer, self.limit):
                rid, fields = proto.parse_reply(body)
                if fields is None:
                    self.confirmed = True
                if rid != self.rid:
                    continue  # the reply to a request that was cancelled meanwhile
                if self.waiter is not None and not self.waiter.done():
                    self.waiter.set_result(fields)
        except ValueError as e:
            # garbage (only a cell writing into its session socket sends it): stop reading
            self.buffer.clear()
            self._fail(e)
            if self.transport is not None:
                self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionResetError("the session supervisor closed its channel"))

    def _fail(self, exc: Exception) -> None:
        if self.lost is None:
            self.lost = exc
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    async def request(
        self,
        run: tuple[float, int, str, int] | None,
        wait: float,
        overdue: Callable[[int, float, int], None] | None = None,
    ) -> dict[str, Any] | None:
        """Send a run request ``(timeout, cap, code, mode)``, or the close request (``None``); return
        the result's fields, or ``None`` once the session confirmed its close. ``overdue(rid,
        timeout, cap)`` is called if the run has no answer :data:`OVERDUE` seconds after its
        timeout."""
        if run is None and self.confirmed:
            return None
        if self.lost is not None:
            raise self.lost
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        if run is not None:
            self.counter += 1
            self.rid = self.counter
            self.limit = proto.reply_limit(run[1])
            self.transport.write(proto.run_frame(self.counter, *run))
        else:  # close: half-close our side; the supervisor cleans up and confirms
            self.rid = None
            if not self.eof_sent:
                self.eof_sent = True
                self.transport.write_eof()
        waiter = self.waiter
        loop = asyncio.get_running_loop()
        timer = loop.call_later(wait, _expire, waiter)
        late = None
        if run is not None and overdue is not None:
            late = loop.call_later(run[0] + OVERDUE, overdue, self.counter, run[0], run[1])
        try:
            return await waiter
        finally:
            timer.cancel()
            if late is not None:
                late.cancel()

    def cancel(self) -> None:
        """Close the session while a request runs: half-close our side at once (the supervisor
        kills the running cell, cleans up and confirms) and make the pending request's answer
        the confirmation (``None``) instead of the cell's result."""
        self.rid = None
        if self.transport is not None and self.lost is None and not self.eof_sent:
            self.eof_sent = True
            self.transport.write_eof()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class LocalSession:
    """One stateful interpreter. Use through ``async with sandbox.session() as s``."""

    def __init__(
        self,
        sandbox: LocalSandbox,
        slot: int,
        pid: int,
        channel: _Channel,
        generation: int,
        control: socket.socket | None = None,
    ) -> None:
        self._sandbox = sandbox
        self._control = control
        """Our socket to the supervisor alone (for :meth:`reset`); no session process has it."""
        self.slot = slot
        self.pid = pid
        """Pid of the session's supervisor, as seen inside the sandbox."""
        self._generation = generation
        """Which start of the template this session belongs to (see ``LocalSandbox.restarts``)."""
        self._channel = channel
        self._lock = asyncio.Lock()
        self._closed: str | None = None
        self.executions = 0
        self.last_used = time.monotonic()
        self.busy = False
        self.cancelled = False
        """``close()`` cancelled a cell that was running (its ``run`` raised
        :class:`SandboxClosedError`)."""

    @property
    def closed(self) -> bool:
        """Whether the session was closed (by the caller, eviction or the sandbox)."""
        return self._closed is not None

    async def _request(
        self, run: tuple[float, int, str, int] | None, wait: float
    ) -> dict[str, Any] | None:
        return await self._channel.request(run, wait, self._overdue)

    def _overdue(self, rid: int, timeout: float, cap: int) -> None:
        """No answer to request ``rid`` :data:`OVERDUE` seconds past its timeout: ask the
        supervisor to time it out (the supervisor, not the session's processes, reads this
        socket; it ignores this when it watches the cell itself)."""
        if self._control is None:
            return
        message = {"op": "expire", "rid": rid, "timeout": timeout, "cap": cap}
        with contextlib.suppress(OSError):
            self._control.send(proto.encode(message))

    async def run(
        self,
        code: str,
        *,
        timeout: float | None = None,
        max_output_characters: int | None = None,
        ipython: bool = False,
        traceback_verbosity: proto.TracebackVerbosity | None = None,
    ) -> ExecutionResult:
        """Run one cell in this session; ``None`` means the sandbox's configured default.

        ``ipython=True`` runs the cell through IPython as NeMo-Skills' sandbox server does
        (docs/service.md): dedented, magics and ``!cmd``, values shown by IPython's pretty
        printer, tracebacks on stdout shaped by ``traceback_verbosity`` (``Plain`` when
        ``None``), output tidied as theirs and dropped on a timeout. The default runs it as
        plain Python: short tracebacks on stderr, values shown with ``repr``."""
        config = self._sandbox.config
        t = config.timeout if timeout is None else float(timeout)
        cap = (
            config.max_output_characters if max_output_characters is None else max_output_characters
        )
        if t <= 0 or cap < 0:
            raise ConfigError("timeout must be > 0 and max_output_characters >= 0")
        proto.check_cell_options(ipython, traceback_verbosity)
        mode = proto.cell_mode(ipython, traceback_verbosity or "Plain")
        async with self._lock:
            if self._closed is not None:
                raise SandboxClosedError(f"the session was closed ({self._closed})")
            self.busy = True
            try:
                fields = await self._request((t, cap, code, mode), t + SLACK)
                if fields is None and self._closed == "closed":  # close() cancelled the cell
                    raise SandboxClosedError("the session was closed while this code ran")
                if fields is None:
                    raise ValueError("the session closed instead of answering")
            except (OSError, TimeoutError, ValueError) as e:
                # ValueError: a garbled reply (only a cell writing to its session socket does it)
                restarted = self._sandbox._restarted_since(self._generation)
                await self._abort(
                    "template died"
                    if restarted
                    else "garbled reply"
                    if isinstance(e, ValueError)
                    else f"lost its supervisor: {type(e).__name__}"
                )
                if restarted:
                    raise SandboxError(
                        f"sandbox session {self.slot} was lost: {restarted}; its state is gone, "
                        "open a new session"
                    ) from e
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
        """Stop every process of the session and remove its work directory. A cell running in
        it is cancelled at once: its ``run`` raises :class:`SandboxClosedError`."""
        cancelling = self._closed is None and self.busy
        if cancelling:
            self._closed = "closed"
            self.cancelled = True
            self._channel.cancel()
        async with self._lock:  # (a cancelled run returns as soon as the supervisor confirms)
            if self._closed is not None and not (cancelling and self._closed == "closed"):
                return  # closed already, or lost while its cancelled cell ended
            self._closed = "closed"
            try:
                await self._request(None, 10.0)
            except (OSError, TimeoutError, ValueError):
                await self._sandbox._kill_supervisor(self)
            self._finish()
        log.info("session.stop", session=self.slot, executions=self.executions)

    async def reset(self) -> None:
        """Give the session to its next user: a fresh interpreter, files and channels, as if it
        were a new session, but without forking a new supervisor (a quarter less sandbox CPU
        per one-cell session here, docs/batch.md). Nothing of what ran before is visible afterwards: every process of the
        session is killed, its namespaces (work dir, ``/tmp``, ``/dev/shm``, System V IPC) go
        with them, and the host's socket is replaced (see docs/batch.md). Raises
        :class:`SandboxError` (and closes the session) if the supervisor does not confirm."""
        async with self._lock:
            if self._closed is not None:
                raise SandboxClosedError(f"the session was closed ({self._closed})")
            control = self._control
            if control is None:
                raise SandboxError("this session cannot be reset (no control socket)")
            try:
                control.send(proto.encode({"op": "reset"}))
                async with asyncio.timeout(30.0):
                    reply, fds = await _receive(
                        control, "the session's supervisor closed its channel"
                    )
                if reply.get("op") != "reset" or len(fds) != 1:
                    for fd in fds:
                        os.close(fd)
                    raise ValueError(f"unexpected reply {reply.get('op')!r}")
                sock = socket.socket(fileno=fds[0])
                _, channel = await asyncio.get_running_loop().create_unix_connection(
                    _Channel, sock=sock
                )
            except (OSError, TimeoutError, ValueError) as e:
                self._closed = f"reset failed: {type(e).__name__}: {e}"
                await self._sandbox._kill_supervisor(self)
                self._finish()
                raise SandboxError(f"sandbox session {self.slot} could not be reset: {e}") from e
            self._channel.close()
            self._channel = channel
            self.executions = 0
            self.cancelled = False
            self.last_used = time.monotonic()
        log.debug("session.reset", session=self.slot)

    async def _abort(self, why: str) -> None:
        self._closed = why
        await self._sandbox._kill_supervisor(self)
        self._finish()
        log.warning("session.lost", session=self.slot, why=why)

    def _finish(self) -> None:
        self._channel.close()
        if self._control is not None:
            self._control.close()
            self._control = None
        self._sandbox._release(self)

    async def __aenter__(self) -> LocalSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


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
        return await _receive(sock, "the sandbox template closed its channel")

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
                    _Channel, sock=sock
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
