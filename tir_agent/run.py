"""One solve in progress: its conversation, counters, sandbox session, events and result.

:class:`~tir_agent.agent.Agent` makes a :class:`Run` for each problem and drives it through the
one loop (:meth:`Agent._loop <tir_agent.agent.Agent._loop>`); a run picks the format for the
agent's options, executes the model's code within the budget (opening the sandbox session on
the first call), records every turn and execution, and builds the
:class:`~tir_agent.turn.SolveResult`.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, Protocol, cast

from tir_agent._log import get_logger
from tir_agent.answers import extract_answer
from tir_agent.budget import RUN_OUT_HINT, draw_total_code_executions, hint_after
from tir_agent.chat_templates import ChatTemplate
from tir_agent.errors import ConfigError, ModelError
from tir_agent.formats.base import Feedback, Format
from tir_agent.formats.chat_tags import ChatTagsFormat
from tir_agent.formats.completion_tags import CompletionTagsFormat
from tir_agent.formats.completion_tools import CompletionToolsFormat
from tir_agent.formats.native import ToolsFormat
from tir_agent.formats.parsing import BlockWatcher
from tir_agent.formats.responses import ResponsesFormat
from tir_agent.pricing import cost_of
from tir_agent.sandbox.base import Sandbox, SandboxSession
from tir_agent.turn import (
    CodeCall,
    CodeComplete,
    CodeStart,
    Event,
    Execution,
    ExecutionDone,
    SolveResult,
    SolveStatus,
    TextDelta,
    Turn,
    TurnEnd,
    Usage,
)

if TYPE_CHECKING:
    from tir_agent.agent_config import AgentConfig
    from tir_agent.client import ModelClient
    from tir_agent.formats.tags import TagPreset
    from tir_agent.pricing import PriceTable
    from tir_agent.prompts import PromptConfig
    from tir_agent.tools.calls import ToolCalls
    from tir_agent.tools.toolbox import ToolIndex

# The agent's events (model.call, code.execute, solve.finish): under the agent's logger, where
# users set their level.
log = get_logger("tir_agent.agent")
_std = logging.getLogger("tir_agent.agent")

Problem = str | Sequence[Mapping[str, Any]]
"""A problem statement (filled into the prompt), or a conversation of chat messages."""

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})


class Solver(Protocol):
    """What a :class:`Run` uses of its agent (:class:`~tir_agent.agent.Agent`)."""

    config: AgentConfig
    prompt: PromptConfig
    tags: TagPreset
    template: ChatTemplate | None
    client: ModelClient
    prices: PriceTable
    _states_budget: bool
    """Whether the prompt states the budget (``{total_code_executions}``)."""

    async def _sandbox_for_run(self) -> Sandbox: ...


def _check_messages(problem: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A copy of a conversation, each entry checked (the error names the bad one)."""
    if not problem:
        raise ConfigError(
            "Invalid OpenAI prompt format: the message list is empty; pass at least one user message"
        )
    messages = []
    for i, entry in enumerate(problem):
        if not isinstance(entry, Mapping):
            raise ConfigError(
                f"Invalid OpenAI prompt format: message {i} is a {type(entry).__name__}, not a "
                f'dict like {{"role": "user", "content": "..."}}: {entry!r:.80}'
            )
        role, content = entry.get("role"), entry.get("content")
        if role not in _ROLES:
            raise ConfigError(
                f"Invalid OpenAI prompt format: message {i} has role {role!r}; use one of "
                f"{', '.join(sorted(_ROLES))}: {dict(entry)!r:.80}"
            )
        if not isinstance(content, str | list) and not (
            role == "assistant" and "tool_calls" in entry
        ):
            raise ConfigError(
                f"Invalid OpenAI prompt format: message {i} ({role}) needs a string 'content': {dict(entry)!r:.80}"
            )
        messages.append(dict(entry))
    return messages


