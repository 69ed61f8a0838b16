"""Replay of real exchanges: the embedded model (Qwen2.5-Coder-0.5B on llama.cpp, greedy) calls a
user's function, offered natively through its own chat template and in the tag format's system
message; see ``local_scenario.py``. The network is blocked, every recorded interaction must be
played, each request the agent builds must match the recorded one as parsed JSON, and the result
must equal the recorded summary."""

from __future__ import annotations

import json

import pytest
from vcr.errors import CannotOverwriteExistingCassetteException

from tests.local.scenarios import REPLAY_URL, recorder
from tests.tools.local_scenario import CASSETTES, PROBLEM, SCENARIOS, build_agent, summary
from tir_agent.sandbox.base import Sandbox

RECORDED = [name for name in SCENARIOS if (CASSETTES / f"{name}.summary.json").exists()]


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("name", RECORDED)
async def test_replay_of_the_embedded_model_calling_a_function(
    name: str, sandbox: Sandbox, no_network: None
) -> None:
    expected = json.loads((CASSETTES / f"{name}.summary.json").read_text())
    agent = build_agent(REPLAY_URL, sandbox, name)
    with recorder("none", CASSETTES).use_cassette(f"{name}.json") as cassette:
        try:
            result = await agent.asolve(PROBLEM)
        except CannotOverwriteExistingCassetteException as e:
            pytest.fail(
                "a request differs from the recording (re-record: python -m "
                f"tests.tools.local_scenario {name}): {e}"
            )
        assert cassette.all_played
    await agent.aclose()
    assert summary(result) == expected
    assert result.tool_calls and result.tool_calls[0].name == "get_temperature"
    assert result.tool_calls[0].arguments["city"] == "Paris"
