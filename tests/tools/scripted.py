"""The scripted OpenAI-compatible endpoint of tests/agent, taught to call any function.

A :class:`Calls` step is a reply with tool calls of any names (the user's tools, ``python_exec``,
or a name that does not exist) and raw argument strings; it renders through the same wire format
(plain JSON or SSE chunks with argument deltas) as every other scripted reply.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tests.agent.scripted import Fail, ScriptedServer, Step


@dataclass
class Calls:
    """A reply with ``text`` and one tool call per ``(name, arguments)`` entry."""

    text: str = ""
    calls: list[tuple[str, str | dict[str, Any]]] = field(default_factory=list)


def code(source: str) -> tuple[str, str]:
    """A ``python_exec`` call of ``source``."""
    return ("python_exec", json.dumps({"code": source}))


class ToolsServer(ScriptedServer):
    """A :class:`ScriptedServer` that also plays :class:`Calls` steps."""

    def __init__(self, steps: list[Step | Fail | Calls], **kwargs: Any) -> None:
        super().__init__(steps, **kwargs)  # type: ignore[arg-type]

    def render(self, step: Step | Calls, body: dict[str, Any]) -> dict[str, Any]:  # type: ignore[override]
        if not isinstance(step, Calls):
            return super().render(step, body)
        offered = "tools" in body and body.get("tool_choice") != "none"
        calls = []
        if offered:
            for i, (name, arguments) in enumerate(step.calls):
                if not isinstance(arguments, str):
                    arguments = json.dumps(arguments)
                calls.append(
                    {
                        "id": f"call_{len(self.requests)}_{i}",
                        "type": "function",
                        "function": {"name": name, "arguments": arguments},
                    }
                )
        finish = "tool_calls" if calls else "stop"
        return {"text": step.text, "calls": calls, "finish": finish, "matched": None}
