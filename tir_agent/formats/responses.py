"""The OpenAI Responses API (``/v1/responses``) with ``python_exec`` as a function tool.

Format ``tools`` over ``api="responses"``: the conversation is a list of input items. Function
tools are flat (``{"type": "function", "name", "description", "parameters", "strict"}``; any
chat-style definition is converted by :func:`responses_tools`), calls come back as
``function_call`` items and their results go back as ``function_call_output`` items with the
same ``call_id`` (REFERENCE.md §6). What the model is sent (outputs, hints, the run-out text, the
final round with ``tool_choice="none"``) and the generation are byte-identical to the chat tools
format, because :class:`ResponsesFormat` is an adapter of it: the chat format builds the request
(translated here), parses the calls and writes the outputs, one place for every tool it offers.

Reasoning carried across tool calls. Reasoning models return ``reasoning`` items; every output
item of a reply is appended to the input of the next request, so the model keeps its chain of
thought. By default ``store=false`` (nothing kept at OpenAI) and reasoning models get
``include=["reasoning.encrypted_content"]``, so the items carry their reasoning encrypted. With
``store=True`` the next request names ``previous_response_id`` and sends only the new items.

The leading system message of the prompt becomes ``instructions`` (sent with every request: they
do not carry over through ``previous_response_id``); later system messages become ``developer``
input for reasoning models.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, Callable, Mapping, Sequence
from typing import Any, Literal

from tir_agent.errors import ModelError
from tir_agent.formats.base import Feedback, ModelReply, ModelRequest, ToolCallData
from tir_agent.formats.native import ToolChoice, ToolsFormat
from tir_agent.formats.tags import TagPreset
from tir_agent.turn import FinishReason, Turn
from tir_agent.usage import usage_from

__all__ = [
    "ENCRYPTED_REASONING",
    "ResponsesFormat",
    "input_items",
    "reply_from_response",
    "responses_tool_choice",
    "responses_tools",
    "stream_response",
]

ENCRYPTED_REASONING = "reasoning.encrypted_content"


def responses_tools(tools: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Function tools in the Responses API's flat form; chat-style ``{"type": "function",
    "function": {...}}`` definitions are flattened, other tools pass unchanged."""
    flat: list[dict[str, Any]] = []
    for tool in tools:
        function = tool.get("function")
        if tool.get("type") == "function" and isinstance(function, Mapping):
            flat.append({"type": "function", **function})
        else:
            flat.append(dict(tool))
    return flat


def responses_tool_choice(choice: ToolChoice) -> ToolChoice:
    """``tool_choice`` in the Responses form: a named function is ``{"type": "function",
    "name": ...}`` (the chat API nests the name under ``function``)."""
    if isinstance(choice, Mapping) and isinstance(choice.get("function"), Mapping):
        return {"type": "function", "name": choice["function"]["name"]}
    return choice


def _content(content: Any, role: str) -> Any:
    """Chat content parts as Responses content parts (a string stays a string)."""
    if not isinstance(content, list):
        return content
    kind = "output_text" if role == "assistant" else "input_text"
    parts: list[Any] = []
    for part in content:
        if isinstance(part, Mapping) and part.get("type") == "text":
            parts.append({"type": kind, "text": part.get("text", "")})
        elif isinstance(part, Mapping) and part.get("type") == "image_url":
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, Mapping) else url
            parts.append({"type": "input_image", "image_url": url})
        else:
            parts.append(part)
    return parts


def input_items(
    messages: Sequence[Mapping[str, Any]], *, developer: bool
) -> tuple[str | None, list[dict[str, Any]]]:
    """A chat conversation as ``(instructions, input items)``: the leading system message is the
    instructions; assistant tool calls become ``function_call`` items and tool messages
    ``function_call_output`` items; other system messages are ``developer`` when ``developer``."""
    instructions: str | None = None
    items: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if i == 0 and role in ("system", "developer") and isinstance(content, str):
            instructions = content
        elif role == "tool":
            output = content if isinstance(content, str) else json.dumps(content)
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": message.get("tool_call_id"),
                    "output": output,
                }
            )
        elif role == "assistant" and message.get("tool_calls"):
            if content:
                items.append({"role": "assistant", "content": _content(content, "assistant")})
            for call in message["tool_calls"]:
                function = call.get("function", {})
                items.append(
                    {
                        "type": "function_call",
                        "call_id": call.get("id"),
                        "name": function.get("name"),
                        "arguments": function.get("arguments", ""),
                    }
                )
        else:
            if role == "system" and developer:
                role = "developer"
            items.append({"role": role, "content": _content(content, str(role))})
    return instructions, items


