"""Synchronous facade of :class:`~tir_agent.sandbox.local.LocalSandbox` for scripts and notebooks.

Every call runs on tir-agent's private event loop in a background thread (:mod:`tir_agent._sync`),
so it works in plain scripts and inside a running event loop (Jupyter) alike::

    with SyncSandbox() as sandbox:
        with sandbox.session() as s:
            s.run("x = 41")
            print(s.run("x + 1").stdout)   # 42
        print(sandbox.run("print(2)").stdout)

:class:`SyncRemoteSandbox` is the same for :class:`~tir_agent.sandbox.remote.RemoteSandbox`
(sessions on sandbox servers).
"""

from __future__ import annotations

from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from tir_agent._sync import run_sync
from tir_agent.sandbox.config import SandboxConfig
from tir_agent.sandbox.isolation import Protections
from tir_agent.sandbox.local import LocalSandbox, LocalSession
from tir_agent.sandbox.remote import RemoteSandbox, RemoteSession
from tir_agent.sandbox.result import ExecutionResult

if TYPE_CHECKING:
    from tir_agent.sandbox.http_api import Health


class SyncSession:
    """A stateful session; ``run`` blocks until the cell has finished."""

    def __init__(self, session: LocalSession | RemoteSession) -> None:
        self._session = session

    def run(
        self,
        code: str,
        *,
        timeout: float | None = None,
        max_output_characters: int | None = None,
    ) -> ExecutionResult:
        """Run one cell; ``None`` means the sandbox's configured default."""
        return run_sync(
            self._session.run(code, timeout=timeout, max_output_characters=max_output_characters)
        )

    def close(self) -> None:
        """Stop every process of the session and remove its files."""
        run_sync(self._session.close())

    @property
    def closed(self) -> bool:
        """Whether the session was closed."""
        return self._session.closed

    def __enter__(self) -> SyncSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _SyncFacade:
    """What both blocking sandboxes share: sessions, one-off runs, closing."""

    _sandbox: LocalSandbox | RemoteSandbox

    def session(self) -> SyncSession:
        """A new session; use ``with sandbox.session() as s`` or call ``s.close()``."""
        opening: Coroutine[Any, Any, LocalSession | RemoteSession] = self._sandbox.open_session()
        return SyncSession(run_sync(opening))

    def run(
        self,
        code: str,
        *,
        timeout: float | None = None,
        max_output_characters: int | None = None,
    ) -> ExecutionResult:
        """Run code once in a fresh, throw-away session."""
        return run_sync(
            self._sandbox.run(code, timeout=timeout, max_output_characters=max_output_characters)
        )

    def close(self) -> None:
        """Close every session: a local sandbox stops all its processes, a remote one its
        connections."""
        run_sync(self._sandbox.close())

    def __exit__(self, *exc: object) -> None:
        self.close()


class SyncSandbox(_SyncFacade):
    """Blocking twin of :class:`LocalSandbox` (same arguments); close it or use ``with``."""

    _sandbox: LocalSandbox

    def __init__(self, config: SandboxConfig | None = None, **overrides: Any) -> None:
        self._sandbox = LocalSandbox(config, **overrides)

    @property
    def config(self) -> SandboxConfig:
        """The effective configuration."""
        return self._sandbox.config

    @property
    def protections(self) -> Protections:
        """Which protections are active."""
        return self._sandbox.protections

    def start(self) -> None:
        """Start the template process now (otherwise on first use)."""
        run_sync(self._sandbox.start())

    def __enter__(self) -> SyncSandbox:
        self.start()
        return self


class SyncRemoteSandbox(_SyncFacade):
    """Blocking twin of :class:`~tir_agent.sandbox.remote.RemoteSandbox` (same arguments)."""

    _sandbox: RemoteSandbox

    def __init__(self, urls: str | Sequence[str], **options: Any) -> None:
        self._sandbox = RemoteSandbox(urls, **options)

    @property
    def urls(self) -> list[str]:
        """The servers."""
        return self._sandbox.urls

    def health(self) -> dict[str, Health]:
        """Each server's ``GET /v1/health``, by URL (see :meth:`RemoteSandbox.health`)."""
        return run_sync(self._sandbox.health())

    def __enter__(self) -> SyncRemoteSandbox:
        return self
