"""A session of the local sandbox, host side: the channel to its supervisor and the
:class:`LocalSession` a caller runs cells in (made by
:class:`~tir_agent.sandbox.local.LocalSandbox`, which also re-exports it). See
``docs/sandbox.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

from tir_agent._log import get_logger
from tir_agent.errors import ConfigError, SandboxClosedError, SandboxError
from tir_agent.sandbox import protocol as proto
from tir_agent.sandbox.result import ExecutionResult

if TYPE_CHECKING:
    from tir_agent.sandbox.config import SandboxConfig

# The sessions' events (execution.finish, session.stop, ...) stay under the sandbox's logger.
log = get_logger("tir_agent.sandbox.local")
_stdlog = logging.getLogger("tir_agent.sandbox.local")

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


async def receive(sock: socket.socket, eof: str) -> tuple[dict[str, Any], list[int]]:
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


class Channel(asyncio.Protocol):
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


class Owner(Protocol):
    """What a session uses of its sandbox (:class:`~tir_agent.sandbox.local.LocalSandbox`)."""

    config: SandboxConfig

    def _restarted_since(self, generation: int) -> str | None: ...

    async def _kill_supervisor(self, session: LocalSession) -> None: ...

    def _release(self, session: LocalSession) -> None: ...


class LocalSession:
    """One stateful interpreter. Use through ``async with sandbox.session() as s``."""

    def __init__(
        self,
        sandbox: Owner,
        slot: int,
        pid: int,
        channel: Channel,
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
                    reply, fds = await receive(
                        control, "the session's supervisor closed its channel"
                    )
                if reply.get("op") != "reset" or len(fds) != 1:
                    for fd in fds:
                        os.close(fd)
                    raise ValueError(f"unexpected reply {reply.get('op')!r}")
                sock = socket.socket(fileno=fds[0])
                _, channel = await asyncio.get_running_loop().create_unix_connection(
                    Channel, sock=sock
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