def _output_item(item: Any) -> dict[str, Any] | None:
    """An output item of a response as the input item that carries it into the next request."""
    kind = getattr(item, "type", None)
    if kind == "reasoning":
        carried: dict[str, Any] = {
            "type": "reasoning",
            "id": item.id,
            "summary": [{"type": "summary_text", "text": s.text} for s in item.summary or ()],
        }
        if getattr(item, "encrypted_content", None) is not None:
            carried["encrypted_content"] = item.encrypted_content
        return carried
    if kind == "function_call":
        call = {
            "type": "function_call",
            "call_id": item.call_id,
            "name": item.name,
            "arguments": item.arguments,
        }
        if getattr(item, "id", None):
            call["id"] = item.id
        return call
    if kind == "message":
        parts = [
            {"type": "output_text", "text": part.text, "annotations": []}
            for part in item.content or ()
            if getattr(part, "type", None) == "output_text"
        ]
        return {
            "type": "message",
            "role": "assistant",
            "id": item.id,
            "status": "completed",
            "content": parts,
        }
    return None  # built-in tool items (web search, ...) are not offered, so never returned


def reply_from_response(response: Any) -> ModelReply:
    """A :class:`ModelReply` from a Responses API ``Response`` (read by attribute)."""
    text: list[str] = []
    summaries: list[str] = []
    calls: list[ToolCallData] = []
    items: list[dict[str, Any]] = []
    for item in response.output or ():
        kind = getattr(item, "type", None)
        if kind == "message":
            text.extend(
                part.text
                for part in item.content or ()
                if getattr(part, "type", None) == "output_text"
            )
        elif kind == "reasoning":
            summaries.extend(s.text for s in item.summary or ())
            summaries.extend(c.text for c in getattr(item, "content", None) or ())
        elif kind == "function_call":
            calls.append(ToolCallData(item.call_id, item.name, item.arguments))
        carried = _output_item(item)
        if carried is not None:
            items.append(carried)
    finish: FinishReason | None
    details = getattr(response, "incomplete_details", None)
    reason = getattr(details, "reason", None)
    if response.status == "incomplete" and reason == "content_filter":
        finish = "content_filter"
    elif response.status == "incomplete":
        finish = "length"
    else:
        finish = "tool_calls" if calls else "stop"
    return ModelReply(
        text="".join(text),
        finish_reason=finish,
        usage=usage_from(response.usage),
        tool_calls=calls,
        reasoning="\n".join(summaries) or None,
        output_items=items,
        response_id=response.id,
    )


