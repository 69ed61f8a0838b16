"""Sandboxed, stateful Python sessions.

Names are loaded on first use: the sandbox's own processes import ``tir_agent.sandbox.worker``
and must not pay for the host side (asyncio, HTTP clients, logging renderers). Every module they
import is in the template's heap, which each session and, in protected mode, each cell forks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tir_agent._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "Sandbox": "tir_agent.sandbox.base",
    "SandboxSession": "tir_agent.sandbox.base",
    "SandboxConfig": "tir_agent.sandbox.config",
    "LocalSandbox": "tir_agent.sandbox.local",
    "LocalSession": "tir_agent.sandbox.local",
    "RemoteSandbox": "tir_agent.sandbox.remote",
    "RemoteSession": "tir_agent.sandbox.remote",
    "ExecutionResult": "tir_agent.sandbox.result",
    "ExecutionStatus": "tir_agent.sandbox.result",
    "StateOutcome": "tir_agent.sandbox.result",
    "SyncRemoteSandbox": "tir_agent.sandbox.sync",
    "SyncSandbox": "tir_agent.sandbox.sync",
    "SyncSession": "tir_agent.sandbox.sync",
}

__all__ = [
    "ExecutionResult",
    "ExecutionStatus",
    "LocalSandbox",
    "LocalSession",
    "RemoteSandbox",
    "RemoteSession",
    "Sandbox",
    "SandboxConfig",
    "SandboxSession",
    "StateOutcome",
    "SyncRemoteSandbox",
    "SyncSandbox",
    "SyncSession",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals(), __all__)

if TYPE_CHECKING:
    from tir_agent.sandbox.base import Sandbox, SandboxSession
    from tir_agent.sandbox.config import SandboxConfig
    from tir_agent.sandbox.local import LocalSandbox, LocalSession
    from tir_agent.sandbox.remote import RemoteSandbox, RemoteSession
    from tir_agent.sandbox.result import ExecutionResult, ExecutionStatus, StateOutcome
    from tir_agent.sandbox.sync import SyncRemoteSandbox, SyncSandbox, SyncSession
