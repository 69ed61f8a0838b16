"""A scripted OpenAI-compatible endpoint speaking the real wire format (an httpx2 transport).

The script is written once, independent of the format: each :class:`Step` is what the "model"
means to write (text, then code). The server renders it as the endpoint would for the request it
gets: tool calls for a request with ``tools``; code between tags otherwise, cut at the request's
``stop`` strings like a real server (the stop string swallowed, or kept with ``include_stop``);
``/v1/completions`` or ``/v1/chat/completions``; streamed as SSE chunks (content and tool-call
argument deltas, a final usage chunk) when ``stream`` is set. Errors (429 with ``retry-after``,
500, a reasoning model's 400 for ``stop``/``max_tokens``/``temperature``) are scripted too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx2

from tir_agent.formats.native import code_block
from tir_agent.formats.tags import TagPreset


@dataclass
class Step:
    """One model reply, format-neutral: ``text``, then one block per entry of ``code``."""

    text: str = ""
    code: list[str] = field(default_factory=list)
    after: str = ""
    """Text written after the blocks (only returned when no stop string cuts it)."""
    arguments: list[str] | None = None
    """Tools: raw argument strings instead of ``{"code": ...}`` (e.g. invalid JSON)."""
    names: list[str] | None = None
    """Tools (Responses endpoint): the called functions' names, one per argument string
    (default ``python_exec``)."""
    finish_reason: str | None = None
    """Override (e.g. ``length``); by default what the server would say."""
    unclosed: str | None = None
    """Tags: an unclosed block with this code, written last (cut off)."""


@dataclass
class Fail:
    """An HTTP error reply."""

    status: int
    message: str = "scripted failure"
    headers: dict[str, str] = field(default_factory=dict)


REJECTED = {
    "stop": "Unsupported parameter: 'stop' is not supported with this model.",
    "max_tokens": "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.",
    "temperature": "Unsupported value: 'temperature' does not support 0.7 with this model. Only the default (1) value is supported.",
}


class ScriptedServer:
    """Answers requests from a list of steps; records every request body and its arrival time."""

    def __init__(
        self,
        steps: list[Step | Fail],
        *,
        tags: TagPreset,
        include_stop: bool = False,
        report_stop: bool = False,
        reject: tuple[str, ...] = (),
        chunk: int = 7,
        repeat_tool_name: bool = False,
    ) -> None:
        self.steps = list(steps)
        self.tags = tags
        self.include_stop = include_stop
        self.report_stop = report_stop
        self.reject = reject
        self.chunk = chunk
        self.repeat_tool_name = repeat_tool_name
        """Streams: every tool-call delta repeats id, type and name (as llama.cpp does)."""
        self.requests: list[dict[str, Any]] = []
        self.times: list[float] = []
        self.headers: list[dict[str, str]] = []

    def transport(self) -> httpx2.MockTransport:
        """An httpx2 transport for ``openai.AsyncOpenAI(http_client=httpx2.AsyncClient(transport=...))``."""
        return httpx2.MockTransport(self.handle)

    def client(self) -> httpx2.AsyncClient:
        """An httpx2 client speaking to this server."""
        return httpx2.AsyncClient(transport=self.transport())

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        """One HTTP exchange."""
        body = json.loads(request.content)
        self.requests.append(body)
        self.times.append(time.monotonic())
        self.headers.append(dict(request.headers))
        for key in self.reject:
            if key in body:
                return _error(400, REJECTED[key], param=key, code="unsupported_parameter")
        if not self.steps:
            return _error(500, "script exhausted: the agent made more calls than scripted")
        step = self.steps.pop(0)
        if isinstance(step, Fail):
            return _error(step.status, step.message, headers=step.headers)
        chat = request.url.path.endswith("/chat/completions")
        reply = self.render(step, body)
        if body.get("stream"):
            return httpx2.Response(
                200,
                headers={"content-type": "text/event-stream"},
                content=b"".join(_sse(c) for c in self._chunks(reply, chat)) + b"data: [DONE]\n\n",
            )
        return httpx2.Response(200, json=self._complete(reply, chat))

    def render(self, step: Step, body: dict[str, Any]) -> dict[str, Any]:
        """What the endpoint returns for ``step``: text, tool calls, finish reason, stop match."""
        tools = "tools" in body and body.get("tool_choice") != "none"
        if "tools" in body:
            calls = []
            if tools:
                arguments = step.arguments or [json.dumps({"code": c}) for c in step.code]
                calls = [
                    {
                        "id": f"call_{len(self.requests)}_{i}",
                        "type": "function",
                        "function": {"name": "python_exec", "arguments": a},
                    }
                    for i, a in enumerate(arguments)
                ]
            finish = step.finish_reason or ("tool_calls" if calls else "stop")
            return {"text": step.text, "calls": calls, "finish": finish, "matched": None}
        text = step.text
        for code in step.code:
            if text and not text.endswith("\n"):
                text += "\n"
            text += code_block(self.tags, code)
        if step.unclosed is not None:
            text += self.tags.code_begin + step.unclosed
        text += step.after
        finish, matched = step.finish_reason or "stop", None
        stops = body.get("stop") or []
        hits = [(text.find(s), s) for s in stops if s in text]
        if hits and step.finish_reason is None:
            at, matched = min(hits)
            text = text[: at + len(matched)] if self.include_stop else text[:at]
        return {
            "text": text,
            "calls": [],
            "finish": finish,
            "matched": matched if self.report_stop else None,
        }

    def _usage(self, reply: dict[str, Any], body: dict[str, Any]) -> dict[str, int]:
        prompt = len(json.dumps(body.get("messages") or body.get("prompt"))) // 4
        completion = max(1, len(reply["text"]) // 4) + sum(
            len(c["function"]["arguments"]) // 4 for c in reply["calls"]
        )
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def _complete(self, reply: dict[str, Any], chat: bool) -> dict[str, Any]:
        body = self.requests[-1]
        usage = self._usage(reply, body)
        if chat:
            message: dict[str, Any] = {"role": "assistant", "content": reply["text"] or None}
            if reply["calls"]:
                message["tool_calls"] = reply["calls"]
            choice: dict[str, Any] = {
                "index": 0,
                "message": message,
                "finish_reason": reply["finish"],
            }
        else:
            choice = {"index": 0, "text": reply["text"], "finish_reason": reply["finish"]}
        if reply["matched"] is not None:
            choice["stop_reason"] = reply["matched"]
        return {
            "id": f"cmpl-{len(self.requests)}",
            "object": "chat.completion" if chat else "text_completion",
            "created": 1700000000,
            "model": body["model"],
            "choices": [choice],
            "usage": usage,
        }

    def _chunks(self, reply: dict[str, Any], chat: bool) -> Iterator[dict[str, Any]]:
        body = self.requests[-1]
        head = {
            "id": f"cmpl-{len(self.requests)}",
            "created": 1700000000,
            "model": body["model"],
            "object": "chat.completion.chunk" if chat else "text_completion",
        }
        text, n = reply["text"], self.chunk
        pieces = [text[i : i + n] for i in range(0, len(text), n)]
        if chat:
            yield {
                **head,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": ""},
                        "finish_reason": None,
                    }
                ],
            }
            for piece in pieces:
                yield {
                    **head,
                    "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
                }
            for i, call in enumerate(reply["calls"]):
                args = call["function"]["arguments"]
                first = {
                    "index": i,
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["function"]["name"], "arguments": ""},
                }
                yield {
                    **head,
                    "choices": [
                        {"index": 0, "delta": {"tool_calls": [first]}, "finish_reason": None}
                    ],
                }
                for j in range(0, len(args), n):
                    delta = {"index": i, "function": {"arguments": args[j : j + n]}}
                    if self.repeat_tool_name:
                        delta = {**first, "function": {**first["function"], **delta["function"]}}
                    yield {
                        **head,
                        "choices": [
                            {"index": 0, "delta": {"tool_calls": [delta]}, "finish_reason": None}
                        ],
                    }
            last: dict[str, Any] = {"index": 0, "delta": {}, "finish_reason": reply["finish"]}
        else:
            for piece in pieces:
                yield {**head, "choices": [{"index": 0, "text": piece, "finish_reason": None}]}
            last = {"index": 0, "text": "", "finish_reason": reply["finish"]}
        if reply["matched"] is not None:
            last["stop_reason"] = reply["matched"]
        yield {**head, "choices": [last]}
        yield {**head, "choices": [], "usage": self._usage(reply, body)}


def _sse(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data).encode() + b"\n\n"


def _error(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx2.Response:
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    return httpx2.Response(status, json={"error": error}, headers=headers or {})