class ResponsesFormat:
    """Format ``tools`` over the Responses API, as an adapter of the chat tools format.

    The chat format (:class:`~tir_agent.formats.native.ToolsFormat`) stays the one place that
    decides the tools offered, parses calls and writes their outputs and hints: each request is
    its chat request translated (tools flattened by :func:`responses_tools`, ``max_tokens`` as
    ``max_output_tokens``), and each tool message it adds is sent as a ``function_call_output``
    item. So the Responses API gets every tool the chat format offers, and the bytes it sends.
    """

    name: Literal["tools"] = "tools"

    def __init__(
        self,
        messages: list[dict[str, Any]],
        tags: TagPreset,
        params: dict[str, Any],
        tool_choice: str = "auto",
        *,
        reasoning_model: bool = False,
        store: bool = False,
        functions: list[dict[str, Any]] | None = None,
        functions_open: Callable[[], bool] = lambda: True,
    ) -> None:
        self.tags = tags
        # the user's tools (chat-style definitions) ride along: offered, withdrawn and parsed
        # by the chat format, flattened for this API by responses_tools()
        self._chat = ToolsFormat(
            list(messages), tags, params, tool_choice, functions, functions_open
        )
        self._store = store
        self._encrypted = reasoning_model and not store
        self._instructions, self._input = input_items(messages, developer=reasoning_model)
        self._head = (
            []
            if self._instructions is None
            else [{"role": "system", "content": self._instructions}]
        )
        self._previous: str | None = None
        self._known = 0
        """Items of ``_input`` the server holds (``store=True``): up to the previous reply."""

    def build_request(self, *, final: bool, max_tokens: int | None) -> ModelRequest:
        """The chat format's request as a Responses request: input items (only the new ones after
        ``previous_response_id`` when storing), flat tools, ``tool_choice`` (``"none"`` once the
        budget is spent), ``max_output_tokens``, ``store`` and ``include``."""
        params = dict(self._chat.build_request(final=final, max_tokens=max_tokens).params)
        del params["messages"]
        params["tools"] = responses_tools(params.get("tools") or ())
        if "tool_choice" in params:
            params["tool_choice"] = responses_tool_choice(params["tool_choice"])
        if "max_tokens" in params:
            params["max_output_tokens"] = params.pop("max_tokens")
        params["store"] = self._store
        if self._instructions is not None:
            params["instructions"] = self._instructions
        if self._previous is not None:
            params["previous_response_id"] = self._previous
            params["input"] = self._input[self._known :]
        else:
            params["input"] = list(self._input)
        if self._encrypted:
            params["include"] = [ENCRYPTED_REASONING]
        return ModelRequest("responses", params)

    def parse(self, reply: ModelReply, index: int) -> Turn:
        """The chat format parses the calls; every output item of the reply joins the input."""
        turn = self._chat.parse(reply, index)
        self._input.extend(reply.output_items)
        if self._store and reply.response_id:
            self._previous = reply.response_id
            self._known = len(self._input)
        return turn

    def feed(self, turn: Turn, feedback: list[Feedback]) -> str:
        """The chat format writes the outputs; each tool message it adds goes up as a
        ``function_call_output`` item with its ``call_id``, in order."""
        chat = self._chat.messages()
        before = len(chat)
        text = self._chat.feed(turn, feedback)
        for message in chat[before:]:
            if message.get("role") == "tool":
                content = message.get("content")
                output = content if isinstance(content, str) else _content(content, "tool")
                self._input.append(
                    {
                        "type": "function_call_output",
                        "call_id": message.get("tool_call_id"),
                        "output": output,
                    }
                )
        return text

    def messages(self) -> list[dict[str, Any]]:
        """The instructions (as a leading system message) and every input item, as sent."""
        return self._head + self._input

    def prompt(self) -> str | None:
        """Not a completions format."""
        return None


async def stream_response(
    events: AsyncIterable[Any],
    on_text: Callable[[str], None] | None,
    on_tool_call: Callable[[], None] | None,
) -> ModelReply:
    """A :class:`ModelReply` from a stream of Responses events: text deltas and the start of each
    function call reported as they come, the reply read from the final response (its items
    complete, reasoning items with their ``encrypted_content``)."""
    final: Any = None
    async for event in events:
        kind = getattr(event, "type", None)
        if kind == "response.output_text.delta":
            if on_text is not None and event.delta:
                on_text(event.delta)
        elif kind == "response.output_item.added":
            if on_tool_call is not None and getattr(event.item, "type", None) == "function_call":
                on_tool_call()
        elif kind in ("response.completed", "response.incomplete"):
            final = event.response
        elif kind == "response.failed":
            error = getattr(event.response, "error", None)
            raise ModelError(
                f"the model endpoint failed the response: {getattr(error, 'message', None)}"
            )
        elif kind == "error":
            raise ModelError(f"the model endpoint reported an error mid-stream: {event.message}")
    if final is None:
        raise ModelError("the Responses stream ended before the response was complete")
    return reply_from_response(final)
