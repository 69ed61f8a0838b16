"""The typed values of one solve: turns, code calls, executions, usage, the result, stream events.

Every value is a frozen pydantic model, so a whole run round-trips through JSON
(``SolveResult.model_validate_json(result.model_dump_json())``). Stream events carry a ``kind``
literal and parse back through :data:`Event`.
"""

from __future__ import annotations

import html
import json
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, TypeAdapter

from tir_agent.sandbox.result import ExecutionResult, ExecutionStatus, StateOutcome

_FROZEN = ConfigDict(frozen=True, extra="forbid")

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]
"""Why the endpoint ended one reply (``None`` on a turn when the endpoint did not say)."""

SolveStatus = Literal[
    "finished", "length", "budget_spent", "max_model_calls", "content_filter", "error"
]
"""Why a solve stopped.

``finished``: the model ended its answer. ``length``: the token budget (or the context) ran out.
``budget_spent``: the model wrote code in the final round, after the last allowed execution.
``max_model_calls``: the bound on model calls was hit. ``content_filter``: the endpoint filtered
the reply. ``error``: the endpoint failed for good (see ``SolveResult.error``).
"""


class Usage(BaseModel):
    """Token counts, as the endpoint reported them (summed over turns in a result).

    ``input_tokens`` / ``output_tokens`` are the Responses API's names; the chat and completions
    names ``prompt_tokens`` / ``completion_tokens`` are accepted when building one and readable as
    properties. ``cached_tokens`` are part of ``input_tokens``, ``reasoning_tokens`` part of
    ``output_tokens``.
    """

    model_config = _FROZEN

    input_tokens: int = Field(
        default=0, validation_alias=AliasChoices("input_tokens", "prompt_tokens")
    )
    """Tokens of the request(s) (``prompt_tokens``)."""
    output_tokens: int = Field(
        default=0, validation_alias=AliasChoices("output_tokens", "completion_tokens")
    )
    """Tokens generated, reasoning tokens included (``completion_tokens``)."""
    cached_tokens: int = 0
    """Input tokens served from the endpoint's prompt cache (billed at the cached price)."""
    reasoning_tokens: int = 0
    """Hidden reasoning tokens, when the endpoint reports them."""
    estimated: bool = False
    """Some counts were not reported by the endpoint (a stream without usage) and were counted or
    estimated here: see docs/agent.md, "Cost"."""

    @property
    def prompt_tokens(self) -> int:
        """Alias of ``input_tokens`` (the chat and completions APIs' name)."""
        return self.input_tokens

    @property
    def completion_tokens(self) -> int:
        """Alias of ``output_tokens`` (the chat and completions APIs' name)."""
        return self.output_tokens

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
            estimated=self.estimated or other.estimated,
        )


class CodeCall(BaseModel):
    """One piece of code the model asked to run (a tool call, or a block between tags)."""

    model_config = _FROZEN

    code: str | None
    """The code; ``None`` when the call was malformed (see ``error``)."""
    id: str | None = None
    """The tool call id (native tools only)."""
    arguments: str | None = None
    """The raw JSON arguments string (native tools only)."""
    error: str | None = None
    """Why the call cannot run (invalid JSON, schema violation, unknown tool); sent to the model."""
    tool: str | None = None
    """The name of the user's tool this call is for (``code`` is then ``None``; see
    :class:`ToolCall`); ``None`` for code."""


class Turn(BaseModel):
    """One model reply, parsed: the text it contributes to the generation, and its code calls."""

    model_config = _FROZEN

    index: int
    """0-based number of the model call in the solve."""
    text: str
    """The reply's text as it enters the generation (in tag formats: up to and including the
    first complete code block, with a swallowed stop string restored)."""
    calls: tuple[CodeCall, ...] = ()
    """Code the model asked to run, in order."""
    finish_reason: FinishReason | None = None
    """Why the endpoint ended the reply."""
    usage: Usage = Usage()
    """Tokens of this call."""
    latency: float = 0.0
    """Seconds the model call took, retries included."""
    discarded: str = ""
    """Text the model wrote after the first complete code block (endpoints without ``stop``); not
    grounded in a real output, so it is dropped."""
    continues: bool = False
    """The reply stopped at a stop string that did not close a code block (e.g. a closing markdown
    fence): the stop string was restored and the model continues the same text."""
    reasoning: str | None = None
    """Reasoning text the endpoint returned beside the answer (``reasoning_content``), if any."""


