"""Token usage from every API (cached and reasoning tokens included), and counting it when a
streaming server reports none (llama-cpp-python's server, whose streams carry no usage).

The endpoints are the scripted OpenAI-compatible server (real wire format through an httpx2
transport), here wrapped to drop the usage chunk and to serve a tokenizer endpoint.
"""

from __future__ import annotations

import json

import httpx2
import pytest
from openai.types import CompletionUsage
from openai.types.completion_usage import CompletionTokensDetails, PromptTokensDetails
from openai.types.responses import ResponseUsage
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

from tests.agent.scripted import ScriptedServer, Step
from tir_agent.agent import Agent
from tir_agent.formats.tags import PRESETS
from tir_agent.sandbox.base import Sandbox
from tir_agent.turn import TextDelta, Usage
from tir_agent.usage import estimate_tokens, usage_from


def test_chat_usage_details() -> None:
    usage = CompletionUsage(
        prompt_tokens=100,
        completion_tokens=40,
        total_tokens=140,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=64),
        completion_tokens_details=CompletionTokensDetails(reasoning_tokens=30),
    )
    assert usage_from(usage) == Usage(
        input_tokens=100, output_tokens=40, cached_tokens=64, reasoning_tokens=30
    )
    plain = CompletionUsage(prompt_tokens=5, completion_tokens=2, total_tokens=7)
    assert usage_from(plain) == Usage(input_tokens=5, output_tokens=2)


def test_responses_usage_details() -> None:
    usage = ResponseUsage(
        input_tokens=200,
        input_tokens_details=InputTokensDetails(cached_tokens=128, cache_write_tokens=0),
        output_tokens=90,
        output_tokens_details=OutputTokensDetails(reasoning_tokens=70),
        total_tokens=290,
    )
    got = usage_from(usage)
    assert (got.input_tokens, got.output_tokens, got.cached_tokens, got.reasoning_tokens) == (
        200,
        90,
        128,
        70,
    )
    assert (got.prompt_tokens, got.completion_tokens, got.total_tokens) == (200, 90, 290)


def test_aliases_and_sums() -> None:
    a = Usage(prompt_tokens=3, completion_tokens=4)  # the chat names still build one
    b = Usage(input_tokens=1, output_tokens=1, cached_tokens=1, estimated=True)
    total = a + b
    assert (total.input_tokens, total.output_tokens, total.cached_tokens) == (4, 5, 1)
    assert total.estimated and Usage.model_validate_json(total.model_dump_json()) == total


class NoStreamUsage:
    """The scripted server, minus the usage chunk of streams (as llama-cpp-python streams), plus
    an optional llama-cpp-python tokenizer endpoint (``POST /extras/tokenize``: one token per
    word here)."""

    def __init__(self, server: ScriptedServer, tokenizer: bool) -> None:
        self.server = server
        self.tokenizer = tokenizer
        self.counted: list[str] = []

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        if request.url.path.endswith("tokenize"):
            if not self.tokenizer or request.url.path != "/extras/tokenize":
                return httpx2.Response(404, json={"detail": "Not Found"})
            text = json.loads(request.content)["input"]
            self.counted.append(text)
            return httpx2.Response(200, json={"tokens": list(range(len(text.split())))})
        response = self.server.handle(request)
        if response.headers.get("content-type") != "text/event-stream":
            return response
        events = [e for e in response.content.split(b"\n\n") if e and b'"usage"' not in e]
        return httpx2.Response(
            200,
            headers={"content-type": "text/event-stream"},
            content=b"\n\n".join(events) + b"\n\n",
        )


STREAMED = [("tools", "chat"), ("tags", "chat"), ("tags", "completions")]


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("tokenizer", [True, False], ids=["tokenizer", "estimate"])
@pytest.mark.parametrize(("format", "api"), STREAMED, ids=["tools", "chat-tags", "completions"])
async def test_streams_without_usage_are_counted(
    sandbox: Sandbox, format: str, api: str, tokenizer: bool
) -> None:
    scripted = ScriptedServer(
        [Step("Let me compute it.", ["print(6 * 7)\n"]), Step("It is \\boxed{42}.")],
        tags=PRESETS["openmath"],
    )
    wrapper = NoStreamUsage(scripted, tokenizer)
    agent = Agent(
        "some-local-model",
        base_url="http://llama.test/v1",
        api_key="none",
        format=format,
        api=api,
        sandbox=sandbox,
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(wrapper.handle)),
        user="{problem}",
        prices={"some-local-model": {"input": 0.0, "output": 0.0}},
    )
    events = [e async for e in agent.stream("What is 6*7?")]
    result = events[-1].result  # type: ignore[union-attr]
    assert result.answer == "42"
    assert all(r["stream_options"] == {"include_usage": True} for r in scripted.requests)
    usage = result.usage
    assert usage.estimated and usage.input_tokens > 0 and usage.output_tokens > 0
    if tokenizer:  # the prompt, then the reply, of each call went to the tokenizer
        assert len(wrapper.counted) == 2 * len(result.turns)
        assert wrapper.counted[1].startswith("Let me compute it.")
        assert usage.output_tokens == sum(len(t.split()) for t in wrapper.counted[1::2])
        assert usage.input_tokens == sum(len(t.split()) for t in wrapper.counted[0::2])
        assert "What is 6*7?" in wrapper.counted[0]
    else:
        expected = 0
        for turn in result.turns:  # what was streamed: text deltas, tool name and arguments
            streamed = "".join(
                e.text for e in events if isinstance(e, TextDelta) and e.turn == turn.index
            )
            if format == "tools":
                streamed += "".join("python_exec" + (c.arguments or "") for c in turn.calls)
            expected += estimate_tokens(streamed)
        assert not wrapper.counted and usage.output_tokens == expected
