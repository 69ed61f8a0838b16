"""Code between tags in chat messages (the seed document's flow for chat models).

Message shape: the assistant message holds the model's text up to and including the code block;
the execution output (output tags, body and hint, byte-exact as in the text format) follows as a
user message; the model answers with the next assistant message. Joining the assistant texts and
the outputs gives exactly the text-format transcript. When a stop string fires that closes no code
block (a ``` fence with the ``qwen`` tags), the text so far is sent back as a trailing assistant
message for the model to continue (a prefill where the server supports it) and the continuation is
joined into the same assistant message.
"""

from __future__ import annotations

from typing import Any, Literal

from tir_agent.formats.base import Feedback, ModelReply, ModelRequest
from tir_agent.formats.tagged import outputs_text, parse_tagged
from tir_agent.formats.tags import TagPreset
from tir_agent.turn import Turn


class ChatTagsFormat:
    """Chat completions; the model writes code between tags, outputs come back as user messages."""

    name: Literal["chat-tags"] = "chat-tags"

    def __init__(
        self, messages: list[dict[str, Any]], tags: TagPreset, params: dict[str, Any]
    ) -> None:
        self.tags = tags
        self._messages = messages
        self._params = params
        self._pending = ""

    def build_request(self, *, final: bool, max_tokens: int | None) -> ModelRequest:
        """Messages with ``code_end`` as the stop string (also in the final round)."""
        messages = self._messages
        if self._pending:
            messages = [*messages, {"role": "assistant", "content": self._pending}]
        params = {**self._params, "messages": messages, "stop": [self.tags.code_end]}
        if max_tokens is not None:
            params["max_tokens"] = max_tokens
        return ModelRequest("chat", params)

    def parse(self, reply: ModelReply, index: int) -> Turn:
        """The first complete block is the code; the assistant message is recorded."""
        parsed, turn = parse_tagged(reply, self.tags, index)
        if parsed.continues:
            self._pending += parsed.text
        else:
            self._messages.append({"role": "assistant", "content": self._pending + parsed.text})
            self._pending = ""
        return turn

    def feed(self, turn: Turn, feedback: list[Feedback]) -> str:
        """The output of the block as a user message; it is also the generation's next text."""
        text = outputs_text(self.tags, feedback)
        if text:
            self._messages.append({"role": "user", "content": text})
        return text

    def feed_text(self, text: str) -> None:
        """Other text for the model (a tool's answer) as a user message."""
        self._messages.append({"role": "user", "content": text})

    def messages(self) -> list[dict[str, Any]]:
        """The conversation as sent."""
        if self._pending:
            return [*self._messages, {"role": "assistant", "content": self._pending}]
        return self._messages

    def prompt(self) -> str | None:
        """Not a completions format."""
        return None
