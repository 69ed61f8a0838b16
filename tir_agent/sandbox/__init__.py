"""Sandboxed, stateful Python sessions."""

from __future__ import annotations

from tir_agent.sandbox.base import Sandbox, SandboxSession
from tir_agent.sandbox.config import SandboxConfig
from tir_agent.sandbox.local import LocalSandbox, LocalSession
from tir_agent.sandbox.remote import RemoteSandbox, RemoteSession
from tir_agent.sandbox.result import ExecutionResult, ExecutionStatus, StateOutcome
from tir_agent.sandbox.sync import SyncRemoteSandbox, SyncSandbox, SyncSession

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
