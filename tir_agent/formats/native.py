"""Native function calling: ``python_exec`` is a real tool (REFERENCE.md §6)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

from tir_agent._resources import data_dir
from tir_agent.formats.base import Feedback, ModelReply, ModelRequest, ToolCallData
from tir_agent.formats.output import format_result
from tir_agent.formats.tags import TagPreset
from tir_agent.turn import CodeCall, Turn

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator

TOOL_NAME = "python_exec"

ToolChoice = str | dict[str, Any]
"""``tool_choice`` as the chat API takes it: ``"auto"``, ``"required"``, ``"none"`` or a named
function ``{"type": "function", "function": {"name": ...}}``."""


def tool_choice_param(choice: str) -> ToolChoice:
    """The wire value of :attr:`AgentConfig.tool_choice <tir_agent.agent.AgentConfig>`: ``auto``
    and ``required`` as they are, a function name as the named-function object (the form
    llama.cpp needs before it returns tool calls at all)."""
    if choice in ("auto", "required", "none"):
        return choice
    return {"type": "function", "function": {"name": choice}}


@cache
def tool_definition() -> dict[str, Any]:
    """The ``python_exec`` function as the chat API expects it (schema from ``tools/``)."""
    spec = json.loads((data_dir("tools") / f"{TOOL_NAME}.json").read_text(encoding="utf-8"))
    return {"type": "function", "function": spec}


@cache
def _validator() -> Draft202012Validator:
    from jsonschema import Draft202012Validator  # ~40 ms to import: only when a call comes

    return Draft202012Validator(tool_definition()["function"]["parameters"])


_HOW = 'Call python_exec with a JSON object {"code": "<python source>"}.'


def parse_call(tool_call: ToolCallData, functions: bool = False) -> CodeCall:
    """A tool call as a :class:`CodeCall`; malformed ones carry the error the model is sent.
    With user tools (``functions``), a call of any other name is theirs (``tool`` set; checked
    and run by the agent's toolbox, which also answers unknown names)."""

    def refused(error: str) -> CodeCall:
        return CodeCall(code=None, id=tool_call.id, arguments=tool_call.arguments, error=error)

    if tool_call.name != TOOL_NAME and functions:
        return CodeCall(
            code=None, id=tool_call.id, arguments=tool_call.arguments, tool=tool_call.name
        )
    if tool_call.name != TOOL_NAME:
        return refused(f"Error: unknown tool {tool_call.name!r}; the only tool is {TOOL_NAME}.")
    try:
        # strict=False: raw control characters (a newline) inside strings are taken as they are;
        # llama.cpp's tool-call grammar lets the model write them.
        args = json.loads(tool_call.arguments, strict=False)
    except json.JSONDecodeError as e:
        what = e.msg.removesuffix(" at")  # "Unterminated string starting at" + " at position"
        return refused(
            f"Error: the arguments are not valid JSON ({what} at position {e.pos}). {_HOW}"
        )
    error = next(iter(_validator().iter_errors(args)), None)
    if error is not None:
        return refused(f"Error: invalid arguments: {error.message}. {_HOW}")
    return CodeCall(code=args["code"], id=tool_call.id, arguments=tool_call.arguments)


_CALL_START = re.compile(r'\{\s*"name"\s*:')
_WRAPPER = re.compile(r"\s*(?:<tool_call>|```(?:json)?)?\s*$")
_WRAPPER_END = re.compile(r"\s*(?:</tool_call>|```)?")


def text_tool_calls(text: str, index: int) -> tuple[str, list[ToolCallData]]:
    """Hermes-style tool calls written as text, as Qwen2.5 writes them: ``{"name": ...,
    "arguments": {...}}`` objects, each optionally inside ``<tool_call>`` tags or a code fence.

    For a reply that carries no structured tool calls: a server that applies the model's tool
    template but does not parse its calls (llama-cpp-python) returns them in ``content``, and a
    completion (:mod:`tir_agent.formats.completion_tools`) is text. Returns the text without the
    calls and the calls (ids ``call_<index>_<n>``).
    """
    calls: list[ToolCallData] = []
    kept: list[str] = []
    position = 0
    decoder = json.JSONDecoder(strict=False)
    for match in _CALL_START.finditer(text):
        if match.start() < position:
            continue
        try:
            value, end = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if not (
            isinstance(value, dict)
            and set(value) == {"name", "arguments"}
            and isinstance(value["name"], str)
            and isinstance(value["arguments"], dict | str)
        ):
            continue
        arguments = value["arguments"]
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False)
        calls.append(ToolCallData(f"call_{index}_{len(calls)}", value["name"], arguments))
        before = text[position : match.start()]
        wrapper = _WRAPPER.search(before)
        kept.append(before[: wrapper.start()] if wrapper else before)
        after = _WRAPPER_END.match(text, end)
        position = after.end() if after else end
    if not calls:
        return text, []
    kept.append(text[position:])
    return "\n".join(piece.strip() for piece in kept if piece.strip()), calls


