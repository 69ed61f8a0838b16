"""Exchanges with the real embedded model (the default, Qwen2.5-Coder-0.5B-Instruct Q4_K_M on
llama.cpp): tags and native tools, each over completions and over chat, plain and streamed;
shared by the live integration tests and the cassette replay.

Each scenario is one solve through the public Agent API with the local model's defaults
(:func:`tir_agent.local_model.local_agent_options`), greedy decoding and a fixed seed. The
cassettes in ``tests/cassettes/local/`` were recorded from the real llama.cpp server by
``python scripts/record_cassettes.py``; the recording server's port differs from run to run, so
every request's host is rewritten to ``local-model.test`` before it is recorded or matched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import vcr

from tir_agent.agent import Agent
from tir_agent.local_model import local_agent_options
from tir_agent.sandbox.base import Sandbox
from tir_agent.turn import Finished, SolveResult

CASSETTES = Path(__file__).resolve().parents[1] / "cassettes" / "local"
OPENAI_CASSETTES = CASSETTES.parent / "openai"
"""Recorded against OpenAI by the same script when a key is set (chat scenarios only)."""
REPLAY_URL = "http://local-model.test/v1"
"""The base URL replay uses; recorded hosts are rewritten to it."""

TOOLS_SYSTEM = "Answer with one python_exec call whose code is a single print statement."
"""Keeps the tool scenarios short: one call, then the answer."""


@dataclass(frozen=True)
class Scenario:
    """One solve against the embedded model."""

    name: str
    format: str
    api: str
    problem: str
    stream: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    known_bug: str | None = None
    """Set while the agent mishandles this exchange: live tests xfail, nothing is recorded."""
    openai_model: str | None = None
    """Recorded only against OpenAI, with this model (the Responses API: llama.cpp has none);
    its options are the scenario's own, not the local model's defaults."""

    def agent_options(self) -> dict[str, Any]:
        """Agent options: the local defaults for the format, then the scenario's own."""
        if self.openai_model is not None:
            return dict(self.options)
        options = local_agent_options(self.format, self.api)  # type: ignore[arg-type]
        if "system" in self.options or "user" in self.options:
            options.pop("prompt", None)  # the scenario's own templates replace it
        options.update(self.options)
        return options


_HINTED = {"max_code_executions": 2, "add_remaining_code_executions": True}
_TOOLS = {
    "max_code_executions": 1,
    "max_model_calls": 3,
    "system": TOOLS_SYSTEM,
    "user": "{problem}",
}
_SQUARES = "Calculate the sum of squares from 1 to 10."
_RESPONSES = {
    "api": "responses",
    "system": "Use python_exec for every computation, then check the result with a second call. "
    "Put the final answer in \\boxed{{}}.",
    "user": "{problem}",
    "reasoning_effort": "low",
    "max_code_executions": 4,
    "max_model_calls": 8,
    "seed": 0,
}
"""A reasoning model over the Responses API: several calls, its reasoning carried (store=false)."""
_POWER = "Print 2**10 with Python."

SCENARIOS = [
    Scenario("completions_tags", "tags", "completions", _SQUARES, options=_HINTED),
    Scenario("completions_tags_streamed", "tags", "completions", _SQUARES, True, _HINTED),
    Scenario("chat_tags", "tags", "chat", _SQUARES, options=_HINTED),
    Scenario("chat_tags_streamed", "tags", "chat", _SQUARES, True, _HINTED),
    Scenario("tools", "tools", "chat", _POWER, options=_TOOLS),
    Scenario("tools_streamed", "tools", "chat", _POWER, True, _TOOLS),
    Scenario("completions_tools", "tools", "completions", _POWER, options=_TOOLS),
    Scenario("completions_tools_streamed", "tools", "completions", _POWER, True, _TOOLS),
]
RECORDED = [s for s in SCENARIOS if s.known_bug is None]
OPENAI_ONLY = [
    Scenario("responses_reasoning", "tools", "responses", _SQUARES, False, _RESPONSES,
             openai_model="o4-mini"),
    Scenario("responses_reasoning_streamed", "tools", "responses", _SQUARES, True, _RESPONSES,
             openai_model="o4-mini"),
]  # fmt: skip
"""Recorded against OpenAI only (the Responses API; llama.cpp's server has none)."""


def build_agent(scenario: Scenario, base_url: str, sandbox: Sandbox, model: str = "local") -> Agent:
    """The agent of ``scenario`` against ``base_url``."""
    return Agent(
        model,
        base_url=base_url,
        api_key="sk-local-not-a-secret",
        sandbox=sandbox,
        **scenario.agent_options(),
    )


async def run(agent: Agent, scenario: Scenario) -> tuple[SolveResult, list[Any]]:
    """Solve the scenario's problem (streamed or not); the result and the stream's events."""
    if not scenario.stream:
        return await agent.asolve(scenario.problem), []
    events = [e async for e in agent.stream(scenario.problem)]
    final = events[-1]
    assert isinstance(final, Finished)
    return final.result, events


def json_body(r1: Any, r2: Any) -> None:
    """vcrpy matcher: request bodies equal as parsed JSON."""
    assert json.loads(r1.body or b"null") == json.loads(r2.body or b"null")


_VERSIONED = ("user-agent", "authorization", "host", "x-stainless-", "openai-", "x-request-id")


def _normalise_request(request: Any) -> Any:
    """Same host for recording and replay; secrets and version headers dropped."""
    parts = urlsplit(request.uri)  # /v1/... for the API, /tokenize or /extras/tokenize beside it
    request.uri = (
        REPLAY_URL.removesuffix("/v1") + parts.path + (f"?{parts.query}" if parts.query else "")
    )
    for name in list(request.headers):
        if name.lower().startswith(_VERSIONED):
            del request.headers[name]
    return request


def _normalise_response(response: dict[str, Any]) -> dict[str, Any]:
    headers = response.get("headers", {})
    for name in list(headers):
        if name.lower() in ("date", "server"):
            del headers[name]
    return response


def recorder(record_mode: str, library: Path = CASSETTES) -> vcr.VCR:
    """The vcr configuration shared by recording and replay (a replayed interaction plays once)."""
    machine = vcr.VCR(
        cassette_library_dir=str(library),
        serializer="json",
        record_mode=record_mode,
        match_on=["method", "scheme", "host", "port", "path", "json_body"],
        before_record_request=_normalise_request,
        before_record_response=_normalise_response,
        decode_compressed_response=True,
    )
    machine.register_matcher("json_body", json_body)
    return machine


def summary(result: SolveResult) -> dict[str, Any]:
    """What a replay must reproduce exactly (kept beside each cassette)."""
    return {
        "model": result.model,
        "answer": result.answer,
        "status": result.status,
        "generation": result.generation,
        "executions": [[e.code, e.status] for e in result.executions],
        "turns": len(result.turns),
        "usage": result.usage.model_dump(),
    }
