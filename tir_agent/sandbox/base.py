"""The interface every sandbox implements (local processes now, a remote service later)."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol, runtime_checkable

from tir_agent.sandbox.result import ExecutionResult


@runtime_checkable
class SandboxSession(Protocol):
    """A stateful interpreter: variables, imports and functions persist across ``run`` calls."""

    async def run(
        self,
        code: str,
        *,
        timeout: float | None = None,
        max_output_characters: int | None = None,
    ) -> ExecutionResult:
        """Run one cell; ``None`` means the sandbox's configured default."""
        ...

    async def close(self) -> None:
        """Stop every process the session started and remove its files."""
        ...


@runtime_checkable
class Sandbox(Protocol):
    """Something that hands out sessions and runs one-off code."""

    def session(self) -> AbstractAsyncContextManager[SandboxSession]:
        """A new isolated session, closed when the ``async with`` block ends."""
        ...

    async def run(
        self,
        code: str,
        *,
        timeout: float | None = None,
        max_output_characters: int | None = None,
    ) -> ExecutionResult:
        """Run code once in a fresh, throw-away session."""
        ...
