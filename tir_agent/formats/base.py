"""The three places where conversation formats differ, behind one small interface.

The agent loop is written once. A :class:`Format` only (a) builds the next request from its
conversation, (b) parses a reply into a :class:`~tir_agent.turn.Turn`, and (c) feeds execution
outputs back into the conversation. A format object holds the conversation of one solve.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from tir_agent.formats.tags import TagPreset
from tir_agent.sandbox.result import ExecutionResult
from tir_agent.turn import CodeCall, FinishReason, Turn, Usage

Api = Literal["chat", "completions", "responses"]
FormatName = Literal["tools", "chat-tags", "completions"]


@dataclass(slots=True)
class ModelRequest:
    """One request: the endpoint and the SDK parameters (``messages`` or ``prompt``, ``tools``,
    ``tool_choice``, ``stop``, ``max_tokens``, sampling ...). The client adapts it to the model."""

    api: Api
    params: dict[str, Any]


@dataclass(slots=True)
class ToolCallData:
    """A tool call as the endpoint returned it (``arguments`` is a raw JSON string)."""

    id: str
    name: str
    arguments: str


@dataclass(slots=True)
class ModelReply:
    """One reply, free of SDK types."""

    text: str
    finish_reason: FinishReason | None
    usage: Usage
    tool_calls: list[ToolCallData] = field(default_factory=list)
    matched_stop: str | int | None = None
    """The stop string (or token id) the server reports having matched, if it says."""
    stop_sent: bool = False
    """``stop`` was part of the request as finally sent (reasoning models reject it)."""
    reasoning: str | None = None
    latency: float = 0.0
    output_items: list[dict[str, Any]] = field(default_factory=list)
    """Responses API: the reply's output items as input items for the next request (reasoning
    items included)."""
    response_id: str | None = None
    """Responses API: the response's id (for ``previous_response_id``)."""


@dataclass(frozen=True, slots=True)
class Feedback:
    """What the loop hands back for one code call."""

    call: CodeCall
    result: ExecutionResult | None
    """The execution's result; ``None`` when the call was refused (malformed, or over budget)."""
    hint: str = ""
    """Budget hint after an execution (REFERENCE.md §4), or the refusal text when not run."""
    output: str | None = None
    """A user tool's output (the whole tool message) when the call was for one of them."""


class Format(Protocol):
    """The conversation of one solve in one format."""

    tags: TagPreset

    @property
    def name(self) -> FormatName:
        """``tools``, ``chat-tags`` or ``completions``."""
        ...

    def build_request(self, *, final: bool, max_tokens: int | None) -> ModelRequest:
        """The next request; ``final``: the budget is spent, code will not run (tools withdrawn)."""
        ...

    def parse(self, reply: ModelReply, index: int) -> Turn:
        """The reply as a turn; also records the reply in the conversation."""
        ...

    def feed(self, turn: Turn, feedback: list[Feedback]) -> str:
        """Append execution outputs to the conversation (an empty list: the model continues its
        text); return what they add to the generation after ``turn.text``."""
        ...

    def messages(self) -> list[dict[str, Any]]:
        """The conversation so far, as chat messages."""
        ...

    def prompt(self) -> str | None:
        """Completions only: the prompt string so far."""
        ...
