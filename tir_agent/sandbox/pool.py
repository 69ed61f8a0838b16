"""Sessions of a :class:`~tir_agent.sandbox.local.LocalSandbox` used again, one user at a time.

A batch run opens one session per sample. Opening one costs the sandbox a new supervisor (a
fork of the template with the math stack mapped, its start, its exit): 19 of the 41 ms of
sandbox CPU of a one-cell session measured here, of which a reset still costs 8 (docs/batch.md).
:class:`SessionPool` instead hands a finished sample's session to the next sample after
:meth:`LocalSession.reset`: every process of the session is killed, its files and IPC objects
go with its namespaces, and a fresh interpreter with new channels takes its place, so nothing of
one sample is visible to the next (``tests/sandbox/test_attacks_reset.py``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator

from tir_agent.errors import SandboxError
from tir_agent.sandbox.local import LocalSandbox, LocalSession
from tir_agent.sandbox.result import ExecutionResult


class SessionPool:
    """A :class:`~tir_agent.sandbox.base.Sandbox` whose ``session()`` reuses reset sessions.

    ``size`` bounds the sessions kept for reuse (idle or being reset; more are closed when their
    user is done): use the number of samples in flight. A finished user's session is reset in
    the background, so the reset overlaps the next sample's first model call; a user that finds
    no idle session waits for a reset under way rather than starting a new supervisor. The pool
    does not own ``sandbox``: :meth:`close` closes only its own sessions.
    """

    def __init__(self, sandbox: LocalSandbox, size: int) -> None:
        self.sandbox = sandbox
        self.size = size
        self._idle: list[LocalSession] = []
        self._resetting: set[asyncio.Task[None]] = set()
        self._waiters: collections.deque[asyncio.Future[LocalSession | None]] = collections.deque()
        """Users waiting for a reset under way, first come first served: each finished reset
        wakes one (with the session, or ``None`` if the reset failed: it looks again)."""

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[LocalSession]:
        """A session nobody else uses until the block ends; reset afterwards for the next."""
        session = await self._acquire()
        try:
            yield session
        finally:
            await self._release(session)

    async def _acquire(self) -> LocalSession:
        while True:
            while self._idle:
                session = self._idle.pop()
                if not session.closed:  # (the sandbox may have evicted or lost it meanwhile)
                    return session
            if not self._resetting:
                return await self.sandbox.open_session()
            waiter: asyncio.Future[LocalSession | None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                given = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():  # handed a session meanwhile
                    self._hand(waiter.result())
                else:
                    self._waiters.remove(waiter)
                raise
            if given is not None and not given.closed:
                return given

    async def _release(self, session: LocalSession) -> None:
        if session.closed:
            return
        kept = len(self._idle) + len(self._resetting)
        if kept >= self.size or self.sandbox.problem is not None:
            await session.close()
            return
        task = asyncio.create_task(self._reset(session))
        self._resetting.add(task)

    async def _reset(self, session: LocalSession) -> None:
        ready: LocalSession | None = session
        try:
            await session.reset()
        except SandboxError:
            ready = None  # (reset closed it)
        finally:
            # no longer under way before anyone is woken: a user woken for a failed reset
            # opens a session of its own when no other reset is left to wait for
            self._resetting.discard(asyncio.current_task())  # type: ignore[arg-type]
        self._hand(ready)

    def _hand(self, session: LocalSession | None) -> None:
        """Give a reset session (``None``: a failed reset) to the first waiting user, else keep
        it idle."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(session)
                return
        if session is not None:
            self._idle.append(session)

    async def run(
        self,
        code: str,
        *,
        timeout: float | None = None,
        max_output_characters: int | None = None,
    ) -> ExecutionResult:
        """Run code once in a fresh session of the sandbox (not one of the pool's)."""
        return await self.sandbox.run(
            code, timeout=timeout, max_output_characters=max_output_characters
        )

    async def close(self) -> None:
        """Close the pool's sessions once their resets are done (the sandbox stays open)."""
        await asyncio.gather(*self._resetting, return_exceptions=True)
        idle, self._idle = self._idle, []
        for session in idle:
            await session.close()
