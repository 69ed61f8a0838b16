"""Sessions of a :class:`~tir_agent.sandbox.local.LocalSandbox` used again, one user at a time.

A batch run opens one session per sample. Opening one costs the sandbox a new supervisor (a
fork of the template with the math stack mapped, its start, its exit), which is about a third
of a one-cell sample's sandbox CPU (docs/batch.md). :class:`SessionPool` instead hands a
finished sample's session to the next sample after :meth:`LocalSession.reset`: every process of
the session is killed, its files and IPC objects go with its namespaces, and a fresh interpreter
with new channels takes its place, so nothing of one sample is visible to the next
(``tests/sandbox/test_attacks_reset.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from tir_agent.errors import SandboxError
from tir_agent.sandbox.local import LocalSandbox, LocalSession
from tir_agent.sandbox.result import ExecutionResult


class SessionPool:
    """A :class:`~tir_agent.sandbox.base.Sandbox` whose ``session()`` reuses reset sessions.

    ``size`` bounds the idle sessions kept (the rest are closed when their user is done); use the
    number of samples in flight. The pool does not own ``sandbox``: :meth:`close` closes only
    the idle sessions.
    """

    def __init__(self, sandbox: LocalSandbox, size: int) -> None:
        self.sandbox = sandbox
        self.size = size
        self._idle: list[LocalSession] = []

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[LocalSession]:
        """A session nobody else uses until the block ends; reset afterwards for the next."""
        session = None
        while self._idle and session is None:
            candidate = self._idle.pop()
            if not candidate.closed:  # (the sandbox may have evicted or lost it meanwhile)
                session = candidate
        if session is None:
            session = await self.sandbox.open_session()
        try:
            yield session
        finally:
            await self._release(session)

    async def _release(self, session: LocalSession) -> None:
        if session.closed:
            return
        if len(self._idle) >= self.size or self.sandbox.problem is not None:
            await session.close()
            return
        try:
            await session.reset()
        except SandboxError:
            return  # (reset closed it)
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
        """Close the idle sessions (the sandbox stays open)."""
        idle, self._idle = self._idle, []
        for session in idle:
            await session.close()