def code_block(tags: TagPreset, code: str) -> str:
    """How a tool call's code reads in the generation: between the tags, on its own lines."""
    head = tags.code_begin if tags.code_begin.endswith("\n") else tags.code_begin + "\n"
    body = code if code.endswith("\n") else code + "\n"
    return head + body + tags.code_end


class ToolsFormat:
    """Chat completions with the ``python_exec`` tool; outputs go back as tool messages."""

    name: Literal["tools"] = "tools"

    def __init__(
        self,
        messages: list[dict[str, Any]],
        tags: TagPreset,
        params: dict[str, Any],
        tool_choice: str = "auto",
        functions: list[dict[str, Any]] | None = None,
        functions_open: Callable[[], bool] = lambda: True,
    ) -> None:
        self.tags = tags
        self._messages = messages
        self._params = params
        self._tool_choice = tool_choice_param(tool_choice)
        self._functions = functions or []
        """The user's tools (chat-completions definitions), offered beside ``python_exec``."""
        self._functions_open = functions_open
        """Whether the user's tools are still within their budget (``max_tool_calls``)."""
        self._offered = True
        """Whether the last request let the model call a tool (not the final round)."""

    def build_request(self, *, final: bool, max_tokens: int | None) -> ModelRequest:
        """Messages plus the tools and ``tool_choice``. ``python_exec`` is withdrawn once the code
        budget is spent (``final``), the user's tools once theirs is; with nothing left, every
        tool is sent with ``tool_choice="none"``."""
        code = [] if final else [tool_definition()]
        functions = self._functions if self._functions and self._functions_open() else []
        tools = code + functions
        self._offered = bool(tools)
        choice = self._tool_choice
        if not tools:
            tools, choice = [tool_definition(), *self._functions], "none"
        elif not code and choice != "required":
            choice = "auto"  # a named python_exec, withdrawn
        params = {**self._params, "messages": self._messages, "tools": tools}
        params["tool_choice"] = choice
        if max_tokens is not None:
            params["max_tokens"] = max_tokens
        return ModelRequest("chat", params)

    def parse(self, reply: ModelReply, index: int) -> Turn:
        """Tool calls become code calls (validated); the assistant message joins the history.
        A reply without structured calls may carry Hermes-style calls in its text
        (:func:`text_tool_calls`): they are taken as the calls they are, unless the request
        withheld the tool (``tool_choice="none"``: the text stays text)."""
        if not reply.tool_calls and self._offered and '"name"' in reply.text:
            reply.text, reply.tool_calls = text_tool_calls(reply.text, index)
        calls = tuple(parse_call(tc, bool(self._functions)) for tc in reply.tool_calls)
        # "" rather than None without text: OpenAI accepts both, llama-cpp-python only "".
        message: dict[str, Any] = {"role": "assistant", "content": reply.text}
        if reply.tool_calls:
            message["tool_calls"] = [
                {
                    "id": tc.id,
                    "type": "function",
                    "function": {"name": tc.name, "arguments": tc.arguments},
                }
                for tc in reply.tool_calls
            ]
        self._messages.append(message)
        return Turn(
            index=index,
            text=reply.text,
            calls=calls,
            finish_reason=reply.finish_reason,
            usage=reply.usage,
            latency=reply.latency,
            reasoning=reply.reasoning,
        )

    def feed(self, turn: Turn, feedback: list[Feedback]) -> str:
        """One tool message per call, in order; executed calls enter the generation as blocks."""
        transcript = []
        for item in feedback:
            body = item.result.stdout + item.result.stderr if item.result is not None else ""
            if item.output is not None:
                body = item.output
            self._messages.append(
                {"role": "tool", "tool_call_id": item.call.id, "content": body + item.hint}
            )
            if item.result is not None and item.call.code is not None:
                transcript.append(code_block(self.tags, item.call.code))
                transcript.append(format_result(self.tags, item.result, item.hint))
        text = "".join(transcript)
        if text and turn.text and not turn.text.endswith("\n"):
            text = "\n" + text
        return text

    def messages(self) -> list[dict[str, Any]]:
        """The conversation as sent."""
        return self._messages

    def prompt(self) -> str | None:
        """Not a completions format."""
        return None
