"""Responses API exchanges kept as cassettes in tests/cassettes/agent/ (``responses_*.json``).

No API key is available where they were made, so they were recorded (through vcrpy's httpx2 patch)
from :class:`~tests.agent.scripted_responses.ScriptedResponses`, whose JSON bodies and SSE events
are built from the ``openai`` SDK's own Responses types. ``scripts/record_cassettes.py`` records
the same kind of exchange from the real API when ``OPENAI_API_KEY`` is set (see
``tests/local/scenarios.py``). Re-record these with ``python -m tests.agent.responses_cassettes``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from tests.agent.cassette_scenarios import BASE_URL, CASSETTES, recorder
from tests.agent.scripted import Step
from tests.agent.scripted_responses import ScriptedResponses


@dataclass
class Scenario:
    """One Responses solve with a scripted reasoning model."""

    name: str
    options: dict[str, Any]
    steps: list[Step]
    problem: str
    answer: str
    executions: int
    stream: bool = False
    server: dict[str, Any] = field(default_factory=dict)


_STEPS = [
    Step(
        "I'll compute the sum of squares first.",
        ["squares = [i**2 for i in range(1, 11)]\nsum(squares)\n"],
    ),
    Step(
        "Check it against the closed form, reusing the list.",
        ["n = len(squares)\nn * (n + 1) * (2 * n + 1) // 6\n"],
    ),
    Step("Both give \\boxed{385}."),
]
_OPTIONS = {
    "api": "responses",
    "system": "Solve with python_exec; put the answer in \\boxed{{}}.",
    "user": "{problem}",
    "reasoning_effort": "low",
    "add_remaining_code_executions": True,
}

SCENARIOS = [
    Scenario("responses_reasoning", _OPTIONS, _STEPS, "Sum of squares from 1 to 10?", "385", 2),
    Scenario(
        "responses_reasoning_streamed",
        _OPTIONS,
        _STEPS,
        "Sum of squares from 1 to 10?",
        "385",
        2,
        stream=True,
    ),
    Scenario(
        "responses_stored",
        {**_OPTIONS, "store": True},
        _STEPS,
        "Sum of squares from 1 to 10?",
        "385",
        2,
    ),
]
MODEL = "o4-mini"


async def _record(scenario: Scenario) -> None:
    from tir_agent.agent import Agent
    from tir_agent.sandbox.local import LocalSandbox

    server = ScriptedResponses(list(scenario.steps), reasoning=True, **scenario.server)
    path = CASSETTES / f"{scenario.name}.json"
    path.unlink(missing_ok=True)
    async with LocalSandbox() as sandbox:
        agent = Agent(
            MODEL,
            base_url=BASE_URL,
            api_key="sk-not-a-real-key",
            sandbox=sandbox,
            http_client=server.client(),
            **scenario.options,
        )
        with recorder("all").use_cassette(path.name):
            if scenario.stream:
                events = [e async for e in agent.stream(scenario.problem)]
                result = events[-1].result  # type: ignore[union-attr]
            else:
                result = await agent.asolve(scenario.problem)
    assert result.answer == scenario.answer, result
    assert all(server.carried), server.carried


if __name__ == "__main__":
    for item in SCENARIOS:
        asyncio.run(_record(item))
        print("recorded", item.name)
