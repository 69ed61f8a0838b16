"""The user's tool calls in batch output rows and through ``export``: the OpenAI fine-tuning
format keeps them as tool calls, with their definitions."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from tests.agent.scripted import Step
from tests.tools.conftest import ToolHarness
from tests.tools.scripted import Calls, ToolsServer, code
from tir_agent import export
from tir_agent.batch import generate
from tir_agent.config import load_config
from tir_agent.export import Block, FunctionCall, from_messages, render_tags, to_openai_finetune
from tir_agent.formats.tags import PRESETS

pytestmark = pytest.mark.asyncio(loop_scope="module")


def lookup(key: str) -> str:
    """A value from the store.

    Args:
        key: Which value.
    """
    return {"x": "6"}.get(key, "missing")


def script() -> list[Any]:
    return [
        Calls("Look it up.", [("lookup", {"key": "x"}), code("print(int('6') * 7)")]),
        Step("**Final Answer** \\boxed{42}"),
    ]


async def test_solution_messages_export_as_tool_calls(sandbox: Any) -> None:
    agent, _ = ToolHarness(streamed=False, sandbox=sandbox).agent(script(), [lookup])
    result = await agent.asolve("p")
    prompt, parts = from_messages(result.messages)
    assert [type(p).__name__ for p in parts] == ["str", "FunctionCall", "Block", "str"]
    assert parts[1] == FunctionCall("lookup", '{"key": "x"}', "6")
    # Tag transcripts have no form for a function call: the agent's generation, exactly.
    assert render_tags(parts, "openmath") == result.generation
    assert agent.toolbox is not None
    definitions = (await agent.toolbox.open()).definitions()
    line = to_openai_finetune(prompt, parts, definitions)
    assert [t["function"]["name"] for t in line["tools"]] == ["python_exec", "lookup"]
    assert line["tools"][1] == definitions[0]
    assistant = line["messages"][1]
    assert [c["function"]["name"] for c in assistant["tool_calls"]] == ["lookup", "python_exec"]
    assert assistant["tool_calls"][0]["function"]["arguments"] == '{"key": "x"}'
    assert [m["content"] for m in line["messages"][2:4]] == ["6", "42\n"]
    assert isinstance(parts[2], Block) and parts[2].stdout == "42\n"
    bare = to_openai_finetune(prompt, parts)["tools"][1]
    assert bare == {
        "type": "function",
        "function": {"name": "lookup", "parameters": {"type": "object"}},
    }


async def test_batch_rows_carry_tool_calls_and_export_keeps_them(
    tmp_path: Path, sandbox: Any
) -> None:
    server = ToolsServer(script(), tags=PRESETS["openmath"])
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"problem": "p"}) + "\n")
    out = tmp_path / "out.jsonl"
    config = load_config(
        overrides=[
            "model=scripted",
            "server_address=http://scripted.test/v1",
            "api_key=k",
            "format=tools",
            "keep_conversation=true",
            "max_retries=0",
        ],
        env={},
    )
    await generate(
        source, out, config, sandbox=sandbox, http_client=server.client(), tools=[lookup]
    )
    row = json.loads(out.read_text())
    assert row["tool_calls"] == [
        {"name": "lookup", "arguments": {"key": "x"}, "output": "6", "failed": False}
    ]
    assert row["code_rounds_executed"] == 1
    assert [t["function"]["name"] for t in row["tools"]] == ["lookup"]
    target = tmp_path / "train.jsonl"
    args = argparse.Namespace(
        files=[str(out)], output=str(target), to="openai", source="messages",
        from_tags="openmath", tags=None, enable=[], disable=[], no_filters=False,
        all_filters=False,
    )  # fmt: skip
    counts = export.run(args)
    assert counts["kept"] == 1
    line = json.loads(target.read_text())
    assert [t["function"]["name"] for t in line["tools"]] == ["python_exec", "lookup"]
    assert line["tools"][1]["function"]["parameters"]["properties"]["key"] == {
        "type": "string",
        "description": "Which value.",
    }
    calls = [c["function"]["name"] for m in line["messages"] for c in m.get("tool_calls", [])]
    assert calls == ["lookup", "python_exec"]


async def test_generate_options_reach_the_agent() -> None:
    from tir_agent.batch import agent_options

    options = agent_options(load_config(overrides=["max_tool_calls=3", "tool_timeout=5"], env={}))
    assert (options["max_tool_calls"], options["tool_timeout"]) == (3, 5)
    defaults = agent_options(load_config(overrides=[], env={}))
    assert "max_tool_calls" not in defaults and "tool_timeout" not in defaults
