"""Hermes-style tool calling as Qwen2.5 was trained on it, rendered by us.

Qwen2.5's chat template (``tokenizer_config.json``, and the ``tokenizer.chat_template`` of its
GGUFs) writes the request's function definitions into the system message, one JSON object per
line inside a ``<tools>`` block, followed by the instruction to answer with
``<tool_call>\\n{"name": <function-name>, "arguments": <args-json-object>}\\n</tool_call>``. A
call the assistant made is rendered the same way, and each tool result becomes
``<tool_response>\\n...\\n</tool_response>`` inside a user turn (consecutive results share one
turn).

This module holds those pieces for any list of chat-style function definitions
(``{"type": "function", "function": {"name": ..., "description": ..., "parameters": ...}}``), not
only ``python_exec``: :class:`~tir_agent.chat_templates.ChatMLTemplate` (``qwen``) renders them,
and :mod:`tir_agent.formats.completion_tools` sends the rendered prompt to a completions
endpoint. :func:`tir_agent.formats.native.text_tool_calls` parses the calls a model writes.

Why render it ourselves: llama-cpp-python (0.3.36) applies the GGUF's template to a chat request
but passes each call's ``arguments`` as the OpenAI wire format has it, a JSON *string*, which the
template's ``tojson`` quotes again (``"arguments": "{\\"code\\": ...}"``); the 1.5B GGUF's template
also doubles the braces of the call form (``{{"name": ...}}``). The model then sees its own calls
in a form it was not trained on. Hugging Face ``transformers`` expects ``arguments`` as an object;
:func:`normalize_tool_calls` gives templates that.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from tir_agent.errors import ConfigError

TOOLS_HEADER = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
"""What Qwen2.5's template appends to the system message before the function definitions."""
TOOLS_FOOTER = (
    "\n</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)
"""What follows the definitions (the system message's end marker is the template's)."""
CALL_BEGIN = "<tool_call>"
CALL_END = "</tool_call>"
RESPONSE_BEGIN = "<tool_response>"
RESPONSE_END = "</tool_response>"


def check_tools(tools: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``tools`` as a list of plain dicts, each checked to be a chat-style function definition
    (the error names the bad entry and shows the expected shape)."""
    checked: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if (
            not isinstance(tool, Mapping)
            or tool.get("type") != "function"
            or not isinstance(function, Mapping)
            or not isinstance(function.get("name"), str)
            or not function["name"]
        ):
            raise ConfigError(
                f"tool {i} is not a function definition: {tool!r:.120}; expected "
                '{"type": "function", "function": {"name": ..., "description": ..., '
                '"parameters": {...}}}'
            )
        checked.append(dict(tool))
    return checked


def tools_block(tools: Sequence[Mapping[str, Any]]) -> str:
    """The text Qwen2.5's template appends to the system message for ``tools`` (each
    definition as ``json.dumps`` writes it, non-ASCII kept, as the template's ``tojson``)."""
    lines = "".join("\n" + json.dumps(tool, ensure_ascii=False) for tool in check_tools(tools))
    return TOOLS_HEADER + lines + TOOLS_FOOTER


def call_arguments(arguments: Any) -> Any:
    """A call's ``arguments`` as an object: the OpenAI wire format's JSON string is parsed;
    a string that is not valid JSON stays the string the model wrote."""
    if isinstance(arguments, str):
        with contextlib.suppress(ValueError):
            return json.loads(arguments, strict=False)
    return arguments


def tool_call_text(call: Mapping[str, Any]) -> str:
    """One call as Qwen2.5's template writes it: ``<tool_call>\\n{"name": ..., "arguments":
    ...}\\n</tool_call>`` (``call`` in the chat API's shape, or its ``function`` part)."""
    function = call.get("function", call)
    name = function.get("name", "")
    arguments = json.dumps(call_arguments(function.get("arguments", {})), ensure_ascii=False)
    # The template writes the name between quotes as it is (no JSON escaping).
    return f'{CALL_BEGIN}\n{{"name": "{name}", "arguments": {arguments}}}\n{CALL_END}'


def normalize_tool_calls(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Copies of ``messages`` whose assistant ``tool_calls`` carry ``arguments`` as objects,
    the form chat templates (and ``transformers``) expect, instead of the wire's JSON strings."""
    normalized: list[dict[str, Any]] = []
    for message in messages:
        copy = dict(message)
        calls = message.get("tool_calls")
        if calls:
            copy["tool_calls"] = [_normalize_call(call) for call in calls]
        normalized.append(copy)
    return normalized


def _normalize_call(call: Mapping[str, Any]) -> dict[str, Any]:
    copy = dict(call)
    function = call.get("function")
    if isinstance(function, Mapping):
        copy["function"] = {**function, "arguments": call_arguments(function.get("arguments"))}
    elif "arguments" in call:
        copy["arguments"] = call_arguments(call["arguments"])
    return copy
