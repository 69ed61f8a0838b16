"""The exception tree of tir-agent.

Failures of *user code* in the sandbox (exceptions, timeouts, crashes, memory exhaustion) are not
exceptions: they are :class:`~tir_agent.sandbox.ExecutionResult` values shown to the model. Only
failures of the infrastructure or of the caller's configuration raise::

    TirAgentError
    ├── ConfigError            invalid options, prompt, preset or input; the message says how to fix it
    │   └── PromptError        a prompt config is missing, malformed or lacks a template key
    ├── SandboxError           the sandbox itself failed (could not start, lost its worker process)
    │   ├── SandboxClosedError the sandbox or session was used after close()
    │   ├── IsolationError     strict mode: a required protection is not available on this host
    │   └── SandboxServiceError a sandbox server refused or failed a request, or is not a tir-agent
    │                          server of this API version (wrong URL, token, version)
    ├── ToolServerError        an MCP server could not be started, reached or listed
    └── ModelError             the model endpoint failed after retries (translated from the openai SDK)
        ├── AuthenticationError   missing or rejected API key
        ├── RateLimitError        429 after the last retry
        ├── ContextLengthError    the conversation no longer fits the model's context
        └── BadRequestError       the endpoint rejected the request (400/404/422)
"""

from __future__ import annotations


class TirAgentError(Exception):
    """Base class of every exception raised by tir-agent."""


class ConfigError(TirAgentError, ValueError):
    """An option, prompt, preset or input is invalid; the message says how to fix it."""


class PromptError(ConfigError):
    """A prompt config is missing, malformed, or a template lacks a key."""


class SandboxError(TirAgentError):
    """The sandbox infrastructure failed (not the user's code)."""


class SandboxClosedError(SandboxError):
    """The sandbox or session was used after it was closed."""


class IsolationError(SandboxError):
    """``strict`` mode: a required protection is not available on this host."""


class SandboxServiceError(SandboxError):
    """A remote sandbox server refused or failed a request (bad token, wrong API version, not a
    tir-agent server, malformed request); ``status_code`` is the HTTP status when there was one."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class ToolServerError(TirAgentError):
    """An MCP tool server could not be started, connected to or listed (a failing tool *call* is
    an output shown to the model, not an exception)."""


class ModelError(TirAgentError):
    """The model endpoint failed for good (after retries)."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class AuthenticationError(ModelError):
    """The API key is missing or was rejected."""


class RateLimitError(ModelError):
    """Rate limited (HTTP 429) after the last retry."""


class ContextLengthError(ModelError):
    """The conversation no longer fits the model's context window."""


class BadRequestError(ModelError):
    """The endpoint rejected the request as malformed (HTTP 400/404/422)."""
