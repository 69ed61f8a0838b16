"""A real exchange with the embedded model calling a user's function, kept as a cassette in
tests/cassettes/tools/.

The embedded model (Qwen2.5-Coder-0.5B-Instruct Q4_K_M on llama.cpp, greedy, seed 0) is offered
``get_temperature`` through the chat API: the server renders the tool into the prompt with the
GGUF's own chat template (Qwen's Hermes-style ``<tools>`` block) and the model answers with a
``<tool_call>`` the agent runs. Re-record with ``python -m tests.tools.local_scenario`` (it starts
the embedded server and overwrites the files).
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
PROBLEM = "What is the temperature in Paris right now?"


def get_temperature(city: str, unit: Literal["c", "f"] = "c") -> str:
    """Current temperature in a city.

    Args:
        city: The city's name, e.g. "Paris".
        unit: "c" for Celsius or "f" for Fahrenheit.
    """
    return {"Paris": "21", "Oslo": "4"}.get(city, "unknown") + " " + unit


def build_agent(base_url: str, sandbox: Sandbox) -> Agent:
    """The embedded model's tools defaults, one tool call allowed and no code."""
    options: dict[str, Any] = local_agent_options("tools")
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


async def _record(base_url: str) -> None:
    from tir_agent.sandbox.local import LocalSandbox

    CASSETTES.mkdir(parents=True, exist_ok=True)
    (CASSETTES / f"{NAME}.json").unlink(missing_ok=True)
    async with LocalSandbox() as sandbox:
        agent = build_agent(base_url, sandbox)
        with recorder("all", CASSETTES).use_cassette(f"{NAME}.json"):
            result = await agent.asolve(PROBLEM)
        await agent.aclose()
    (CASSETTES / f"{NAME}.summary.json").write_text(
        json.dumps(summary(result), indent=2, ensure_ascii=False) + "\n"
    )
    print(json.dumps(summary(result), indent=2))


def main() -> None:
    """Start the embedded server and record."""
    from tir_agent.local_model import LlamaCppServer

    with LlamaCppServer() as server:
        asyncio.run(_record(server.base_url))


if __name__ == "__main__":
    main()