class Execution(BaseModel):
    """One code execution: the code, what happened, and where it belongs."""

    model_config = _FROZEN

    code: str
    """The code that ran."""
    status: ExecutionStatus
    """``completed``, ``error`` or ``timeout``."""
    stdout: str = ""
    """Standard output (capped)."""
    stderr: str = ""
    """Standard error (capped)."""
    duration: float = 0.0
    """Wall-clock seconds, measured around the sandbox call."""
    turn: int = 0
    """Index of the turn whose call this was."""
    call_id: str | None = None
    """The tool call id (native tools only)."""
    truncated: bool = False
    """Either stream was cut at ``max_code_output_characters``."""
    state: StateOutcome = "kept"
    """The session state after this execution."""

    @classmethod
    def from_result(
        cls, result: ExecutionResult, *, code: str, duration: float, turn: int, call_id: str | None
    ) -> Execution:
        """An execution record from a sandbox result."""
        return cls(
            code=code,
            status=result.status,
            stdout=result.stdout,
            stderr=result.stderr,
            duration=duration,
            turn=turn,
            call_id=call_id,
            truncated=result.truncated,
            state=result.state,
        )


class ToolCall(BaseModel):
    """One call of a user's tool (a function or an MCP server's tool): what the model sent, and
    what it was told."""

    model_config = _FROZEN

    name: str
    """The tool name the model called."""
    arguments: dict[str, Any]
    """The arguments as parsed (empty when they were not a JSON object: see ``raw_arguments``)."""
    output: str
    """The tool message's text: the return value, or the error the model was shown."""
    failed: bool = False
    """The call did not succeed: invalid arguments, unknown tool, the tool raised or timed out,
    or it was over the ``max_tool_calls`` budget."""
    raw_arguments: str = ""
    """The arguments exactly as the model wrote them (a JSON string)."""
    duration: float = 0.0
    """Wall-clock seconds of the call (0 when it was refused before running)."""
    turn: int = 0
    """Index of the turn whose call this was."""
    call_id: str | None = None
    """The tool call id."""


