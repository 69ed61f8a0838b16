"""The user's tools in the tag formats, offered the way Qwen2.5 (and other Hermes-style models)
were trained: a ``<tools>`` block in the system message, calls written as
``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, answers as
``<tool_response>...</tool_response>``.

:class:`HermesTools` wraps a tag format (chat or completions) and changes only the three places a
format owns: the request also stops at ``</tool_call>``; a reply whose first complete block is a
Hermes call of one of the tools becomes that call (with the ``openmath`` preset, whose code tag is
``<tool_call>`` too, the block's content decides: a JSON call of a tool, or code); a tool's answer
is fed back as ``<tool_response>\\n{output}\\n</tool_response>\\n`` where an execution output would
go (a user message in chat, the prompt's text in completions).
"""

from __future__ import annotations

import json
import re
from typing import Any, Protocol

from tir_agent.formats.base import Feedback, FormatName, ModelReply, ModelRequest
from tir_agent.formats.tags import TagPreset
from tir_agent.turn import CodeCall, Turn

CALL_BEGIN = "<tool_call>"
CALL_END = "</tool_call>"


def tools_block(definitions: list[dict[str, Any]]) -> str:
    """The tools section Qwen2.5's chat template appends to the system message, byte for byte."""
    tools = "".join("\n" + json.dumps(d, ensure_ascii=False) for d in definitions)
    return (
        "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
        + tools
        + "\n</tools>\n\nFor each function call, return a json object with function name and "
        "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
        '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
    )


def offer_tools(
    messages: list[dict[str, Any]],
    definitions: list[dict[str, Any]],
    default_system: str | None = None,
) -> list[dict[str, Any]]:
    """``messages`` with the tools section at the end of the system message. Without one, a
    system message is added: ``default_system`` (the chat template's own default, as Qwen's
    template puts it there) and the section, or the section alone."""
    block = tools_block(definitions)
    if messages and messages[0].get("role") == "system":
        first = {**messages[0], "content": str(messages[0].get("content") or "") + block}
        return [first, *messages[1:]]
    content = default_system + block if default_system else block.lstrip("\n")
    return [{"role": "system", "content": content}, *messages]


def response_text(output: str) -> str:
    """A tool's answer as Qwen's template writes it (a tool message's body in the user turn)."""
    return f"<tool_response>\n{output}\n</tool_response>"


CHATML_TURN = ("<|im_end|>\n<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n")
"""How a ChatML prompt closes the assistant's turn for the tool answers and opens the next."""


def find_call(text: str, names: set[str]) -> tuple[int, int, str, str] | None:
    """The first complete ``<tool_call>{"name": ..., "arguments": ...}</tool_call>`` naming a tool
    in ``names``: ``(start, end of the block, name, arguments as a JSON string)``."""
    at = 0
    while (start := text.find(CALL_BEGIN, at)) >= 0:
        close = text.find(CALL_END, start)
        if close < 0:
            return None
        body = text[start + len(CALL_BEGIN) : close].strip()
        at = close + len(CALL_END)
        try:
            value = json.loads(body, strict=False)
        except json.JSONDecodeError:
            continue
        if (
            isinstance(value, dict)
            and value.get("name") in names
            and isinstance(value.get("arguments", {}), dict | str)
        ):
            arguments = value.get("arguments", {})
            if not isinstance(arguments, str):
                arguments = json.dumps(arguments, ensure_ascii=False)
            return start, at, value["name"], arguments
    return None


_BARE = re.compile(r'\{\s*"name"\s*:')


def bare_call(text: str, names: set[str]) -> tuple[int, int, str, str] | None:
    """A call written without its tags at the very end of a reply: llama-cpp-python drops Qwen's
    ``<tool_call>`` tokens from the text it returns. ``(start, end, name, arguments)``."""
    stripped = text.rstrip()
    for match in reversed(list(_BARE.finditer(stripped))):
        try:
            value, end = json.JSONDecoder(strict=False).raw_decode(stripped, match.start())
        except json.JSONDecodeError:
            continue
        if end != len(stripped):
            return None
        if (
            isinstance(value, dict)
            and set(value) == {"name", "arguments"}
            and value["name"] in names
            and isinstance(value["arguments"], dict | str)
        ):
            arguments = value["arguments"]
            if not isinstance(arguments, str):
                arguments = json.dumps(arguments, ensure_ascii=False)
            return match.start(), len(text), value["name"], arguments
        return None
    return None


