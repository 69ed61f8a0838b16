"""solve(): synchronous, also inside a running event loop (as in Jupyter), with the default sandbox."""

from __future__ import annotations

import asyncio

from tests.agent.scripted import ScriptedServer, Step
from tir_agent.agent import Agent
from tir_agent.formats.tags import PRESETS


def make_agent(steps: list[Step]) -> tuple[Agent, ScriptedServer]:
    server = ScriptedServer(steps, tags=PRESETS["openmath"])
    agent = Agent(
        "m",
        base_url="http://scripted.test/v1",
        api_key="k",
        user="{problem}",
        http_client=server.client(),
    )
    return agent, server


def test_solve_is_synchronous_with_the_default_sandbox() -> None:
    with make_agent([Step("", ["import math\nmath.factorial(5)\n"]), Step("\\boxed{120}")])[
        0
    ] as agent:
        result = agent.solve("5!")
        assert result.answer == "120" and result.executions[0].stdout == "120\n"
        assert len(agent._own_sandboxes) == 1  # created on first use ...
    assert len(agent._own_sandboxes) == 0  # ... and closed with the agent


async def test_solve_inside_a_running_loop() -> None:
    asyncio.get_running_loop()  # like a notebook cell: a loop is running in this thread
    agent, _ = make_agent([Step("", ["print(2 ** 10)\n"]), Step("\\boxed{1024}")])
    try:
        assert agent.solve("2^10").answer == "1024"
    finally:
        agent.close()
