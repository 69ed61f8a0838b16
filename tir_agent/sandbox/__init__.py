"""Sandboxed, stateful Python sessions."""

from __future__ import annotations

from tir_agent.sandbox.base import Sandbox, SandboxSession
from tir_agent.sandbox.config import SandboxConfig
from tir_agent.sandbox.result import ExecutionResult, ExecutionStatus, StateOutcome

__all__ = [
    "ExecutionResult",
    "ExecutionStatus",
    "Sandbox",
    "SandboxConfig",
    "SandboxSession",
    "StateOutcome",
]
