"""Replay of a real exchange: the embedded model (Qwen2.5-Coder-0.5B on llama.cpp, greedy) calls a
user's function offered through its own chat template; see ``local_scenario.py``. The network is
blocked, every recorded interaction must be played, each request the agent builds must match the
recorded one as parsed JSON, and the result must equal the recorded summary."""

from __future__ import annotations

import json

import pytest
from vcr.errors import CannotOverwriteExistingCassetteException

from tests.local.scenarios import REPLAY_URL, recorder
from tests.tools.local_scenario import CASSETTES, NAME, PROBLEM, build_agent, summary
from tir_agent.sandbox.base import Sandbox


@pytest.mark.asyncio(loop_scope="module")
async def test_replay_of_the_embedded_model_calling_a_function(
    sandbox: Sandbox, no_network: None
) -> None:
    expected = json.loads((CASSETTES / f"{NAME}.summary.json").read_text())
    agent = build_agent(REPLAY_URL, sandbox)
    with recorder("none", CASSETTES).use_cassette(f"{NAME}.json") as cassette:
        try:
            result = await agent.asolve(PROBLEM)
        except CannotOverwriteExistingCassetteException as e:
            pytest.fail(
                f"a request differs from the recording (re-record: python -m tests.tools.local_scenario): {e}"
            )
        assert cassette.all_played
    await agent.aclose()
    assert summary(result) == expected
    # The server returned the call as text (it drops Qwen's <tool_call> tokens); it ran as a call.
    assert result.tool_calls[0].arguments == {"city": "Paris", "unit": "c"}
    assert result.status == "finished"
