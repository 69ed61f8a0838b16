"""Replay of recorded multi-turn exchanges with the network blocked.

The cassettes in tests/cassettes/agent/ were recorded against the scripted OpenAI-compatible
server (tests/agent/scripted.py) through vcrpy's httpx2 patch; see ``cassette_scenarios.py``.
Bodies are matched as parsed JSON, the authorization header is filtered, every recorded
interaction must be played, and any request not in the cassette fails the test.
"""

from __future__ import annotations

import pytest
from vcr.errors import CannotOverwriteExistingCassetteException

from tests.agent.cassette_scenarios import BASE_URL, SCENARIOS, Scenario, recorder
from tir_agent.agent import Agent
from tir_agent.sandbox.base import Sandbox
from tir_agent.turn import Finished


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
async def test_replay(scenario: Scenario, sandbox: Sandbox, no_network: None) -> None:
    agent = Agent(
        "scripted-model",
        base_url=BASE_URL,
        api_key="sk-other-key",
        sandbox=sandbox,
        **scenario.options,
    )
    agent.client.backoff = 0.0
    with recorder("none").use_cassette(f"{scenario.name}.json") as cassette:
        try:
            if scenario.stream:
                events = [e async for e in agent.stream(scenario.problem)]
                assert isinstance(events[-1], Finished)
                result = events[-1].result
            else:
                result = await agent.asolve(scenario.problem)
        except CannotOverwriteExistingCassetteException as e:
            pytest.fail(
                f"a request differs from the cassette (did a prompt or the request shape change? "
                f"if intended, re-record: python -m tests.agent.cassette_scenarios): {e}"
            )
        assert cassette.all_played
    assert result.answer == scenario.answer and result.status == "finished"
    assert len(result.executions) == scenario.executions
    assert all(e.status == "completed" for e in result.executions)


def test_cassettes_hold_no_secret() -> None:
    from tests.agent.cassette_scenarios import CASSETTES

    for path in CASSETTES.glob("*.json"):
        text = path.read_text()
        assert "sk-not-a-real-key" not in text and "REDACTED" in text
