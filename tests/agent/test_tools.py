"""Native tool calls only: tool_choice, parallel calls, calls beyond the budget, malformed
arguments, the assistant message sent back."""

from __future__ import annotations

import pytest

from tests.agent.conftest import Harness
from tests.agent.scripted import Step
from tir_agent.budget import RUN_OUT_HINT
from tir_agent.sandbox.base import Sandbox

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(params=[False, True], ids=["plain", "stream"])
def tools(request: pytest.FixtureRequest, sandbox: Sandbox) -> Harness:
    return Harness(name="tools", api="chat", streamed=request.param, sandbox=sandbox)


def tool_messages(body: dict) -> list[dict]:
    return [m for m in body["messages"] if m["role"] == "tool"]


async def test_parallel_calls_run_in_order_in_one_session(tools: Harness) -> None:
    agent, server = tools.agent(
        [Step("Two steps.", ["a = 2\n", "print(a * 3)\n"]), Step("\\boxed{6}")]
    )
    result = await tools.solve(agent, "p")
    assert [e.stdout for e in result.executions] == ["", "6\n"]
    second = server.requests[1]["messages"]
    ids = [c["id"] for c in second[-3]["tool_calls"]]
    assert [(m["tool_call_id"], m["content"]) for m in second[-2:]] == [
        (ids[0], ""),
        (ids[1], "6\n"),
    ]
    assert [e.call_id for e in result.executions] == ids
    assert result.generation == (
        "Two steps.\n<tool_call>\na = 2\n</tool_call>\n```output\n```\n"
        "<tool_call>\nprint(a * 3)\n</tool_call>\n```output\n6\n```\n\\boxed{6}"
    )


async def test_calls_beyond_the_budget_are_answered_not_run(tools: Harness) -> None:
    agent, server = tools.agent(
        [Step("", ["print(1)\n", "print(2)\n", "print(3)\n"]), Step("\\boxed{1}")],
        max_code_executions=1,
    )
    result = await tools.solve(agent, "p")
    assert [e.code for e in result.executions] == ["print(1)\n"]
    contents = [m["content"] for m in tool_messages(server.requests[1])]
    assert contents == ["1\n" + RUN_OUT_HINT, RUN_OUT_HINT, RUN_OUT_HINT]
    assert server.requests[1]["tool_choice"] == "none"
    assert result.status == "finished" and result.answer == "1"


async def test_malformed_arguments_are_answered_and_not_counted(tools: Harness) -> None:
    bad = [
        '{"code": "print(1)"',
        '{"cmd": "print(1)"}',
        '{"code": "print(1)", "x": 1}',
        '{"code": 5}',
    ]
    agent, server = tools.agent(
        [Step("", arguments=bad), Step("", ["print(7)\n"]), Step("\\boxed{7}")],
        max_code_executions=1,
    )
    result = await tools.solve(agent, "p")
    errors = [m["content"] for m in tool_messages(server.requests[1])]
    assert errors[0].startswith("Error: the arguments are not valid JSON (Expecting ',' delimiter")
    assert "'code' is a required property" in errors[1]
    assert "Additional properties are not allowed ('x' was unexpected)" in errors[2]
    assert "5 is not of type 'string'" in errors[3]
    assert all(
        e.endswith('Call python_exec with a JSON object {"code": "<python source>"}.')
        for e in errors
    )
    assert server.requests[1]["tool_choice"] == "auto"  # nothing was spent
    assert [e.stdout for e in result.executions] == ["7\n"]
    assert [c.error is not None for c in result.turns[0].calls] == [True] * 4
    assert result.generation.startswith("<tool_call>\nprint(7)\n</tool_call>")


NAMED = {"type": "function", "function": {"name": "python_exec"}}


@pytest.mark.parametrize(
    ("option", "wire"),
    [
        ({}, "auto"),
        ({"tool_choice": "required"}, "required"),
        ({"tool_choice": "python_exec"}, NAMED),
    ],
    ids=["default", "required", "named"],
)
async def test_tool_choice_on_every_request_then_none(
    tools: Harness, option: dict, wire: object
) -> None:
    steps = [Step("", ["print(1)\n"]), Step("", ["print(2)\n"]), Step("\\boxed{2}")]
    agent, server = tools.agent(steps, max_code_executions=2, **option)
    result = await tools.solve(agent, "p")
    assert [r["tool_choice"] for r in server.requests] == [wire, wire, "none"]
    assert all(r["tools"][0]["function"]["name"] == "python_exec" for r in server.requests)
    assert result.status == "finished" and len(result.executions) == 2


async def test_assistant_message_with_calls_has_string_content(tools: Harness) -> None:
    # llama-cpp-python's server answers HTTP 500 to "content": null; OpenAI accepts "" too.
    agent, server = tools.agent([Step("", ["print(1)\n"]), Step("\\boxed{1}")])
    result = await tools.solve(agent, "p")
    sent = server.requests[1]["messages"][-2]
    assert sent["role"] == "assistant" and sent["content"] == "" and sent["tool_calls"]
    assert result.messages[-3] == sent


async def test_streamed_name_repeated_in_every_delta_is_kept_once(sandbox: Sandbox) -> None:
    # llama.cpp repeats function.name (and the id) in every streamed tool-call delta.
    tools = Harness(name="tools", api="chat", streamed=True, sandbox=sandbox)
    code = "print('a\\nb')\n"
    steps = [Step("", [code, "print(2)\n"]), Step("\\boxed{2}")]
    agent, server = tools.agent(steps, server={"repeat_tool_name": True, "chunk": 3})
    result = await tools.solve(agent, "p")
    calls = server.requests[1]["messages"][-3]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["python_exec", "python_exec"]
    assert [c.code for c in result.turns[0].calls] == [code, "print(2)\n"]
    assert [e.stdout for e in result.executions] == ["a\nb\n", "2\n"]
