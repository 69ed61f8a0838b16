"""Realistic multi-turn exchanges kept as cassettes in tests/cassettes/agent/.

Recorded against the scripted OpenAI-compatible server of ``tests/agent/scripted.py`` (through
vcrpy's httpx2 patch), because no API key or real model is available where they were made;
exchanges from a real local model are added by the issue about the local llama.cpp server. Re-record
with ``python -m tests.agent.cassette_scenarios`` (it overwrites the files).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import vcr

from tests.agent.scripted import Fail, ScriptedServer, Step
from tir_agent.formats.tags import PRESETS

CASSETTES = Path(__file__).resolve().parents[1] / "cassettes" / "agent"
BASE_URL = "http://scripted.test/v1"


@dataclass
class Scenario:
    """One solve: agent options, the scripted model, the problem and what the result must be."""

    name: str
    options: dict[str, Any]
    steps: list[Step | Fail]
    problem: str
    answer: str
    executions: int
    stream: bool = False
    server: dict[str, Any] = field(default_factory=dict)


SCENARIOS = [
    Scenario(
        "tools_sum_of_squares",
        {"format": "tools", "temperature": 0.0, "seed": 1},
        [
            Step(
                "I'll compute the sum of squares and check it against the closed form.",
                [
                    "squares = [i**2 for i in range(1, 11)]\nsum(squares)\n",
                    "n = 10\nn * (n + 1) * (2 * n + 1) // 6\n",
                ],
            ),
            Step("Both agree: the sum of squares from 1 to 10 is \\boxed{385}."),
        ],
        "Calculate the sum of squares from 1 to 10.",
        "385",
        2,
    ),
    Scenario(
        "chat_tags_with_hints_and_retry",
        {
            "format": "tags",
            "tags": "tool-output",
            "max_code_executions": 3,
            "add_remaining_code_executions": True,
            "prompt": "generic/tool-output",
        },
        [
            Fail(429, "Rate limit reached for requests", {"retry-after": "0"}),
            Step(
                "Let me find the roots numerically first.\n",
                ["import sympy as sp\nx = sp.symbols('x')\nsp.solve(x**2 - 5*x + 6, x)\n"],
            ),
            Step("The roots are 2 and 3. Their product:\n", ["2 * 3\n"]),
            Step("So the product of the roots is \\boxed{6}."),
        ],
        "Find the product of the roots of x^2 - 5x + 6 = 0.",
        "6",
        2,
    ),
    Scenario(
        "completions_qwen_streamed",
        {
            "format": "tags",
            "api": "completions",
            "tags": "qwen",
            "chat_template": "qwen",
            "prompt": "openmath/tir",
            "total_code_executions_in_prompt": (1, 8),
            "seed": 7,
            "max_tokens": 2048,
        },
        [
            Step(
                "We need the number of primes below 100.\n",
                ["from sympy import primepi\nprint(primepi(99))\n"],
            ),
            Step("There are \\boxed{25} primes below 100."),
        ],
        "How many primes are there below 100?",
        "25",
        1,
        stream=True,
    ),
]


def json_body(r1: Any, r2: Any) -> None:
    """vcrpy matcher: request bodies equal as parsed JSON."""
    assert json.loads(r1.body or b"null") == json.loads(r2.body or b"null")


def recorder(record_mode: str) -> vcr.VCR:
    """The vcr configuration shared by recording and replay."""
    machine = vcr.VCR(
        cassette_library_dir=str(CASSETTES),
        serializer="json",
        record_mode=record_mode,
        match_on=["method", "scheme", "host", "port", "path", "json_body"],
        filter_headers=[("authorization", "REDACTED")],
    )
    machine.register_matcher("json_body", json_body)
    return machine


async def _record(scenario: Scenario) -> None:
    from tir_agent.agent import Agent
    from tir_agent.sandbox.local import LocalSandbox

    tags = scenario.options.get("tags", "openmath")
    server = ScriptedServer(list(scenario.steps), tags=PRESETS[tags], **scenario.server)
    path = CASSETTES / f"{scenario.name}.json"
    path.unlink(missing_ok=True)
    async with LocalSandbox() as sandbox:
        agent = Agent(
            "scripted-model",
            base_url=BASE_URL,
            api_key="sk-not-a-real-key",
            sandbox=sandbox,
            http_client=server.client(),
            **scenario.options,
        )
        agent.client.backoff = 0.0
        with recorder("all").use_cassette(path.name):
            if scenario.stream:
                events = [e async for e in agent.stream(scenario.problem)]
                result = events[-1].result  # type: ignore[union-attr]
            else:
                result = await agent.asolve(scenario.problem)
    assert result.answer == scenario.answer, result


if __name__ == "__main__":
    CASSETTES.mkdir(parents=True, exist_ok=True)
    for item in SCENARIOS:
        asyncio.run(_record(item))
        print("recorded", item.name)
