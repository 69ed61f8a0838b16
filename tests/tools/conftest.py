"""Fixtures of the tool tests: a real sandbox per module, and an agent with the user's tools
against the scripted endpoint (plain and streamed)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio

from tests.agent.scripted import Fail, Step
from tests.tools.scripted import Calls, ToolsServer
from tir_agent.agent import Agent
from tir_agent.formats.tags import PRESETS
from tir_agent.sandbox.local import LocalSandbox
from tir_agent.turn import Event, Finished, SolveResult


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sandbox() -> AsyncIterator[LocalSandbox]:
    """One real sandbox per test module (sessions are still fresh per solve)."""
    async with LocalSandbox() as box:
        yield box


@dataclass
class ToolHarness:
    """Builds agents with tools against a scripted server; solves plainly or streamed."""

    streamed: bool
    sandbox: Any
    events: list[Event] = field(default_factory=list)

    def agent(
        self, steps: list[Step | Fail | Calls], tools: Sequence[Any], **options: Any
    ) -> tuple[Agent, ToolsServer]:
        server = ToolsServer(steps, tags=PRESETS["openmath"])
        options.setdefault("user", "{problem}")
        agent = Agent(
            "scripted-model",
            base_url="http://scripted.test/v1",
            api_key="test-key",
            sandbox=self.sandbox,
            http_client=server.client(),
            tools=tools,
            **options,
        )
        agent.client.backoff = 0.01
        return agent, server

    async def solve(self, agent: Agent, problem: str = "p") -> SolveResult:
        if not self.streamed:
            return await agent.asolve(problem)
        self.events = [event async for event in agent.stream(problem)]
        last = self.events[-1]
        assert isinstance(last, Finished)
        return last.result


@pytest.fixture(params=[False, True], ids=["plain", "stream"])
def harness(request: pytest.FixtureRequest, sandbox: LocalSandbox) -> ToolHarness:
    return ToolHarness(streamed=request.param, sandbox=sandbox)
