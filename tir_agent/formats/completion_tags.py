"""Code between tags in a completion prompt (local models): one string, grown in place."""

from __future__ import annotations

from typing import Any, Literal

from tir_agent.formats.base import Feedback, ModelReply, ModelRequest
from tir_agent.formats.tagged import outputs_text, parse_tagged
from tir_agent.formats.tags import TagPreset
from tir_agent.turn import Turn


class CompletionTagsFormat:
    """``/v1/completions``: the rendered chat template plus the generation so far is the prompt."""

    name: Literal["completions"] = "completions"

    def __init__(
        self,
        prompt: str,
        messages: list[dict[str, Any]],
        tags: TagPreset,
        params: dict[str, Any],
        end_of_turn: tuple[str, ...] = (),
    ) -> None:
        self.tags = tags
        self._head = prompt
        self._messages = messages
        self._params = params
        self._generation = ""
        self._stop = [tags.code_end, *(s for s in end_of_turn if s != tags.code_end)]

    def build_request(self, *, final: bool, max_tokens: int | None) -> ModelRequest:
        """The prompt so far, with ``code_end`` (and the template's end-of-turn markers) as stop."""
        params = {**self._params, "prompt": self._head + self._generation, "stop": self._stop}
        if max_tokens is not None:
            params["max_tokens"] = max_tokens
        return ModelRequest("completions", params)

    def parse(self, reply: ModelReply, index: int) -> Turn:
        """The first complete block is the code; the kept text grows the prompt."""
        parsed, turn = parse_tagged(reply, self.tags, index)
        self._generation += parsed.text
        return turn

    def feed(self, turn: Turn, feedback: list[Feedback]) -> str:
        """The output text is appended to the prompt, exactly as it enters the generation."""
        text = outputs_text(self.tags, feedback)
        self._generation += text
        return text

    def feed_text(self, text: str) -> None:
        """Other text for the model (a tool's answer), appended to the prompt."""
        self._generation += text

    def messages(self) -> list[dict[str, Any]]:
        """The messages the prompt was rendered from, with the generation as the assistant's."""
        return [*self._messages, {"role": "assistant", "content": self._generation}]

    def prompt(self) -> str | None:
        """The whole prompt string: rendered template plus generation."""
        return self._head + self._generation