class SolveResult(BaseModel):
    """Everything about one solve: the answer, the transcript, statistics, and why it stopped."""

    model_config = _FROZEN

    answer: str | None
    """The last balanced ``\\boxed{...}`` of the generation, or ``None``."""
    generation: str
    """The whole solution as text: model text and formatted execution outputs interleaved, the
    same shape in every format (what the tag transcript would be)."""
    messages: list[dict[str, Any]]
    """The conversation exactly as sent to the model, with the final reply appended (completions:
    the messages the prompt was rendered from, and the final generation as an assistant message)."""
    prompt: str | None = None
    """Completions API only: the final prompt string (rendered chat template plus generation)."""
    turns: list[Turn]
    """Every model reply, in order."""
    executions: list[Execution]
    """Every code execution, in order."""
    tool_calls: list[ToolCall] = []
    """Every call of the user's tools (not ``python_exec``: see ``executions``), in call order."""
    usage: Usage
    """Tokens summed over all turns."""
    cost: float | None = None
    """USD the solve's tokens cost at the agent's prices; ``None`` when the model has no price
    (see :mod:`tir_agent.pricing`)."""
    generation_time: float
    """Wall-clock seconds of the whole solve."""
    code_execution_time: float
    """Seconds spent in code executions (sum of their durations)."""
    status: SolveStatus
    """Why the solve stopped."""
    error: str | None = None
    """The endpoint's error when ``status`` is ``error`` (or a context overflow ended it)."""
    model: str
    """The model name the requests used."""
    format: Literal["tools", "chat-tags", "completions"]
    """How code was exchanged: native tools, tags in chat messages, tags in a completion prompt."""
    max_code_executions: int | None
    """The budget enforced for this sample."""
    total_code_executions: int | None = None
    """The value that filled ``{total_code_executions}`` in the prompt (drawn per sample)."""
    seed: int | None = None
    """The sample's seed (sampling seed and budget draw)."""

    @property
    def code_rounds_executed(self) -> int:
        """Number of executions (REFERENCE.md §7)."""
        return len(self.executions)

    @property
    def num_code_timeouts(self) -> int:
        """Executions that hit the timeout."""
        return sum(e.status == "timeout" for e in self.executions)

    def to_record(self) -> dict[str, Any]:
        """The per-sample fields of a NeMo-Skills generation line (REFERENCE.md §7)."""
        return {
            "generation": self.generation,
            "predicted_answer": self.answer,
            "code_rounds_executed": self.code_rounds_executed,
            "num_code_timeouts": self.num_code_timeouts,
            "num_generated_tokens": self.usage.completion_tokens,
            "generation_time": self.generation_time,
            "code_execution_time": self.code_execution_time,
            "finish_status": self.status,
            "num_model_calls": len(self.turns),
            "total_code_executions": self.total_code_executions,
            "cost": self.cost,
            "usage": self.usage.model_dump(),
        }

    def _summary(self) -> str:
        tools = f"{len(self.tool_calls)} tool calls · " if self.tool_calls else ""
        return (
            f"{len(self.executions)} executions · {tools}{len(self.turns)} model calls · "
            f"{self.usage.completion_tokens} tokens · {self.generation_time:.2f} s"
        )

    def _repr_markdown_(self) -> str:
        head = f"**answer:** `{self.answer}` · **status:** {self.status} · {self._summary()}"
        fence = "`" * max(4, _longest_backtick_run(self.generation) + 1)
        calls = "".join(
            f"\n- `{c.name}({_short(json.dumps(c.arguments, ensure_ascii=False))})`"
            f"{' **failed**' if c.failed else ''} → `{_short(c.output)!r}`"
            for c in self.tool_calls
        )
        if calls:
            calls = f"\n\n**tool calls:**{calls}"
        return f"{head}{calls}\n\n{fence}text\n{self.generation}\n{fence}\n"

    def _repr_html_(self) -> str:
        head = html.escape(f"answer: {self.answer} · status: {self.status} · {self._summary()}")
        body = html.escape(self.generation)
        calls = "".join(
            f"<li><code>{html.escape(c.name)}("
            f"{html.escape(_short(json.dumps(c.arguments, ensure_ascii=False)))})</code>"
            f"{' <b>failed</b>' if c.failed else ''} → <code>{html.escape(_short(c.output))}</code>"
            "</li>"
            for c in self.tool_calls
        )
        if calls:
            calls = f"<ul>{calls}</ul>"
        return f"<div><b>{head}</b>{calls}<pre style='white-space: pre-wrap'>{body}</pre></div>"


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _longest_backtick_run(text: str) -> int:
    longest = run = 0
    for char in text:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    return longest


class TextDelta(BaseModel):
    """A piece of model text as it streams in (raw: before any block is cut or a stop restored)."""

    model_config = _FROZEN
    kind: Literal["text_delta"] = "text_delta"
    turn: int
    text: str


class CodeStart(BaseModel):
    """The model started writing code (a tag opened, or a tool call began)."""

    model_config = _FROZEN
    kind: Literal["code_start"] = "code_start"
    turn: int


class CodeComplete(BaseModel):
    """A code call is complete and parsed (it may still be refused: see ``call.error``)."""

    model_config = _FROZEN
    kind: Literal["code_complete"] = "code_complete"
    turn: int
    call: CodeCall


class ExecutionDone(BaseModel):
    """A code execution finished."""

    model_config = _FROZEN
    kind: Literal["execution"] = "execution"
    execution: Execution


class ToolCallDone(BaseModel):
    """A call of a user's tool finished (or was refused: see ``tool_call.failed``)."""

    model_config = _FROZEN
    kind: Literal["tool_call"] = "tool_call"
    tool_call: ToolCall


class TurnEnd(BaseModel):
    """A model reply ended and was parsed."""

    model_config = _FROZEN
    kind: Literal["turn_end"] = "turn_end"
    turn: Turn


class Finished(BaseModel):
    """The solve is over; the last event of a stream."""

    model_config = _FROZEN
    kind: Literal["result"] = "result"
    result: SolveResult


Event = Annotated[
    TextDelta | CodeStart | CodeComplete | ExecutionDone | ToolCallDone | TurnEnd | Finished,
    Field(discriminator="kind"),
]
"""Any stream event; parse one with ``EVENT_ADAPTER.validate_json(...)``."""

EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
"""Validates and serialises :data:`Event` values."""