class TagFormat(Protocol):
    """What :class:`HermesTools` needs of the tag format it wraps."""

    tags: TagPreset

    @property
    def name(self) -> FormatName: ...

    def build_request(self, *, final: bool, max_tokens: int | None) -> ModelRequest: ...

    def parse(self, reply: ModelReply, index: int) -> Turn: ...

    def feed(self, turn: Turn, feedback: list[Feedback]) -> str: ...

    def feed_text(self, text: str) -> None: ...

    def messages(self) -> list[dict[str, Any]]: ...

    def prompt(self) -> str | None: ...


class HermesTools:
    """A tag format whose model may also call the user's tools, Hermes style."""

    def __init__(
        self, inner: TagFormat, names: set[str], turn: tuple[str, str] | None = None
    ) -> None:
        self.inner = inner
        self.tags = inner.tags
        self._names = names
        self._turn = turn
        """Completions: the template's text around a user turn holding the answers (ChatML's:
        :data:`CHATML_TURN`); ``None``: the answers go inline."""
        """The tools' names: a Hermes call of another name is the wrapped format's text (with
        ``openmath`` tags, its code)."""

    @property
    def name(self) -> FormatName:
        """The wrapped format's name."""
        return self.inner.name

    def build_request(self, *, final: bool, max_tokens: int | None) -> ModelRequest:
        """The wrapped request, stopping at ``</tool_call>`` too (a call ends the reply)."""
        request = self.inner.build_request(final=final, max_tokens=max_tokens)
        stop = list(request.params.get("stop") or [])
        if CALL_END not in stop:
            request.params["stop"] = [*stop, CALL_END]
        return request

    def parse(self, reply: ModelReply, index: int) -> Turn:
        """A Hermes call of a tool that completes before any code block is that call; anything
        else is parsed by the wrapped format."""
        text = reply.text
        if (
            reply.stop_sent
            and reply.finish_reason == "stop"
            and text.count(CALL_BEGIN) > text.count(CALL_END)
            and reply.matched_stop in (None, CALL_END)
        ):
            candidate = text + CALL_END  # the server swallowed our </tool_call> stop
            if find_call(candidate, self._names) is not None:
                text = candidate
        call = find_call(text, self._names)
        bare = bare_call(text, self._names) if call is None else None
        if bare is not None and not self._code_first(text, bare[0]):
            # The server dropped the <tool_call> tokens the model wrote: put them back, as a
            # swallowed stop string is restored.
            start, _, name, arguments = bare
            body = text[start:].rstrip()
            text = text[:start] + CALL_BEGIN + "\n" + body + "\n" + CALL_END
            call = find_call(text, self._names)
        if call is not None and not self._code_first(text, call[0]):
            _, end, name, arguments = call
            reply.text = text[:end]
            if self.tags.code_end != CALL_END or not text[:end].rstrip().endswith(CALL_END):
                reply.stop_sent = False  # the stop that fired was ours: nothing to restore
            turn = self.inner.parse(reply, index)
            return turn.model_copy(
                update={
                    "calls": (
                        CodeCall(code=None, id=f"call_{index}_0", arguments=arguments, tool=name),
                    ),
                    "continues": False,
                }
            )
        return self.inner.parse(reply, index)

    def _code_first(self, text: str, call_start: int) -> bool:
        """Whether a complete code block (of other tags than ``<tool_call>``) ends before the
        call starts (an endpoint that ignored the stop strings wrote both)."""
        begin, end = self.tags.code_begin, self.tags.code_end
        if begin == CALL_BEGIN:
            return False
        opened = text.find(begin)
        closed = text.find(end, opened + len(begin)) if opened >= 0 else -1
        return 0 <= closed < call_start

    def feed(self, turn: Turn, feedback: list[Feedback]) -> str:
        """A tool's answer as a ``<tool_response>``; code outputs as the wrapped format has them."""
        if any(f.output is not None for f in feedback):
            body = "\n".join(response_text(f.output) for f in feedback if f.output is not None)
            if self.inner.name == "chat-tags":
                self.inner.feed_text(body)  # the user message Qwen's template makes of it
            elif self._turn is not None:
                self.inner.feed_text(self._turn[0] + body + self._turn[1])
            else:
                self.inner.feed_text(body + "\n")
            return body + "\n"
        return self.inner.feed(turn, feedback)

    def messages(self) -> list[dict[str, Any]]:
        """The wrapped format's conversation."""
        return self.inner.messages()

    def prompt(self) -> str | None:
        """The wrapped format's prompt (completions)."""
        return self.inner.prompt()