class Run:
    """The state of one solve: conversation, counters, transcript, sandbox session, events."""

    def __init__(
        self,
        agent: Solver,
        problem: Problem,
        seed: int | None,
        fields: Mapping[str, Any],
        emit: Callable[[Event], None] | None,
        functions: ToolIndex | None = None,
    ) -> None:
        config = agent.config
        self.agent = agent
        self.config = config
        self.seed = seed
        self.emit = emit
        self.total = draw_total_code_executions(config.total_code_executions_in_prompt, seed or 0)
        if self.total is None and agent._states_budget:
            self.total = config.max_code_executions
        self.budget = (
            self.total if config.override_max_code_executions else config.max_code_executions
        )
        if isinstance(problem, str):
            self.problem_id = hashlib.blake2b(problem.encode(), digest_size=5).hexdigest()
            messages = agent.prompt.build_messages(
                {"problem": problem, **fields}, tags=agent.tags, total_code_executions=self.total
            )
        elif isinstance(problem, Sequence):
            messages = _check_messages(cast(Sequence[Mapping[str, Any]], problem))
            self.problem_id = hashlib.blake2b(repr(messages).encode(), digest_size=5).hexdigest()
        else:
            raise ConfigError(
                f"A problem is a string or a list of chat messages, not {type(problem).__name__}"
            )
        params: dict[str, Any] = {}
        for key in ("temperature", "top_p", "reasoning_effort", "extra_body"):
            if (value := getattr(config, key)) is not None:
                params[key] = value
        if seed is not None:
            params["seed"] = seed
        if functions is not None and config.format == "tags":  # Hermes-style, in the prompt
            from tir_agent.tools.hermes import offer_tools

            default = getattr(agent.template, "default_system", None)  # completions: Qwen's
            messages = offer_tools(messages, functions.plain_definitions(), default)
        self.format: Format
        definitions = functions.definitions() if functions is not None else None
        if config.api == "completions" and config.format == "tools":
            params.pop("reasoning_effort", None)
            template = cast(ChatTemplate, agent.template)
            self.format = CompletionToolsFormat(
                messages,
                agent.tags,
                params,
                template,
                functions=definitions,
                functions_open=self.functions_open,
            )
        elif config.api == "completions":
            params.pop("reasoning_effort", None)
            template = cast(ChatTemplate, agent.template)
            self.format = CompletionTagsFormat(
                template.render(messages), messages, agent.tags, params, template.stop
            )
        elif config.api == "responses":
            self.format = ResponsesFormat(
                messages,
                agent.tags,
                params,
                config.tool_choice,
                reasoning_model=agent.client.reasoning,
                store=config.store,
                functions=definitions,
                functions_open=self.functions_open,
            )
        elif config.format == "tools":
            self.format = ToolsFormat(
                messages,
                agent.tags,
                params,
                config.tool_choice,
                definitions,
                self.functions_open,
            )
        else:
            self.format = ChatTagsFormat(messages, agent.tags, params)
        if functions is not None and config.format == "tags":
            from tir_agent.chat_templates import ChatMLTemplate
            from tir_agent.tools.hermes import CHATML_TURN, HermesTools

            chatml = isinstance(agent.template, ChatMLTemplate)
            inner = cast(Any, self.format)
            self.format = HermesTools(inner, set(functions.tools), CHATML_TURN if chatml else None)
        self.turns: list[Turn] = []
        self.executions: list[Execution] = []
        self.executed = 0
        self.tools: ToolCalls | None = None
        if functions is not None:
            from tir_agent.tools.calls import ToolCalls

            self.tools = ToolCalls(functions, config.max_tool_calls, emit)
        self.usage = Usage()
        self.parts: list[str] = []
        self.started = time.perf_counter()
        self._stack = AsyncExitStack()
        self._session: SandboxSession | None = None

    async def __aenter__(self) -> Run:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    def tokens_left(self) -> int | None:
        """What remains of the solution's token budget (``None``: no budget)."""
        if self.config.max_tokens is None:
            return None
        return self.config.max_tokens - self.usage.completion_tokens

    def callbacks(self) -> dict[str, Callable[..., None]]:
        """Streaming callbacks for the client (none when not streaming: plain requests)."""
        emit = self.emit
        if emit is None:
            return {}
        index = len(self.turns)
        watcher = BlockWatcher(self.agent.tags)

        def on_text(text: str) -> None:
            emit(TextDelta(turn=index, text=text))
            if self.format.name != "tools" and watcher.feed(text):
                emit(CodeStart(turn=index))

        return {"on_text": on_text, "on_tool_call": lambda: emit(CodeStart(turn=index))}

    def record(self, turn: Turn) -> Turn:
        """Count a model reply and add its text to the generation."""
        self.turns.append(turn)
        self.usage += turn.usage
        self.parts.append(turn.text)
        if _std.isEnabledFor(logging.INFO):  # skip building the event when nobody listens
            log.info(
                "model.call",
                turn=turn.index,
                prompt_tokens=turn.usage.prompt_tokens,
                completion_tokens=turn.usage.completion_tokens,
                latency=round(turn.latency, 4),
                finish_reason=turn.finish_reason,
                calls=len(turn.calls),
            )
        if self.emit is not None:
            for call in turn.calls:
                self.emit(CodeComplete(turn=turn.index, call=call))
            self.emit(TurnEnd(turn=turn))
        return turn

    def add_text(self, text: str) -> None:
        """Add fed-back text (formatted outputs) to the generation."""
        self.parts.append(text)

    async def _open_session(self) -> SandboxSession:
        if self._session is None:
            sandbox = await self.agent._sandbox_for_run()
            self._session = await self._stack.enter_async_context(sandbox.session())
        return self._session

    def ends_final_round(self, turn: Turn) -> bool:
        """Code is spent and ``turn`` has calls: whether they end the solve (none of the user's
        tools may run; in tag formats also code written anyway, which nothing answers)."""
        if not self.functions_open():
            return True
        return self.format.name != "tools" and any(c.tool is None for c in turn.calls)

    def functions_open(self) -> bool:
        """Whether the user's tools may still be called (there are some, within their budget)."""
        return self.tools is not None and self.tools.open()

    async def execute_all(self, turn: Turn) -> list[Feedback]:
        """Run a turn's calls: code in order in the session, each user tool call concurrently
        beside it; the feedback in call order."""
        if self.tools is None:
            return [await self.execute(call, turn) for call in turn.calls]
        feedback: list[Feedback | None] = [None] * len(turn.calls)

        async def code() -> None:
            for i, call in enumerate(turn.calls):
                if call.tool is None:
                    feedback[i] = await self.execute(call, turn)

        await self.tools.run(turn, feedback, code())
        return cast(list[Feedback], feedback)

    async def execute(self, call: CodeCall, turn: Turn) -> Feedback:
        """Run one call within the budget; refused calls are answered, not run."""
        if call.code is None:
            return Feedback(call, None, call.error or "Error: no code")
        if self.budget is not None and self.executed >= self.budget:
            return Feedback(call, None, RUN_OUT_HINT)
        session = await self._open_session()
        started = time.perf_counter()
        result = await session.run(
            call.code,
            timeout=self.config.code_execution_timeout,
            max_output_characters=self.config.max_code_output_characters,
        )
        duration = time.perf_counter() - started
        self.executed += 1
        hint = (
            hint_after(self.executed, self.budget)
            if self.config.add_remaining_code_executions
            else ""
        )
        if not hint and self.format.name == "tools" and self.executed == self.budget:
            hint = RUN_OUT_HINT  # tools are withdrawn next: the model must learn why
        execution = Execution.from_result(
            result, code=call.code, duration=duration, turn=turn.index, call_id=call.id
        )
        self.executions.append(execution)
        if _std.isEnabledFor(logging.INFO):
            log.info(
                "code.execute", turn=turn.index, status=result.status, duration=round(duration, 4)
            )
        if self.emit is not None:
            self.emit(ExecutionDone(execution=execution))
        return Feedback(call, result, hint)

    def stop_status(self, turn: Turn) -> SolveStatus:
        """Why a reply without code ended the solve."""
        if turn.finish_reason == "length":
            return "length"
        if turn.finish_reason == "content_filter":
            return "content_filter"
        return "finished"

    def finish(self, status: SolveStatus, error: ModelError | None = None) -> SolveResult:
        """The result of the solve."""
        generation = "".join(self.parts)
        fmt = self.format
        messages = list(fmt.messages())
        if fmt.name != "completions":  # chat formats: exactly what went over the wire
            messages = self.agent.client.sent_messages(messages)
        model = self.config.model
        if model == "local" or model.startswith("local:"):
            cost: float | None = 0.0  # the embedded model runs here: no API fees
        else:
            cost = cost_of(self.usage, self.config.model, self.agent.prices)
        result = SolveResult(
            answer=extract_answer(generation),
            generation=generation,
            messages=messages,
            prompt=fmt.prompt(),
            turns=self.turns,
            executions=self.executions,
            tool_calls=self.tools.calls if self.tools is not None else [],
            usage=self.usage,
            cost=cost,
            generation_time=time.perf_counter() - self.started,
            code_execution_time=sum(e.duration for e in self.executions),
            status=status,
            error=None if error is None else str(error),
            model=self.config.model,
            format=fmt.name,
            max_code_executions=self.budget,
            total_code_executions=self.total,
            seed=self.seed,
        )
        if _std.isEnabledFor(logging.INFO):
            log.info(
                "solve.finish",
                status=status,
                turns=len(self.turns),
                executions=len(self.executions),
                tokens=self.usage.completion_tokens,
            )
        return result
