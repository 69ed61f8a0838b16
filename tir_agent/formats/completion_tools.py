"""Native tool calls over ``/v1/completions``: we render the model's own tool prompt.

For servers that apply a model's chat template to tool requests imperfectly (llama-cpp-python:
see :mod:`tir_agent.formats.hermes`), the conversation is rendered here with a chat template that
writes tools (``qwen``: Qwen2.5's Hermes-style prompt, or a Jinja template that reads ``tools``)
and sent as a completion. The calls the model writes (``<tool_call>{"name": ..., "arguments":
...}</tool_call>``, or the bare object) are parsed from the text; the conversation, the tool
messages and the generation are exactly those of :class:`~tir_agent.formats.native.ToolsFormat`,
which this format is: only the request differs.

The prompt is rendered from the messages every round; the rendered history is a prefix of the
next prompt, so a server that keeps the previous prompt's KV cache (llama.cpp) re-reads only
what is new. The final round, after the budget is spent, keeps the tools in the prompt (the
prefix stays the same) and takes calls written then as text, as ``tool_choice="none"`` does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tir_agent.chat_templates import ChatTemplate
from tir_agent.formats.base import ModelRequest
from tir_agent.formats.hermes import CALL_END, RESPONSE_BEGIN, check_tools
from tir_agent.formats.native import ToolsFormat, tool_definition
from tir_agent.formats.tags import TagPreset


class CompletionToolsFormat(ToolsFormat):
    """``python_exec`` (or any function definitions) as tools in a rendered completion prompt."""

    def __init__(
        self,
        messages: list[dict[str, Any]],
        tags: TagPreset,
        params: dict[str, Any],
        template: ChatTemplate,
        tools: Sequence[Mapping[str, Any]] | None = None,
        *,
        functions: list[dict[str, Any]] | None = None,
        functions_open: Callable[[], bool] = lambda: True,
    ) -> None:
        # ``functions``: the user's tools, offered beside python_exec and parsed as theirs (the
        # chat tools format decides, as over chat completions)
        super().__init__(messages, tags, params, "auto", functions, functions_open)
        self._template = template
        offered = [tool_definition(), *(functions or [])] if tools is None else list(tools)
        self._tools = check_tools(offered)
        # One call per round, as in the tag formats: the model sees each output before it goes
        # on (a small model otherwise writes the output, or the answer, itself).
        stops = (CALL_END, RESPONSE_BEGIN)
        self._stop = [*stops, *(s for s in template.stop if s not in stops)]

    def build_request(self, *, final: bool, max_tokens: int | None) -> ModelRequest:
        """The conversation rendered with the tools, ``</tool_call>`` and the end of turn as
        stop strings."""
        # a call is taken while python_exec or the user's tools are within their budgets (the
        # prompt keeps every tool: its prefix stays the same for the server's cache)
        self._offered = not final or bool(self._functions and self._functions_open())
        params = {**self._params, "prompt": self._render(), "stop": self._stop}
        if max_tokens is not None:
            params["max_tokens"] = max_tokens
        return ModelRequest("completions", params)

    def _render(self, *, open_turn: bool = True) -> str:
        return self._template.render(
            self._messages, tools=self._tools, add_generation_prompt=open_turn
        )

    def prompt(self) -> str | None:
        """The conversation so far as the model read it (no open assistant turn)."""
        return self._render(open_turn=False)
