"""One parametrized fixture runs every agent behaviour in every format.

``fmt`` is one of: native tools (chat), tags in chat messages, tags in a completion prompt; each
plain and streamed. The model is a :class:`~tests.agent.scripted.ScriptedServer` (real wire
format through an httpx2 transport); the sandbox is a real LocalSandbox, one per test module.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio

from tests.agent.scripted import Fail, ScriptedServer, Step
from tir_agent.agent import Agent, Problem
from tir_agent.formats.tags import PRESETS, TagPreset
from tir_agent.sandbox.local import LocalSandbox
from tir_agent.turn import Event, Finished, SolveResult


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sandbox() -> AsyncIterator[LocalSandbox]:
    """One real sandbox per test module (sessions are still fresh per solve)."""
    async with LocalSandbox() as box:
        yield box


@dataclass
class Harness:
    """Builds an agent of one format against a scripted server, and solves with it."""

    name: str
    api: str
    streamed: bool
    sandbox: Any
    tags: TagPreset = field(default_factory=lambda: PRESETS["openmath"])
    events: list[Event] = field(default_factory=list)

    @property
    def is_tools(self) -> bool:
        return self.name == "tools"

    def agent(
        self, steps: list[Step | Fail], *, server: dict[str, Any] | None = None, **options: Any
    ) -> tuple[Agent, ScriptedServer]:
        """An agent of this format and the server that plays ``steps``."""
        tags = options.pop("tags", "openmath")
        self.tags = PRESETS[tags] if isinstance(tags, str) else tags
        scripted = ScriptedServer(steps, tags=self.tags, **(server or {}))
        options.setdefault("user", "{problem}")
        agent = Agent(
            options.pop("model", "scripted-model"),
            base_url="http://scripted.test/v1",
            api_key=options.pop("api_key", "test-key"),
            format="tools" if self.is_tools else "tags",
            api=self.api,
            tags=tags,
            sandbox=self.sandbox,
            http_client=scripted.client(),
            **options,
        )
        agent.client.backoff = 0.01
        return agent, scripted

    async def solve(self, agent: Agent, problem: Problem, **kwargs: Any) -> SolveResult:
        """``asolve``, or ``stream`` collecting the events, as this variant says."""
        if not self.streamed:
            return await agent.asolve(problem, **kwargs)
        self.events = [event async for event in agent.stream(problem, **kwargs)]
        last = self.events[-1]
        assert isinstance(last, Finished)
        return last.result


FORMATS = [
    ("tools", "chat", False),
    ("chat-tags", "chat", False),
    ("completions", "completions", False),
    ("tools", "chat", True),
    ("chat-tags", "chat", True),
    ("completions", "completions", True),
]


@pytest.fixture(params=FORMATS, ids=[f"{n}{'-stream' if s else ''}" for n, _, s in FORMATS])
def fmt(request: pytest.FixtureRequest, sandbox: LocalSandbox) -> Harness:
    """Each format, plain and streamed."""
    name, api, streamed = request.param
    return Harness(name=name, api=api, streamed=streamed, sandbox=sandbox)
