"""What every tool the model can call (beside ``python_exec``) offers the agent.

A tool has a name, a description and a JSON schema of its parameters, and runs with arguments
that already passed that schema. :class:`~tir_agent.tools.function.FunctionTool` wraps a Python
function; :mod:`tir_agent.tools.mcp` offers the tools of an MCP server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """What a tool call gave the model: the tool message's text, and whether the call failed
    (invalid arguments, unknown tool, the function raised or timed out, the server reported an
    error)."""

    output: str
    failed: bool = False
    arguments: dict[str, Any] | None = None
    """The arguments as parsed (``None`` when they were not a JSON object)."""


class Tool(Protocol):
    """A callable tool, described to the model by :meth:`definition`."""

    @property
    def name(self) -> str:
        """The function name the model calls."""
        ...

    @property
    def description(self) -> str:
        """What the tool does, for the model."""
        ...

    @property
    def parameters(self) -> dict[str, Any]:
        """The JSON schema (an object) its arguments are validated against."""
        ...

    @property
    def timeout(self) -> float | None:
        """Seconds one call may take (``None``: the agent's ``tool_timeout``)."""
        ...

    def definition(self) -> dict[str, Any]:
        """The chat-completions form: ``{"type": "function", "function": {name, description,
        parameters[, strict]}}``."""
        ...

    async def invoke(self, arguments: dict[str, Any]) -> ToolOutcome:
        """Run with valid ``arguments``; failures of the tool itself are an outcome, not raised."""
        ...
