"""The model client through the loop, in every format: retries, errors, reasoning models, keys."""

from __future__ import annotations

import pytest

from tests.agent.conftest import Harness
from tests.agent.scripted import Fail, Step
from tir_agent.client import ModelClient
from tir_agent.errors import AuthenticationError, BadRequestError

pytestmark = pytest.mark.asyncio(loop_scope="module")

ANSWER = [Step("", ["print(2)\n"]), Step("\\boxed{2}")]


async def test_429_honours_retry_after(fmt: Harness) -> None:
    agent, server = fmt.agent([Fail(429, "slow down", {"retry-after": "0.3"}), *ANSWER])
    result = await fmt.solve(agent, "p")
    assert result.answer == "2" and len(server.requests) == 3
    assert server.times[1] - server.times[0] >= 0.3
    assert server.requests[0] == server.requests[1]  # the same request, resent


async def test_500_is_retried_then_gives_up_as_error(fmt: Harness) -> None:
    agent, server = fmt.agent([Fail(500), Fail(502), *ANSWER])
    assert (await fmt.solve(agent, "p")).answer == "2"
    agent, server = fmt.agent([Fail(503)] * 3, max_retries=2)
    result = await fmt.solve(agent, "p")
    assert result.status == "error" and len(server.requests) == 3
    assert result.error is not None and result.error.startswith("503 from the model endpoint")
    assert result.executions == [] and result.turns == []


async def test_errors_that_are_not_retried(fmt: Harness) -> None:
    agent, server = fmt.agent([Fail(401, "Incorrect API key provided")])
    with pytest.raises(AuthenticationError, match="Check the API key"):
        await fmt.solve(agent, "p")
    agent, server = fmt.agent([Fail(400, "This model's maximum context length is 8192 tokens")])
    result = await fmt.solve(agent, "p")
    assert result.status == "length" and "maximum context length" in (result.error or "")
    agent, server = fmt.agent([Fail(404, "The model `nope` does not exist")])
    result = await fmt.solve(agent, "p")
    assert result.status == "error" and len(server.requests) == 1
    assert isinstance(result, object) and BadRequestError.__name__  # translated, not retried


async def test_reasoning_model_400s_teach_the_client(fmt: Harness) -> None:
    agent, server = fmt.agent(
        list(ANSWER),
        server={"reject": ("stop", "max_tokens", "temperature")},
        temperature=0.7,
        max_tokens=1000,
    )
    result = await fmt.solve(agent, "p")
    assert result.answer == "2"
    last = server.requests[-1]
    assert {"stop", "max_tokens", "temperature"}.isdisjoint(last)
    if fmt.api == "chat":  # renamed; the completions API has no max_completion_tokens: dropped
        assert last["max_completion_tokens"] == 1000 - result.turns[0].usage.completion_tokens
    # Learned once: the second model call is sent right the first time.
    assert server.requests[-2].keys() == {*last.keys()}


async def test_reasoning_model_by_name(fmt: Harness) -> None:
    agent, server = fmt.agent(
        list(ANSWER),
        model="o3-mini",
        system="Be brief.",
        user="{problem}",
        temperature=0.7,
        max_tokens=500,
        reasoning_effort="low",
    )
    result = await fmt.solve(agent, "p")
    assert result.answer == "2" and len(server.requests) == 2
    first = server.requests[0]
    assert {"stop", "temperature"}.isdisjoint(first)
    if fmt.api == "chat":
        assert first["max_completion_tokens"] == 500 and "max_tokens" not in first
        assert first["reasoning_effort"] == "low"
        assert first["messages"][0] == {"role": "developer", "content": "Be brief."}
        # The result's messages are what was sent, not the conversation before adaptation.
        assert result.messages[0] == {"role": "developer", "content": "Be brief."}


async def test_any_key_works_for_other_endpoints(
    fmt: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    agent, server = fmt.agent(list(ANSWER), api_key=None)
    assert (await fmt.solve(agent, "p")).answer == "2"
    assert server.headers[0]["authorization"] == "Bearer none"
    agent, server = fmt.agent(list(ANSWER))
    await fmt.solve(agent, "p")
    assert server.headers[0]["authorization"] == "Bearer test-key"


async def test_set_base_url_rebuilds_the_sdk_client() -> None:
    client = ModelClient(model="m", base_url="http://127.0.0.1:1/v1", api_key="k")
    first = client._client()
    assert str(first.base_url) == "http://127.0.0.1:1/v1/"
    client.set_base_url("http://127.0.0.1:1/v1")  # unchanged: the SDK client is kept
    assert client._client() is first
    client.set_base_url("http://127.0.0.1:2/v1")
    assert str(client._client().base_url) == "http://127.0.0.1:2/v1/"
    assert client.base_url == "http://127.0.0.1:2/v1"
