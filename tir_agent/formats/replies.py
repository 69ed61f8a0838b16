"""Replies of the chat and completions endpoints read from their JSON bodies, as a
:class:`~tir_agent.formats.base.ModelReply`.

The client (:mod:`tir_agent.client`) sends non-streamed chat and completions requests through the
SDK's plain ``post`` and reads the reply's JSON here, rather than through
``chat.completions.create``: that method walks every request's messages and tools against the
SDK's typed-dict annotations (an identity for the plain JSON values we send) and builds a pydantic
model tree of every reply. Measured here (docs/batch.md, "What is left"), the two calls of a
one-execution sample cost 8.4-9.9 ms of client CPU through ``create`` (8.3-9.8 through
``with_raw_response.create``, as the client called it) and 4.3-5.3 ms through ``post``. The fields are read exactly as they were from the SDK's models (extra fields such as
vLLM's ``stop_reason`` included), so a reply gives the same :class:`ModelReply` either way, and the
request body is the one ``create`` sends (``tests/agent/test_replies.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from tir_agent.errors import ModelError
from tir_agent.formats.base import ModelReply, ToolCallData
from tir_agent.turn import Usage

__all__ = ["chat_reply", "completion_reply", "finish_reason", "matched_stop", "usage_of"]

_FINISH = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})


def finish_reason(value: Any) -> Any:
    """The finish reason if it is a standard one (servers invent others, e.g. ``eos``)."""
    if value in _FINISH:
        return value
    return None if value is None else "stop"


def matched_stop(choice: Mapping[str, Any]) -> str | int | None:
    """vLLM's ``stop_reason`` or SGLang's ``matched_stop``, when the server reports one."""
    value = choice.get("stop_reason", choice.get("matched_stop"))
    return value if isinstance(value, str | int) else None


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


def _field(value: Any, name: str) -> Any:
    return value.get(name, 0) if isinstance(value, Mapping) else 0


def usage_of(usage: Any) -> Usage:
    """A :class:`Usage` from a reply's ``usage`` object (as :func:`tir_agent.usage.usage_from`
    reads the SDK's: absent is zeros, the Responses names win when present)."""
    if not isinstance(usage, Mapping):
        return Usage()
    if usage.get("input_tokens") is not None:
        return Usage(
            input_tokens=_int(usage["input_tokens"]),
            output_tokens=_int(usage.get("output_tokens", 0)),
            cached_tokens=_int(_field(usage.get("input_tokens_details"), "cached_tokens")),
            reasoning_tokens=_int(_field(usage.get("output_tokens_details"), "reasoning_tokens")),
        )
    return Usage(
        input_tokens=_int(usage.get("prompt_tokens", 0)),
        output_tokens=_int(usage.get("completion_tokens", 0)),
        cached_tokens=_int(_field(usage.get("prompt_tokens_details"), "cached_tokens")),
        reasoning_tokens=_int(_field(usage.get("completion_tokens_details"), "reasoning_tokens")),
    )


def _first_choice(data: Any, what: str) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    choices = data.get("choices") if isinstance(data, Mapping) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        raise ModelError(
            f"the model endpoint's reply is not a {what} (no choices): {str(data)[:200]!r}; check "
            "that base_url points at an OpenAI-compatible /v1 endpoint"
        )
    return data, choices[0]


def _tool_call(call: Mapping[str, Any], function: Mapping[str, Any]) -> ToolCallData:
    # A field the server left out is None, as the SDK's models had it (parse_call refuses it).
    return ToolCallData(
        cast(str, call.get("id")),
        cast(str, function.get("name")),
        cast(str, function.get("arguments")),
    )


def chat_reply(data: Any) -> ModelReply:
    """The reply of ``/chat/completions`` (its parsed JSON body)."""
    data, choice = _first_choice(data, "chat completion")
    message = choice.get("message")
    if not isinstance(message, Mapping):
        raise ModelError(
            f"the model endpoint's chat completion has no message: {str(data)[:200]!r}"
        )
    calls = [
        _tool_call(tc, function)
        for tc in message.get("tool_calls") or ()
        if isinstance(tc, Mapping)
        # typed calls of other kinds ("custom") are not ours; a call without its "type" (some
        # servers leave it out) is a function call, as the streamed deltas read it
        and tc.get("type") in ("function", None)
        and isinstance(function := tc.get("function"), Mapping)
    ]
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    return ModelReply(
        text=message.get("content") or "",
        finish_reason=finish_reason(choice.get("finish_reason")),
        usage=usage_of(data.get("usage")),
        tool_calls=calls,
        matched_stop=matched_stop(choice),
        reasoning=reasoning if isinstance(reasoning, str) else None,
    )


def completion_reply(data: Any) -> ModelReply:
    """The reply of ``/completions`` (its parsed JSON body)."""
    data, choice = _first_choice(data, "completion")
    return ModelReply(
        text=choice.get("text") or "",
        finish_reason=finish_reason(choice.get("finish_reason")),
        usage=usage_of(data.get("usage")),
        tool_calls=[],
        matched_stop=matched_stop(choice),
        reasoning=None,
    )
