"""tir-agent: tool-integrated reasoning with a real sandbox."""

from __future__ import annotations

from tir_agent.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigError,
    ContextLengthError,
    IsolationError,
    ModelError,
    PromptError,
    RateLimitError,
    SandboxClosedError,
    SandboxError,
    TirAgentError,
)
from tir_agent.sandbox.result import ExecutionResult

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "ConfigError",
    "ContextLengthError",
    "ExecutionResult",
    "IsolationError",
    "ModelError",
    "PromptError",
    "RateLimitError",
    "SandboxClosedError",
    "SandboxError",
    "TirAgentError",
    "__version__",
]
