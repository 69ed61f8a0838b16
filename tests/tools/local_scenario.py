"""Real exchanges with the embedded model calling a user's function, kept as cassettes in
tests/cassettes/tools/.

The embedded model (Qwen2.5-Coder-0.5B-Instruct Q4_K_M on llama.cpp, greedy, seed 0) is offered
``get_temperature``. ``local_get_temperature``: native tools over the chat API (the server renders
the tool into the prompt with the GGUF's own chat template, Qwen's Hermes ``<tools>`` block).
``local_tags_get_temperature``: the embedded model's default format, ``qwen`` tags over
completions, with the tools section in the system message (tir_agent/tools/hermes.py). Re-record
with ``python -m tests.tools.local_scenario [NAME ...]`` (it starts the embedded server and
overwrites the files).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Literal

from tests.local.scenarios import recorder
from tir_agent.agent import Agent
from tir_agent.local_model import local_agent_options
from tir_agent.sandbox.base import Sandbox
from tir_agent.turn import SolveResult

CASSETTES = Path(__file__).resolve().parents[1] / "cassettes" / "tools"
NAME = "local_get_temperature"
SCENARIOS = {NAME: "tools", "local_tags_get_temperature": "tags"}
"""Cassette name -> the format the embedded model's defaults are taken for."""
PROBLEM = "What is the temperature in Paris right now?"


def get_temperature(city: str, unit: Literal["c", "f"] = "c") -> str:
    """Current temperature in a city.

    Args:
        city: The city's name, e.g. "Paris".
        unit: "c" for Celsius or "f" for Fahrenheit.
    """
    return {"Paris": "21", "Oslo": "4"}.get(city, "unknown") + " " + unit


def build_agent(base_url: str, sandbox: Sandbox, name: str = NAME) -> Agent:
    """The embedded model's defaults for the scenario's format, one tool call allowed, no code."""
    options: dict[str, Any] = local_agent_options(SCENARIOS[name])  # type: ignore[arg-type]
    options.pop("prompt", None)
    options.update(
        system="Use the get_temperature tool to answer.",
        user="{problem}",
        max_code_executions=0,
        max_tool_calls=1,
        max_model_calls=3,
    )
    return Agent(
        "local",
        base_url=base_url,
        api_key="sk-local-not-a-secret",
        sandbox=sandbox,
        tools=[get_temperature],
        **options,
    )


def summary(result: SolveResult) -> dict[str, Any]:
    """What a replay must reproduce."""
    return {
        "status": result.status,
        "tool_calls": [
            c.model_dump(include={"name", "arguments", "output", "failed"})
            for c in result.tool_calls
        ],
        "final": result.messages[-1]["content"],
        "model_calls": len(result.turns),
    }


async def _record(base_url: str, names: list[str]) -> None:
    from tir_agent.sandbox.local import LocalSandbox

    CASSETTES.mkdir(parents=True, exist_ok=True)
    async with LocalSandbox() as sandbox:
        for name in names:
            (CASSETTES / f"{name}.json").unlink(missing_ok=True)
            agent = build_agent(base_url, sandbox, name)
            with recorder("all", CASSETTES).use_cassette(f"{name}.json"):
                result = await agent.asolve(PROBLEM)
            await agent.aclose()
            (CASSETTES / f"{name}.summary.json").write_text(
                json.dumps(summary(result), indent=2, ensure_ascii=False) + "\n"
            )
            print(name, json.dumps(summary(result), indent=2))


def main() -> None:
    """Start the embedded server and record the scenarios named (default: all)."""
    import sys

    from tir_agent.local_model import LlamaCppServer

    names = sys.argv[1:] or list(SCENARIOS)
    with LlamaCppServer() as server:
        asyncio.run(_record(server.base_url, names))


if __name__ == "__main__":
    main()
