"""The model client: the only module that touches the ``openai`` SDK.

It sends a :class:`~tir_agent.formats.base.ModelRequest` (chat, completions or Responses), paces
it with the endpoint's shared rate budget (:mod:`tir_agent.pacing`), retries transient failures
with backoff (honouring ``retry-after``), adapts parameters for reasoning models, assembles
streamed replies (text, tool-call argument deltas, Responses events, the usage chunk) and
translates SDK errors into :mod:`tir_agent.errors` here and nowhere else.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import logging
import random
import re
import time
import weakref
from collections.abc import Callable
from typing import Any

import httpx2
import openai

from tir_agent import errors
from tir_agent._log import get_logger
from tir_agent.formats.base import ModelReply, ModelRequest, ToolCallData
from tir_agent.formats.replies import chat_reply, completion_reply, finish_reason, matched_stop
from tir_agent.formats.responses import reply_from_response, stream_response
from tir_agent.pacing import Pacer, pacer_for
from tir_agent.turn import Usage
from tir_agent.usage import TokenCounter, estimate_tokens, request_text, usage_from

log = get_logger(__name__)
_std = logging.getLogger(__name__)

OPENAI_URL = "https://api.openai.com/v1"
_REASONING = re.compile(r"^(o\d|gpt-5)")
_RETRY_STATUS = frozenset({408, 409, 429})
_SAMPLING = ("temperature", "top_p", "presence_penalty", "frequency_penalty", "logprobs")
_CONTEXT = re.compile(r"context[_ ]length|maximum context|context window|too many tokens", re.I)


def is_reasoning_model(model: str) -> bool:
    """OpenAI reasoning models (``o1``, ``o3-mini``, ``gpt-5`` ...) per REFERENCE.md §6."""
    return bool(_REASONING.match(model.rsplit("/", 1)[-1]))


def _retry_after(headers: httpx2.Headers) -> float | None:
    """Seconds the server asks us to wait (``retry-after-ms``, ``retry-after`` seconds or date)."""
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        parsed = email.utils.parsedate_tz(value)
        return None if parsed is None else max(0.0, email.utils.mktime_tz(parsed) - time.time())


def translate(e: openai.OpenAIError) -> errors.ModelError:
    """The project's exception for an SDK error (the one place this mapping lives)."""
    if isinstance(e, openai.APIStatusError):
        status, message = e.status_code, f"{e.status_code} from the model endpoint: {e.message}"
        if status in (401, 403):
            return errors.AuthenticationError(
                f"{message}. Check the API key (api_key=... or OPENAI_API_KEY) and its permissions.",
                status_code=status,
            )
        if status == 429:
            return errors.RateLimitError(
                f"{message} (still rate limited after retries)", status_code=status
            )
        if status in (400, 413, 422) and (
            e.code == "context_length_exceeded" or _CONTEXT.search(e.message)
        ):
            return errors.ContextLengthError(message, status_code=status)
        if status in (400, 404, 422):
            return errors.BadRequestError(message, status_code=status)
        return errors.ModelError(message, status_code=status)
    return errors.ModelError(f"model endpoint unreachable: {e}")


_SHARED_HTTP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx2.AsyncClient] = (
    weakref.WeakKeyDictionary()
)
"""One HTTP connection pool per event loop, shared by every client (built on first use)."""


