"""The user's tools in a solve (chat completions, plain and streamed): definitions sent, calls
checked and run (concurrently, results in call order), failures shown to the model, the
``max_tool_calls`` budget, results, events and the notebook display."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Literal

import pytest
from pydantic import BaseModel

from tests.agent.scripted import Step
from tests.tools.conftest import ToolHarness
from tests.tools.scripted import Calls, code
from tir_agent.agent import Agent
from tir_agent.budget import RUN_OUT_HINT
from tir_agent.errors import ConfigError
from tir_agent.tools import tool
from tir_agent.turn import EVENT_ADAPTER, SolveResult, ToolCallDone

pytestmark = pytest.mark.asyncio(loop_scope="module")


def get_temperature(city: str, unit: Literal["c", "f"] = "c") -> str:
    """Current temperature in a city.

    Args:
        city: The city's name, e.g. "Paris".
        unit: "c" for Celsius or "f" for Fahrenheit.
    """
    return f"21 {unit}" if city == "Paris" else f"unknown city {city}"


class Box(BaseModel):
    width: float
    height: float = 1.0


async def area(box: Box) -> float:
    """Area of a box."""
    await asyncio.sleep(0)
    return box.width * box.height


def explode(reason: str) -> str:
    """Always raises."""
    raise RuntimeError(f"exploded: {reason}")


def tool_messages(body: dict) -> list[dict]:
    return [m for m in body["messages"] if m["role"] == "tool"]


async def test_functions_and_code_in_one_reply_results_in_call_order(
    harness: ToolHarness,
) -> None:
    agent, server = harness.agent(
        [
            Calls(
                "Look up, compute.",
                [
                    ("get_temperature", {"city": "Paris"}),
                    code("print(6 * 7)\n"),
                    ("area", {"box": {"width": 3, "height": 2}}),
                ],
            ),
            Step("\\boxed{42}"),
        ],
        [get_temperature, area],
    )
    result = await harness.solve(agent)
    first = server.requests[0]
    assert [t["function"]["name"] for t in first["tools"]] == [
        "python_exec",
        "get_temperature",
        "area",
    ]
    temperature = first["tools"][1]["function"]
    assert temperature["strict"] is True
    assert temperature["description"] == "Current temperature in a city."
    assert temperature["parameters"]["properties"]["unit"]["anyOf"][0] == {
        "enum": ["c", "f"],
        "type": "string",
    }
    assert [(m["tool_call_id"], m["content"]) for m in tool_messages(server.requests[1])] == [
        ("call_1_0", "21 c"),
        ("call_1_1", "42\n"),
        ("call_1_2", "6.0"),
    ]
    assert [e.code for e in result.executions] == ["print(6 * 7)\n"]
    assert [(c.name, c.arguments, c.output, c.failed) for c in result.tool_calls] == [
        ("get_temperature", {"city": "Paris"}, "21 c", False),
        ("area", {"box": {"width": 3, "height": 2}}, "6.0", False),
    ]
    assert [c.call_id for c in result.tool_calls] == ["call_1_0", "call_1_2"]
    # The generation is the code transcript: tool calls are in tool_calls, not in it.
    assert result.generation == (
        "Look up, compute.\n<tool_call>\nprint(6 * 7)\n</tool_call>\n```output\n42\n```\n"
        "\\boxed{42}"
    )
    assert SolveResult.model_validate_json(result.model_dump_json()) == result
    if harness.streamed:
        done = [e for e in harness.events if isinstance(e, ToolCallDone)]
        # Events come as calls finish (concurrently); the result lists them in call order.
        assert sorted(e.tool_call.name for e in done) == ["area", "get_temperature"]
        assert EVENT_ADAPTER.validate_json(EVENT_ADAPTER.dump_json(done[0])) == done[0]


async def test_concurrent_calls(harness: ToolHarness) -> None:
    """Two async tools that each wait for the other finish only when run concurrently; a sync
    one runs in a worker thread, off the event loop."""
    first, second = asyncio.Event(), asyncio.Event()
    threads: list[str] = []

    async def ping() -> str:
        """Signals, then waits for pong."""
        first.set()
        await asyncio.wait_for(second.wait(), 5)
        return "ping done"

    async def pong() -> str:
        """Waits for ping, then signals."""
        await asyncio.wait_for(first.wait(), 5)
        second.set()
        return "pong done"

    def where() -> str:
        """The thread it runs in."""
        threads.append(threading.current_thread().name)
        return "here"

    agent, _ = harness.agent(
        [Calls("", [("ping", {}), ("pong", {}), ("where", {})]), Step("\\boxed{1}")],
        [ping, pong, where],
    )
    loop_thread = threading.current_thread().name
    result = await harness.solve(agent)
    assert [c.output for c in result.tool_calls] == ["ping done", "pong done", "here"]
    assert threads and threads[0] != loop_thread


async def test_problems_are_told_to_the_model_and_the_solve_goes_on(
    harness: ToolHarness,
) -> None:
    agent, server = harness.agent(
        [
            Calls(
                "",
                [
                    ("get_temperature", '{"city": "Paris"'),
                    ("get_temperature", {"unit": "c"}),
                    ("get_temperature", {"city": 5}),
                    ("get_temperature", {"city": "Paris", "unit": "k"}),
                    ("get_weather", {"city": "Paris"}),
                    ("explode", {"reason": "why not"}),
                    ("get_temperature", "[1, 2]"),
                ],
            ),
            Calls("", [("get_temperature", {"city": "Paris", "unit": "f"})]),
            Step("\\boxed{21}"),
        ],
        [get_temperature, explode],
    )
    result = await harness.solve(agent)
    outputs = [m["content"] for m in tool_messages(server.requests[1])]
    assert outputs == [
        "Error: the arguments of get_temperature are not valid JSON (Expecting ',' delimiter "
        "at position 16). Send a JSON object of its parameters.",
        "Error: invalid arguments for get_temperature: arguments: 'city' is a required property.",
        "Error: invalid arguments for get_temperature: city: 5 is not of type 'string'.",
        "Error: invalid arguments for get_temperature: unit: 'k' is not one of ['c', 'f'].",
        "Error: unknown tool 'get_weather'. The tools are: python_exec, get_temperature, explode.",
        "Error: explode raised RuntimeError: exploded: why not",
        "Error: the arguments of get_temperature must be a JSON object of its parameters, not "
        "list [1, 2]",
    ]
    assert [c.failed for c in result.tool_calls] == [True] * 7 + [False]
    assert result.tool_calls[-1].output == "21 f"
    assert result.tool_calls[0].arguments == {}
    assert result.tool_calls[0].raw_arguments == '{"city": "Paris"'
    assert result.status == "finished" and result.answer == "21"


async def test_null_for_an_optional_parameter_uses_its_default(harness: ToolHarness) -> None:
    """Strict mode makes optional parameters required and nullable: null means the default."""
    agent, _ = harness.agent(
        [
            Calls(
                "",
                [
                    ("get_temperature", {"city": "Paris", "unit": None}),
                    ("area", {"box": {"width": 2, "height": None}}),
                ],
            ),
            Step("done"),
        ],
        [get_temperature, area],
    )
    result = await harness.solve(agent)
    assert [c.output for c in result.tool_calls] == ["21 c", "2.0"]


async def test_timeout_per_call(harness: ToolHarness) -> None:
    async def slow() -> str:
        """Takes long."""
        await asyncio.sleep(30)
        return "late"

    def quick() -> str:
        """Returns at once."""
        return "quick"

    agent, _ = harness.agent(
        [Calls("", [("slow", {}), ("quick", {})]), Step("done")],
        [tool(slow, timeout=0.2), quick],
        tool_timeout=20,
    )
    result = await harness.solve(agent)
    assert [(c.output, c.failed) for c in result.tool_calls] == [
        ("Error: slow timed out after 0.2 seconds.", True),
        ("quick", False),
    ]


async def test_max_tool_calls_withdraws_the_tools_then_a_final_round(
    harness: ToolHarness,
) -> None:
    agent, server = harness.agent(
        [
            Calls("", [("get_temperature", {"city": "Paris"}), ("get_temperature", "{")]),
            Calls(
                "",
                [("get_temperature", {"city": "Paris"}), ("get_temperature", {"city": "Rome"})],
            ),
            Calls("", [code("print(1)\n")]),
            Step("\\boxed{1}"),
        ],
        [get_temperature],
        max_tool_calls=2,
        max_code_executions=1,
    )
    result = await harness.solve(agent)
    run_out = (
        "```system\nYou have run out of tool calls! You can no longer call get_temperature. "
        "Continue solving the problem without them.\n```\n"
    )
    # A malformed call does not spend the budget; the second valid call is the last allowed.
    assert [(c.output, c.failed) for c in result.tool_calls] == [
        ("21 c", False),
        (result.tool_calls[1].output, True),
        ("21 c\n" + run_out, False),
        (run_out, True),
    ]
    names = [[t["function"]["name"] for t in body["tools"]] for body in server.requests]
    assert names == [
        ["python_exec", "get_temperature"],
        ["python_exec", "get_temperature"],
        ["python_exec"],  # the tools' budget is spent: only code remains
        ["python_exec", "get_temperature"],  # everything spent: all sent, none allowed
    ]
    assert [body["tool_choice"] for body in server.requests] == ["auto"] * 3 + ["none"]
    assert tool_messages(server.requests[3])[-1]["content"] == "1\n" + RUN_OUT_HINT
    assert result.status == "finished" and result.answer == "1"


async def test_tools_only_round_after_the_code_budget(harness: ToolHarness) -> None:
    agent, server = harness.agent(
        [
            Calls("", [code("print(1)\n")]),
            Calls("", [code("print(2)\n"), ("get_temperature", {"city": "Paris"})]),
            Step("\\boxed{21}"),
        ],
        [get_temperature],
        max_code_executions=1,
        tool_choice="python_exec",
    )
    result = await harness.solve(agent)
    second = server.requests[1]
    assert [t["function"]["name"] for t in second["tools"]] == ["get_temperature"]
    assert second["tool_choice"] == "auto"  # the named python_exec is withdrawn
    assert [m["content"] for m in tool_messages(server.requests[2])] == [
        "1\n" + RUN_OUT_HINT,
        RUN_OUT_HINT,  # python_exec was withdrawn: the call is answered, not run
        "21 c",
    ]
    assert len(result.executions) == 1 and result.answer == "21"


async def test_display_and_record_show_tool_calls(harness: ToolHarness) -> None:
    agent, _ = harness.agent(
        [Calls("", [("get_temperature", {"city": "Paris"})]), Step("\\boxed{21}")],
        [get_temperature],
    )
    result = await harness.solve(agent)
    markdown = result._repr_markdown_()
    assert "1 tool calls" in markdown
    assert '`get_temperature({"city": "Paris"})` → `\'21 c\'`' in markdown
    html = result._repr_html_()
    assert "get_temperature({&quot;city&quot;: &quot;Paris&quot;})" in html
    assert json.loads(result.model_dump_json())["tool_calls"][0]["output"] == "21 c"


async def test_configuration_errors() -> None:
    with pytest.raises(ConfigError, match="may not be named 'python_exec'"):
        Agent("m", base_url="http://x.test/v1", tools=[tool(explode, name="python_exec")])
    with pytest.raises(ConfigError, match="Two tools are named 'explode'"):
        Agent("m", base_url="http://x.test/v1", tools=[explode, explode])
    with pytest.raises(ConfigError, match="not int"):
        Agent("m", base_url="http://x.test/v1", tools=[5])


async def test_closing_the_stream_cancels_a_running_tool(sandbox: object) -> None:
    import contextlib

    from tir_agent.turn import CodeComplete

    started, cancelled = asyncio.Event(), asyncio.Event()

    async def wait_long() -> str:
        """Waits."""
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "done"

    agent, server = ToolHarness(streamed=True, sandbox=sandbox).agent(
        [Calls("", [("wait_long", {})]), Step("x")], [wait_long]
    )
    async with contextlib.aclosing(agent.stream("p")) as events:
        async for event in events:
            if isinstance(event, CodeComplete):
                await asyncio.wait_for(started.wait(), 10)
                break
    await asyncio.wait_for(cancelled.wait(), 10)
    assert len(server.requests) == 1
