"""Replay of real exchanges with the embedded model, with the network blocked.

The cassettes in tests/cassettes/local/ were recorded from the real llama.cpp server
(Qwen2.5-Coder-0.5B-Instruct Q4_K_M, greedy, seed 0) by ``python scripts/record_cassettes.py``; see
``tests/local/scenarios.py``. The sandbox runs for real: each request the agent builds from the
real execution outputs must match a recorded one as parsed JSON, every recorded interaction must
be played, and the result must equal the recorded one (``<name>.summary.json``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from vcr.errors import CannotOverwriteExistingCassetteException

from tests.local.scenarios import (
    CASSETTES,
    OPENAI_CASSETTES,
    OPENAI_ONLY,
    RECORDED,
    REPLAY_URL,
    Scenario,
    build_agent,
    recorder,
    summary,
)
from tests.local.scenarios import run as run_scenario
from tir_agent.sandbox.local import LocalSandbox
from tir_agent.turn import CodeComplete, ExecutionDone, TextDelta

_ASYNC = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sandbox() -> AsyncIterator[LocalSandbox]:
    """One real sandbox for the module (a fresh session per solve)."""
    async with LocalSandbox() as box:
        yield box


CASES = [
    pytest.param(library, scenario, id=f"{library.name}-{scenario.name}")
    for library in (CASSETTES, OPENAI_CASSETTES)
    for scenario in RECORDED + OPENAI_ONLY
    if (library / f"{scenario.name}.summary.json").exists()
]


@_ASYNC
@pytest.mark.parametrize(("library", "scenario"), CASES)
async def test_replay_reproduces_the_recorded_solve(
    library: Path, scenario: Scenario, sandbox: LocalSandbox, no_network: None
) -> None:
    expected = json.loads((library / f"{scenario.name}.summary.json").read_text())
    agent = build_agent(scenario, REPLAY_URL, sandbox, expected["model"])
    with recorder("none", library).use_cassette(f"{scenario.name}.json") as cassette:
        result, events = await run_scenario(agent, scenario)
        assert cassette.all_played, "a recorded interaction was not requested"
        model_calls = [r for r in cassette.requests if "/v1/" in r.uri]  # not the tokenizer's
        assert len(model_calls) == len(result.turns) and cassette.play_count == len(
            cassette.requests
        )
    await agent.aclose()
    assert summary(result) == expected
    if scenario.stream:
        kinds = {type(e) for e in events}
        assert {TextDelta, CodeComplete, ExecutionDone} <= kinds
        if scenario.format != "tools":
            for turn in result.turns:  # deltas as they came; a swallowed stop is restored after
                streamed = "".join(
                    e.text for e in events if isinstance(e, TextDelta) and e.turn == turn.index
                )
                assert turn.text in (streamed, streamed + agent.tags.code_end)


@_ASYNC
async def test_a_request_not_in_the_cassette_fails(sandbox: LocalSandbox, no_network: None) -> None:
    """A changed request (another problem) finds no recorded answer: the solve fails."""
    scenario = RECORDED[0]
    agent = build_agent(scenario, REPLAY_URL, sandbox)
    with (
        recorder("none").use_cassette(f"{scenario.name}.json"),
        pytest.raises(CannotOverwriteExistingCassetteException, match="json_body differs"),
    ):
        await agent.asolve("What is 1 + 1?")
    await agent.aclose()


def test_every_scenario_has_its_local_cassette() -> None:
    for scenario in RECORDED:
        assert (CASSETTES / f"{scenario.name}.json").is_file(), "run scripts/record_cassettes.py"
        assert (CASSETTES / f"{scenario.name}.summary.json").is_file()


def test_cassettes_hold_no_secret_or_version() -> None:
    texts = [p.read_text() for p in (*CASSETTES.glob("*.json"), *OPENAI_CASSETTES.glob("*.json"))]
    assert len(texts) >= 2 * len(RECORDED)
    for text in texts:
        lowered = text.lower()
        assert "sk-local-not-a-secret" not in text and "authorization" not in lowered
        assert "x-stainless" not in lowered and "user-agent" not in lowered
        assert "127.0.0.1" not in text


def test_every_recorded_request_is_bounded_and_repeatable() -> None:
    """What the local defaults put on the wire: bounded, greedy, seeded; stops for the tags."""
    for path in CASSETTES.glob("*.json"):
        if path.name.endswith(".summary.json"):
            continue
        for interaction in json.loads(path.read_text())["interactions"]:
            if "/v1/" not in interaction["request"]["uri"]:
                continue  # the tokenizer endpoint, counting a stream that carried no usage
            body = json.loads(interaction["request"]["body"])
            assert 0 < body["max_tokens"] <= 768, path.name
            assert body["temperature"] == 0.0 and body["seed"] == 0
            if interaction["request"]["uri"].endswith("/v1/completions"):
                if "<tools>" in body["prompt"]:  # tools over completions: one call per round
                    assert body["stop"] == ["</tool_call>", "<tool_response>", "<|im_end|>"]
                    assert body["prompt"].startswith("<|im_start|>system\n")
                else:
                    assert body["stop"] == ["```\n", "<|im_end|>"]
                    assert body["prompt"].startswith("<|im_start|>user\n")
            elif "tools" not in body:
                assert body["stop"] == ["```\n"]