class ModelClient:
    """Sends requests to one OpenAI-compatible endpoint for one model.

    One SDK client is kept per event loop (an HTTP connection pool belongs to the loop that opened
    it), so the same client serves ``solve()`` (on a private loop) and ``asolve()`` (on yours).
    """

    def __init__(
        self,
        *,
        model: str,
        base_url: str,
        api_key: str,
        timeout: float | None = 600.0,
        max_retries: int = 5,
        backoff: float = 0.5,
        http_client: httpx2.AsyncClient | None = None,
        max_rpm: float | None = None,
        max_tpm: float | None = None,
    ) -> None:
        self.model = model
        self.base_url = base_url
        self.reasoning = is_reasoning_model(model)
        self.max_retries = max_retries
        self.backoff = backoff
        self._api_key = api_key
        self._timeout = timeout
        self._http_client = http_client
        self._sdk: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, openai.AsyncOpenAI] = (
            weakref.WeakKeyDictionary()
        )
        self._rejected: set[str] = set()
        """Parameters the endpoint rejected with a 400; dropped (or renamed) from then on."""
        self._warned: set[str] = set()
        self.max_rpm = max_rpm
        self.max_tpm = max_tpm
        self._key_id = hashlib.blake2b(api_key.encode(), digest_size=8).hexdigest()
        self._counter = TokenCounter(base_url, model)
        """Counts the tokens of streams that carry no usage (llama-cpp-python's server)."""

    def _client(self) -> openai.AsyncOpenAI:
        loop = asyncio.get_running_loop()
        client = self._sdk.get(loop)
        if client is None:
            http = self._http_client
            if http is None:
                http = _SHARED_HTTP.get(loop)
                if http is None:
                    http = _SHARED_HTTP[loop] = openai.DefaultAsyncHttpx2Client()
            client = openai.AsyncOpenAI(
                api_key=self._api_key,
                base_url=self.base_url,
                timeout=self._timeout,
                max_retries=0,  # retries happen in request(), with logging and our backoff
                http_client=http,
            )
            self._sdk[loop] = client
        return client

    def _http(self) -> httpx2.AsyncClient:
        """The HTTP client the SDK client of the running loop uses."""
        return self._http_client or _SHARED_HTTP[asyncio.get_running_loop()]

    def pacer(self) -> Pacer:
        """The rate budget shared on the running loop by every call to this endpoint and model."""
        return pacer_for(self.base_url, self.model, self._key_id, self.max_rpm, self.max_tpm)

    def set_base_url(self, base_url: str) -> None:
        """Point the client at another endpoint (e.g. an embedded server's new port); the SDK
        clients built for the old one are dropped (the shared connection pools stay)."""
        if base_url != self.base_url:
            self.base_url = base_url
            self._sdk.clear()
            self._counter = TokenCounter(base_url, self.model)

    async def aclose(self) -> None:
        """Forget the SDK client of the running loop.

        The HTTP connection pool is not closed: it is shared by every client on the loop (building
        one costs ~25 ms, mostly the TLS context) and lives as long as the loop; a pool passed in
        as ``http_client`` belongs to the caller.
        """
        self._sdk.pop(asyncio.get_running_loop(), None)

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("model.parameter_dropped", model=self.model, parameter=key, reason=message)

    def sent_messages(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Chat ``messages`` as this model is sent them: reasoning models get ``developer``
        where the conversation says ``system`` (REFERENCE.md §6)."""
        if not self.reasoning:
            return messages
        return [{**m, "role": "developer"} if m.get("role") == "system" else m for m in messages]

    def _adapt(self, request: ModelRequest) -> dict[str, Any]:
        """Parameters as this model accepts them (REFERENCE.md §6 and what the endpoint rejected)."""
        params = dict(request.params)
        params["model"] = self.model
        rejected = self._rejected
        renamed = request.api == "chat" and (self.reasoning or "max_tokens" in rejected)
        if renamed and "max_tokens" in params:
            params["max_completion_tokens"] = params.pop("max_tokens")
        if request.api == "responses":
            # The Responses API takes the effort as reasoning={"effort": ...} and has no seed.
            if (effort := params.pop("reasoning_effort", None)) is not None:
                params["reasoning"] = {**params.get("reasoning", {}), "effort": effort}
            rejected = rejected | {"seed", "stop"}
        if self.reasoning:
            rejected = rejected | {"stop", *_SAMPLING}
            if request.api == "chat":
                params["messages"] = self.sent_messages(params["messages"])
        for key in rejected:
            if key in params:
                del params[key]
                if key != "seed" or request.api != "responses":  # the seed still draws budgets
                    self._warn(key, "not supported by this model")
        return params

    def _learn(self, e: openai.BadRequestError, params: dict[str, Any]) -> bool:
        """A 400 naming a parameter we can drop or rename: remember it; ``True`` to resend."""
        for key in ("stop", "max_tokens", "temperature", "top_p", "seed", "presence_penalty"):
            named = e.param == key or f"'{key}'" in e.message or f'"{key}"' in e.message
            if named and key in params and key not in self._rejected:
                self._rejected.add(key)
                return True
        return False

    async def request(
        self,
        request: ModelRequest,
        *,
        on_text: Callable[[str], None] | None = None,
        on_tool_call: Callable[[], None] | None = None,
    ) -> ModelReply:
        """Send ``request``; stream when a callback is given. Raises :class:`errors.ModelError`."""
        started = time.perf_counter()
        attempt = 0
        pacer = self.pacer()
        while True:
            params = self._adapt(request)
            # Settled with the real usage after the call; not built when tokens are not paced.
            estimate = estimate_tokens(request_text(params)) if pacer.may_pace_tokens else 0
            probe = await pacer.acquire(estimate)
            try:
                if on_text is None and on_tool_call is None:
                    reply = await self._once(request.api, params, pacer)
                else:
                    reply = await self._stream(request.api, params, pacer, on_text, on_tool_call)
            except openai.BadRequestError as e:
                pacer.release(probe)
                if self._learn(e, params):
                    continue
                raise translate(e) from e
            except (openai.APIStatusError, openai.APIConnectionError) as e:
                status = getattr(e, "status_code", None)
                wait = None
                if isinstance(e, openai.APIStatusError):
                    pacer.observe(e.response.headers)
                    wait = _retry_after(e.response.headers)
                pacer.release(probe)
                retryable = status is None or status in _RETRY_STATUS or status >= 500
                if not retryable or attempt >= self.max_retries:
                    raise translate(e) from e
                if wait is None:
                    wait = self.backoff * 2**attempt * (0.5 + random.random())
                if status == 429:
                    pacer.pause(min(wait, 120.0))  # every caller of this endpoint waits
                attempt += 1
                log.warning("model.retry", status=status, attempt=attempt, wait=round(wait, 3))
                await asyncio.sleep(min(wait, 120.0))
                continue
            except openai.OpenAIError as e:
                pacer.release(probe)
                raise translate(e) from e
            except BaseException:
                pacer.release(probe)
                raise
            pacer.release(probe)
            pacer.settle(estimate, reply.usage.total_tokens)
            reply.stop_sent = "stop" in params
            reply.latency = time.perf_counter() - started
            return reply

    async def _once(self, api: str, params: dict[str, Any], pacer: Pacer) -> ModelReply:
        client = self._client()
        if api == "responses":
            raw_response = await client.responses.with_raw_response.create(**params)
            pacer.observe(raw_response.headers)
            return reply_from_response(raw_response.parse())
        # The SDK's plain post, not chat.completions.create: the same JSON body and errors,
        # without the typed-dict walk of every request and the model tree of every reply
        # (tir_agent.formats.replies says why).
        body = dict(params)
        extra = body.pop("extra_body", None)
        response = await client.post(
            "/chat/completions" if api == "chat" else "/completions",
            body=body,
            options={"extra_json": extra} if extra else {},
            cast_to=httpx2.Response,
        )
        pacer.observe(response.headers)
        try:
            data = json.loads(response.content)
        except ValueError:
            raise errors.ModelError(
                f"the model endpoint's reply is not JSON: {response.text[:200]!r}; check that "
                "base_url points at an OpenAI-compatible /v1 endpoint"
            ) from None
        return chat_reply(data) if api == "chat" else completion_reply(data)

    async def _stream(
        self,
        api: str,
        params: dict[str, Any],
        pacer: Pacer,
        on_text: Callable[[str], None] | None,
        on_tool_call: Callable[[], None] | None,
    ) -> ModelReply:
        client = self._client()
        if api == "responses":
            raw_events = await client.responses.with_raw_response.create(**params, stream=True)
            pacer.observe(raw_events.headers)
            return await stream_response(raw_events.parse(), on_text, on_tool_call)
        params = {**params, "stream": True, "stream_options": {"include_usage": True}}
        create = (
            client.chat.completions.with_raw_response.create
            if api == "chat"
            else client.completions.with_raw_response.create
        )
        raw: Any = await create(**params)
        pacer.observe(raw.headers)
        stream: Any = raw.parse()
        text: list[str] = []
        reasoning: list[str] = []
        calls: dict[int, list[str]] = {}  # index -> [id, name, arguments]
        finish: Any = None
        matched: str | int | None = None
        usage: Usage | None = None
        async for chunk in stream:
            if chunk.usage is not None:
                usage = usage_from(chunk.usage)
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            if api == "chat":
                delta = choice.delta
                piece = delta.content
                extra = delta.model_extra or {}
                thought = extra.get("reasoning_content") or extra.get("reasoning")
                if isinstance(thought, str):
                    reasoning.append(thought)
                for tc in delta.tool_calls or ():
                    slot = calls.get(tc.index)
                    if slot is None:
                        slot = calls[tc.index] = ["", "", ""]
                        if on_tool_call is not None:
                            on_tool_call()
                    if tc.id:
                        slot[0] = tc.id
                    if tc.function is not None:
                        # OpenAI sends the name once; llama.cpp repeats it in every delta.
                        name = tc.function.name
                        if name and name != slot[1]:
                            slot[1] += name
                        slot[2] += tc.function.arguments or ""
            else:
                piece = choice.text
            if piece:
                text.append(piece)
                if on_text is not None:
                    on_text(piece)
            if choice.finish_reason is not None:
                finish = choice.finish_reason
                matched = _matched_stop(choice)
        if usage is None:  # the server ignored stream_options: count with its tokenizer
            generated = "".join(text) + "".join(name + args for _, name, args in calls.values())
            usage = await self._counter.usage(self._http(), params, generated)
        return ModelReply(
            text="".join(text),
            finish_reason=finish_reason(finish),
            usage=usage,
            tool_calls=[ToolCallData(*calls[i]) for i in sorted(calls)],
            matched_stop=matched,
            reasoning="".join(reasoning) or None,
        )


def _matched_stop(choice: Any) -> str | int | None:
    """vLLM's ``stop_reason`` or SGLang's ``matched_stop`` of a streamed SDK choice."""
    return matched_stop(choice.model_extra or {})
