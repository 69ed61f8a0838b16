"""The agent end to end against the real embedded model (llama.cpp server, the default model
Qwen2.5-Coder-0.5B-Instruct).

One server for the module; greedy decoding and a fixed seed. These assert what the loop must do
with a real model's real tokens: code found and run, outputs fed back in the exact bytes of
REFERENCE.md, hints after each execution, the budget enforced, native tool calls
(``tool_choice="auto"``, the call Qwen2.5 writes as text taken as the call, then
``tool_choice="none"`` for the final answer), streaming in each format.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2
import pytest
import pytest_asyncio

from tests.local.scenarios import SCENARIOS, Scenario, build_agent, run
from tir_agent.agent import Agent
from tir_agent.budget import RUN_OUT_HINT, hint_after
from tir_agent.local_model import LlamaCppServer, LocalModel
from tir_agent.sandbox.local import LocalSandbox
from tir_agent.turn import CodeComplete, ExecutionDone, Finished, TextDelta

# Real solves with the 0.5B default take 10-80 s each on 2 busy cores: a wider safety net than
# the suite's 120 s (a bound against hangs, not a speed target).
pytestmark = [
    pytest.mark.integration,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.timeout(600),
]


@pytest.fixture(scope="module")
def server() -> Iterator[LlamaCppServer]:
    """The real llama.cpp server, once for the module."""
    with LlamaCppServer() as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sandbox() -> AsyncIterator[LocalSandbox]:
    """One real sandbox for the module (a fresh session per solve)."""
    async with LocalSandbox() as box:
        yield box


class Spy(httpx2.AsyncBaseTransport):
    """Keeps the JSON body of every request as it goes on the wire."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self._inner = httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        self.bodies.append(json.loads(await request.aread()))
        return await self._inner.handle_async_request(request)


def _assert_hints(scenario: Scenario, agent: Agent, generation: str, executed: int) -> None:
    """After execution k the byte-exact hint of REFERENCE.md §4 follows the output."""
    budget = scenario.agent_options()["max_code_executions"]
    assert 1 <= executed <= budget
    position = 0
    for k in range(1, executed + 1):
        text = agent.tags.output_end + hint_after(k, budget)
        found = generation.find(text, position)
        assert found >= 0, f"hint after execution {k} missing"
        position = found + len(text)


@pytest.mark.parametrize(
    "scenario",
    [
        pytest.param(s, marks=pytest.mark.xfail(reason=s.known_bug, strict=True))
        if s.known_bug
        else s
        for s in SCENARIOS
    ],
    ids=[s.name for s in SCENARIOS],
)
async def test_solve_with_the_real_model(
    scenario: Scenario, server: LlamaCppServer, sandbox: LocalSandbox
) -> None:
    agent = build_agent(scenario, server.base_url, sandbox)
    result, events = await run(agent, scenario)
    await agent.aclose()
    assert result.status in ("finished", "budget_spent"), result.error
    assert result.executions, "the model's code was not run"
    assert result.usage.completion_tokens > 0 or scenario.stream  # llama.cpp: no usage in streams
    first = result.executions[0]
    assert first.code in result.generation
    assert agent.tags.output_begin + first.stdout + first.stderr in result.generation
    if scenario.format == "tags":
        _assert_hints(scenario, agent, result.generation, len(result.executions))
    if scenario.stream:
        kinds = [type(e) for e in events]
        assert kinds[-1] is Finished
        assert TextDelta in kinds or scenario.format == "tools"
        assert kinds.index(CodeComplete) < kinds.index(ExecutionDone)


async def test_native_tools_auto_then_withdrawn(
    server: LlamaCppServer, sandbox: LocalSandbox
) -> None:
    scenario = next(s for s in SCENARIOS if s.name == "tools")
    spy = Spy()
    agent = Agent(
        "local",
        base_url=server.base_url,
        sandbox=sandbox,
        http_client=httpx2.AsyncClient(transport=spy, timeout=None),
        **scenario.agent_options(),
    )
    result, _ = await run(agent, scenario)
    await agent.aclose()
    # The agent's own requests, unadapted: "auto" (Qwen2.5 writes its Hermes-style call, which
    # llama-cpp-python returns as text), "" for the assistant message of that call (it answers
    # 500 to null), then "none".
    assert [b.get("tool_choice") for b in spy.bodies] == ["auto", "none"]
    assistant = spy.bodies[1]["messages"][-2]
    assert assistant["content"] == "" and assistant["tool_calls"]
    assert len(result.executions) == 1  # the final round answers or not: the model's part
    assert result.status in ("finished", "budget_spent")
    tool_message = next(m for m in result.messages if m["role"] == "tool")
    assert tool_message["content"].endswith(RUN_OUT_HINT)  # the model learns why tools went away
    assert not result.turns[-1].calls and result.turns[-1].text


async def test_budget_of_one_then_a_text_only_round(
    server: LlamaCppServer, sandbox: LocalSandbox
) -> None:
    scenario = next(s for s in SCENARIOS if s.name == "chat_tags")
    options = {**scenario.agent_options(), "max_code_executions": 1}
    agent = Agent("local", base_url=server.base_url, sandbox=sandbox, **options)
    result = await agent.asolve(scenario.problem)
    await agent.aclose()
    assert len(result.executions) == 1
    assert agent.tags.output_end + hint_after(1, 1) in result.generation
    assert hint_after(1, 1).startswith("```system\nYou have run out of code executions!")
    assert len(result.turns) == 2  # one call that ran code, one final round
    if result.turns[-1].calls:  # code in the final round is not run
        assert result.status == "budget_spent"


async def test_local_model_starts_on_first_use_and_stops_on_close(sandbox: LocalSandbox) -> None:
    local = LocalModel()
    assert not local.running
    url = await local.abase_url()
    assert local.running and re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", url)
    assert await local.abase_url() == url  # started once
    agent = Agent("local", base_url=url, sandbox=sandbox, max_tokens=64, temperature=0.0)
    result = await agent.asolve("What is 2 + 2?")
    await agent.aclose()
    assert result.turns and result.usage.completion_tokens > 0
    local.close()
    assert not local.running
    with pytest.raises(httpx2.ConnectError):
        httpx2.get(url + "/models", timeout=2)
