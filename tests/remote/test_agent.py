"""The agent and the batch pipeline on remote sandboxes: ``Agent(sandbox=RemoteSandbox(url))``
and ``sandbox.url`` in a GenerateConfig, with real sandbox servers and a scripted model speaking
the OpenAI wire format (tests/agent/scripted.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.agent.scripted import ScriptedServer, Step
from tests.servers import ServerProcess, start_server
from tir_agent.agent import Agent
from tir_agent.batch import generate
from tir_agent.config import load_config
from tir_agent.formats.tags import PRESETS
from tir_agent.sandbox.remote import LOST_NOTE, RemoteSandbox

pytestmark = pytest.mark.asyncio(loop_scope="module")


def make_agent(scripted: ScriptedServer, sandbox: RemoteSandbox) -> Agent:
    return Agent(
        "scripted-model",
        base_url="http://scripted.test/v1",
        api_key="test-key",
        format="tags",
        api="chat",
        tags="openmath",
        sandbox=sandbox,
        http_client=scripted.client(),
        user="{problem}",
    )


async def test_agent_solves_with_a_remote_sandbox() -> None:
    steps = [
        Step(text="Compute.", code=["import math\nx = math.factorial(5)\nprint(x)"]),
        Step(text="Check.", code=["x // 2"]),
        Step(text="The answer is \\boxed{60}."),
    ]
    scripted = ScriptedServer(list(steps), tags=PRESETS["openmath"])
    with start_server("preload=[]") as server:
        async with RemoteSandbox(server.url) as sandbox:
            agent = make_agent(scripted, sandbox)
            try:
                result = await agent.asolve("What is 5!/2?")
            finally:
                await agent.aclose()
            assert sandbox.open_sessions == {server.url: 0}  # the solve closed its session
    assert result.answer == "60" and result.status == "finished"
    assert [e.stdout for e in result.executions] == ["120\n", "60\n"]
    assert "120" in json.dumps(scripted.requests[1])  # the output went back to the model


class KillingServer(ScriptedServer):
    """Kills a sandbox server when the model is asked for its reply number ``at``."""

    def __init__(self, steps: list[Step], victim: ServerProcess, at: int) -> None:
        super().__init__(list(steps), tags=PRESETS["openmath"])
        self.victim, self.at = victim, at

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        if len(self.requests) == self.at:
            self.victim.kill()
        return super().handle(request)


@pytest.mark.slow
async def test_a_server_dying_mid_solve_is_shown_to_the_model_and_the_solve_goes_on() -> None:
    steps = [
        Step(code=["x = 41"]),
        Step(code=["print(x + 1)"]),  # the session's server is killed before this cell
        Step(code=["x = 41\nprint(x + 1)"]),  # the model re-runs what it needs
        Step(text="\\boxed{42}"),
    ]
    with start_server("preload=[]") as a, start_server("preload=[]") as b:
        scripted = KillingServer(steps, victim=a, at=1)
        async with RemoteSandbox([a.url, b.url]) as sandbox:
            agent = make_agent(scripted, sandbox)
            try:
                result = await agent.asolve("What is 41 + 1?")
            finally:
                await agent.aclose()
    assert result.answer == "42"
    first, lost, again = result.executions
    assert first.status == "completed"
    assert lost.status == "error" and lost.state == "lost" and lost.stderr == LOST_NOTE
    assert again.status == "completed" and again.stdout == "42\n"
    assert "sandbox server running this Python session was lost" in json.dumps(scripted.requests[2])


async def test_generate_runs_code_on_the_server_of_sandbox_url(tmp_path: Path) -> None:
    """``++sandbox.url=...`` sends the batch's code to the server (whose sandbox sets an
    environment variable the local one does not have)."""
    rows = [{"problem": "Where does the code run?"}]
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    steps = [Step(code=["import os\nprint(os.environ.get('WHERE'))"]), Step(text="\\boxed{1}")]
    scripted = ScriptedServer(list(steps), tags=PRESETS["openmath"])
    with start_server("preload=[]", "env={WHERE: on-the-server}") as server:
        config = load_config(
            overrides=["model=scripted", "server_address=http://scripted.test/v1", "api_key=k",
                       "prompt_config=generic/math", "max_retries=0",
                       f"++sandbox.url={server.url}", "++sandbox.timeout=7"],
            env={},
        )  # fmt: skip
        assert config.sandbox.url == server.url
        await generate(inp, out, config, http_client=scripted.client())
    record: dict[str, Any] = json.loads(out.read_text())
    assert "on-the-server" in record["generation"]
    assert record["code_rounds_executed"] == 1


async def test_sandbox_url_may_list_several_servers() -> None:
    config = load_config(
        overrides=["model=m", "++sandbox.url=[http://127.0.0.1:6001, http://127.0.0.1:6002]"],
        env={},
    )
    assert config.sandbox.url == ["http://127.0.0.1:6001", "http://127.0.0.1:6002"]
    assert RemoteSandbox(config.sandbox.url).urls == config.sandbox.url
