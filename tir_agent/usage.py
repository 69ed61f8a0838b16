"""Token usage from every API, and counting it when a streaming server reports none.

Chat and completions report ``prompt_tokens`` / ``completion_tokens`` with
``prompt_tokens_details.cached_tokens`` and ``completion_tokens_details.reasoning_tokens``; the
Responses API reports ``input_tokens`` / ``output_tokens`` with ``input_tokens_details`` and
``output_tokens_details``. :func:`usage_from` reads either shape from the SDK's objects (by
attribute, so this module does not import ``openai``).

Some servers stream no usage even when ``stream_options={"include_usage": true}`` is sent
(llama-cpp-python, the embedded model's server). :class:`TokenCounter` then counts the streamed
text with the server's own tokenizer endpoint (llama.cpp's ``POST /tokenize``, llama-cpp-python's
``POST /extras/tokenize``); when there is none, it estimates (4 characters a token). Either way the
usage is marked ``estimated``: the prompt as the server rendered it through its chat template is
not known here, so only its text is counted.
"""

from __future__ import annotations

import json
from typing import Any

import httpx2

from tir_agent._log import get_logger
from tir_agent.turn import Usage

__all__ = ["TokenCounter", "estimate_tokens", "usage_from"]

log = get_logger(__name__)


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


def usage_from(usage: Any) -> Usage:
    """A :class:`Usage` from any API's usage object (``None``: zeros, not estimated)."""
    if usage is None:
        return Usage()
    if getattr(usage, "input_tokens", None) is not None:  # the Responses API
        inputs = getattr(usage, "input_tokens_details", None)
        outputs = getattr(usage, "output_tokens_details", None)
        return Usage(
            input_tokens=_int(usage.input_tokens),
            output_tokens=_int(getattr(usage, "output_tokens", 0)),
            cached_tokens=_int(getattr(inputs, "cached_tokens", 0)),
            reasoning_tokens=_int(getattr(outputs, "reasoning_tokens", 0)),
        )
    prompt = getattr(usage, "prompt_tokens_details", None)
    completion = getattr(usage, "completion_tokens_details", None)
    return Usage(
        input_tokens=_int(getattr(usage, "prompt_tokens", 0)),
        output_tokens=_int(getattr(usage, "completion_tokens", 0)),
        cached_tokens=_int(getattr(prompt, "cached_tokens", 0)),
        reasoning_tokens=_int(getattr(completion, "reasoning_tokens", 0)),
    )


def estimate_tokens(text: str) -> int:
    """A rough token count: 4 characters a token (OpenAI's rule of thumb for English)."""
    return (len(text) + 3) // 4


def request_text(params: dict[str, Any]) -> str:
    """The text a request sends (prompt, message contents, Responses input), for counting."""
    if isinstance(params.get("prompt"), str):
        return str(params["prompt"])
    parts: list[str] = []
    if isinstance(params.get("instructions"), str):
        parts.append(params["instructions"])
    for entry in params.get("messages") or params.get("input") or ():
        if not isinstance(entry, dict):
            continue
        content = entry.get("content", entry.get("output", entry.get("arguments")))
        if isinstance(content, str):
            parts.append(content)
        elif content is not None:
            parts.append(json.dumps(content, ensure_ascii=False))
        for call in entry.get("tool_calls") or ():
            parts.append(json.dumps(call, ensure_ascii=False))
    if params.get("tools"):
        parts.append(json.dumps(params["tools"], ensure_ascii=False))
    return "\n".join(parts)


class TokenCounter:
    """Counts tokens with an OpenAI-compatible server's tokenizer endpoint, if it has one.

    The endpoint found to work is remembered; when none does (a 404, or a connection error), the
    count is an estimate (:func:`estimate_tokens`) from then on.
    """

    _PATHS = (("/tokenize", "content"), ("/extras/tokenize", "input"))
    """llama.cpp's ``llama-server`` (at the server root) and llama-cpp-python (under ``/v1``'s
    parent too): ``(path, field of the text)``."""

    def __init__(self, base_url: str, model: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self._found: tuple[str, str] | None = None
        self._missing = False

    def _candidates(self) -> list[tuple[str, str]]:
        root = self.base_url.removesuffix("/v1")
        return [(root + path, field) for path, field in self._PATHS]

    async def count(self, http: httpx2.AsyncClient, text: str) -> int | None:
        """Tokens of ``text`` as the server's tokenizer counts them; ``None`` if it has no
        tokenizer endpoint."""
        if not text:
            return 0
        if self._missing:
            return None
        for url, field in [self._found] if self._found else self._candidates():
            try:
                response = await http.post(
                    url, json={field: text, "model": self.model}, timeout=30.0
                )
            except httpx2.HTTPError:
                continue
            if response.status_code != 200:
                continue
            try:
                tokens = response.json().get("tokens")
            except (ValueError, AttributeError):
                continue
            if isinstance(tokens, list):
                self._found = (url, field)
                return len(tokens)
        if self._found is None:
            self._missing = True
            log.warning(
                "usage.estimated",
                base_url=self.base_url,
                reason="the server streams no usage and has no tokenizer endpoint; token counts "
                "are estimated (4 characters a token)",
            )
        return None

    async def usage(
        self, http: httpx2.AsyncClient, params: dict[str, Any], generated: str
    ) -> Usage:
        """The usage of one streamed call whose server reported none (marked ``estimated``)."""
        prompt = request_text(params)
        input_tokens = await self.count(http, prompt)
        output_tokens = await self.count(http, generated) if input_tokens is not None else None
        return Usage(
            input_tokens=estimate_tokens(prompt) if input_tokens is None else input_tokens,
            output_tokens=estimate_tokens(generated) if output_tokens is None else output_tokens,
            estimated=True,
        )
