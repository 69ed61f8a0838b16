"""The user's tool calls of one solve: the ``max_tool_calls`` budget, concurrent execution
beside the code, and the :class:`~tir_agent.turn.ToolCall` records and events."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from tir_agent._log import get_logger
from tir_agent.formats.base import Feedback
from tir_agent.tools.base import Tool, ToolOutcome
from tir_agent.tools.toolbox import ToolIndex
from tir_agent.turn import CodeCall, Event, ToolCall, ToolCallDone, Turn

log = get_logger(__name__)
_std = logging.getLogger(__name__)


def tool_run_out_hint(names: list[str]) -> str:
    """Told with the last allowed tool call, and as the answer to calls beyond the budget."""
    return (
        f"```system\nYou have run out of tool calls! You can no longer call {', '.join(names)}. "
        "Continue solving the problem without them.\n```\n"
    )


class ToolCalls:
    """Runs and records the user's tool calls of one solve within ``budget``."""

    def __init__(
        self, index: ToolIndex, budget: int | None, emit: Callable[[Event], None] | None
    ) -> None:
        self.index = index
        self.budget = budget
        self.emit = emit
        self.used = 0
        """Calls that reached a tool (invalid ones are answered without spending the budget)."""
        self.calls: list[ToolCall] = []
        self._run_out = tool_run_out_hint(list(index.tools))

    def open(self) -> bool:
        """Whether a tool may still be called."""
        return self.budget is None or self.used < self.budget

    async def run(
        self,
        turn: Turn,
        feedback: list[Feedback | None],
        code: Coroutine[Any, Any, None],
    ) -> None:
        """Run ``turn``'s tool calls concurrently with ``code`` (its code calls, in order), filling
        ``feedback`` in call order. Calls are checked and admitted to the budget in call order
        before any runs; a failing sandbox cancels the rest."""
        records: list[ToolCall | None] = [None] * len(turn.calls)
        jobs: list[Coroutine[Any, Any, None]] = []
        for i, call in enumerate(turn.calls):
            if call.tool is None:
                continue
            checked = self.index.check(call.tool, call.arguments or "")
            if isinstance(checked, ToolOutcome):
                self._settle(i, call, turn, checked, 0.0, feedback, records)
            elif not self.open():
                refused = ToolOutcome(self._run_out, True, checked[1])
                self._settle(i, call, turn, refused, 0.0, feedback, records)
            else:
                self.used += 1
                last = self.budget is not None and self.used == self.budget
                jobs.append(self._call(i, call, turn, *checked, last, feedback, records))
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(code)
                for job in jobs:
                    group.create_task(job)
        except BaseExceptionGroup as e:  # the sandbox failed: raise what it raised
            raise e.exceptions[0] from None
        self.calls += [r for r in records if r is not None]

    async def _call(
        self,
        i: int,
        call: CodeCall,
        turn: Turn,
        tool: Tool,
        arguments: dict[str, Any],
        last: bool,
        feedback: list[Feedback | None],
        records: list[ToolCall | None],
    ) -> None:
        started = time.perf_counter()
        outcome = await self.index.run(tool, arguments)
        if last:  # the tools are withdrawn next: the model must learn why
            sep = "\n" if outcome.output and not outcome.output.endswith("\n") else ""
            text = outcome.output + sep + self._run_out
            outcome = ToolOutcome(text, outcome.failed, arguments)
        self._settle(i, call, turn, outcome, time.perf_counter() - started, feedback, records)

    def _settle(
        self,
        i: int,
        call: CodeCall,
        turn: Turn,
        outcome: ToolOutcome,
        duration: float,
        feedback: list[Feedback | None],
        records: list[ToolCall | None],
    ) -> None:
        record = ToolCall(
            name=call.tool or "",
            arguments=outcome.arguments or {},
            output=outcome.output,
            failed=outcome.failed,
            raw_arguments=call.arguments or "",
            duration=duration,
            turn=turn.index,
            call_id=call.id,
        )
        records[i] = record
        feedback[i] = Feedback(call, None, output=outcome.output)
        if _std.isEnabledFor(logging.INFO):
            log.info(
                "tool.call",
                turn=turn.index,
                tool=record.name,
                failed=record.failed,
                duration=round(duration, 4),
            )
        if self.emit is not None:
            self.emit(ToolCallDone(tool_call=record))
