"""Replay of Responses API exchanges with the network blocked (JSON bodies and SSE events).

The cassettes (tests/cassettes/agent/responses_*.json) hold the Responses wire format as the
``openai`` SDK's own types serialise it, recorded from the scripted reasoning model of
``tests/agent/scripted_responses.py`` (no API key where they were made; see
``responses_cassettes.py``). Bodies are matched as parsed JSON, so each replayed request must
carry exactly the recorded input: the earlier reasoning items with their encrypted content
(``store=false``), or ``previous_response_id`` and only the new items (``store=true``).
"""

from __future__ import annotations

import json

import pytest
from vcr.errors import CannotOverwriteExistingCassetteException

from tests.agent.cassette_scenarios import BASE_URL, recorder
from tests.agent.responses_cassettes import MODEL, SCENARIOS, Scenario
from tir_agent.agent import Agent
from tir_agent.sandbox.base import Sandbox
from tir_agent.turn import Finished


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
async def test_replay(scenario: Scenario, sandbox: Sandbox, no_network: None) -> None:
    agent = Agent(
        MODEL, base_url=BASE_URL, api_key="sk-other-key", sandbox=sandbox, **scenario.options
    )
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
                f"a request differs from the cassette (re-record if intended: python -m "
                f"tests.agent.responses_cassettes): {e}"
            )
        assert cassette.all_played
        requests = [json.loads(r.body) for r in cassette.requests]
    assert result.answer == scenario.answer and result.status == "finished"
    assert len(result.executions) == scenario.executions
    assert [e.stdout for e in result.executions] == ["385\n", "385\n"]
    last = requests[-1]
    if scenario.options.get("store"):
        assert last["previous_response_id"] == "resp_0002"
    else:
        carried = [i["id"] for i in last["input"] if i.get("type") == "reasoning"]
        assert carried == ["rs_0001", "rs_0002"]
    assert result.usage.reasoning_tokens == 150 and result.cost is not None and result.cost > 0
    assert result.turns[1].reasoning == "Planning step 2."
