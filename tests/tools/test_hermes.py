"""The user's tools in the tag formats (chat and completions), Hermes style: the ``<tools>``
section in the system message, ``<tool_call>`` replies, ``<tool_response>`` answers; beside code
between the preset's tags (``openmath`` shares the ``<tool_call>`` tag with code)."""

from __future__ import annotations

import json
from typing import Any, Literal

import pytest

from tests.agent.scripted import ScriptedServer, Step
from tir_agent.agent import Agent
from tir_agent.formats.tags import PRESETS
from tir_agent.sandbox.base import Sandbox
from tir_agent.tools.hermes import offer_tools, tools_block
from tir_agent.turn import ToolCallDone

pytestmark = pytest.mark.asyncio(loop_scope="module")


def get_temperature(city: str, unit: Literal["c", "f"] = "c") -> str:
    """Current temperature in a city.

    Args:
        city: The city's name.
        unit: "c" or "f".
    """
    return f"21 {unit}"


def hermes(name: str, arguments: dict[str, Any]) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call>"


def build(
    api: str,
    tags: str,
    steps: list[Step],
    sandbox: Sandbox,
    server_options: dict[str, Any] | None = None,
    **options: Any,
) -> tuple[Agent, ScriptedServer]:
    server = ScriptedServer(steps, tags=PRESETS[tags], **(server_options or {}))
    agent = Agent(
        "scripted-model",
        base_url="http://scripted.test/v1",
        api_key="k",
        format="tags",
        api=api,
        tags=tags,
        sandbox=sandbox,
        http_client=server.client(),
        tools=[get_temperature],
        **options,
    )
    return agent, server


CASES = [
    (api, tags, stream)
    for api in ("chat", "completions")
    for tags in ("openmath", "qwen")
    for stream in (False, True)
]


@pytest.mark.parametrize(
    ("api", "tags", "stream"), CASES, ids=[f"{a}-{t}{'-stream' if s else ''}" for a, t, s in CASES]
)
async def test_a_call_its_response_and_code_beside_it(
    api: str, tags: str, stream: bool, sandbox: Sandbox
) -> None:
    call = hermes("get_temperature", {"city": "Paris"})
    agent, server = build(
        api,
        tags,
        [
            Step("Let me check.\n" + call + "\nignored after the call"),
            Step("Now compute.", ["print(21 * 2)"]),
            Step("\\boxed{42}"),
        ],
        sandbox,
        system="Solve it.",
        user="{problem}",
    )
    if stream:
        events = [e async for e in agent.stream("p")]
        result = events[-1].result  # type: ignore[union-attr]
        assert [e.tool_call.name for e in events if isinstance(e, ToolCallDone)] == [
            "get_temperature"
        ]
    else:
        result = await agent.asolve("p")
    first = server.requests[0]
    assert "</tool_call>" in first["stop"]
    preset = PRESETS[tags]
    if api == "chat":
        assert first["messages"][0]["content"] == "Solve it." + tools_block(
            [
                {
                    "type": "function",
                    "function": {
                        "name": "get_temperature",
                        "description": "Current temperature in a city.",
                        "parameters": get_temperature_schema(),
                    },
                }
            ]
        )
        assert server.requests[1]["messages"][-1] == {
            "role": "user",
            "content": "<tool_response>\n21 c\n</tool_response>",
        }
    else:
        assert "# Tools" in first["prompt"] and '"name": "get_temperature"' in first["prompt"]
        assert server.requests[
            1
        ][
            "prompt"
        ].endswith(  # a user turn, as Qwen's template has it
            call + "<|im_end|>\n<|im_start|>user\n<tool_response>\n21 c\n</tool_response>"
            "<|im_end|>\n<|im_start|>assistant\n"
        )
    assert [(c.name, c.arguments, c.output, c.failed) for c in result.tool_calls] == [
        ("get_temperature", {"city": "Paris"}, "21 c", False)
    ]
    assert [e.stdout for e in result.executions] == ["42\n"]
    block = (
        preset.code_begin
        + ("" if preset.code_begin.endswith("\n") else "\n")
        + "print(21 * 2)\n"
        + preset.code_end
    )
    assert result.generation.startswith(
        "Let me check.\n" + call + "<tool_response>\n21 c\n</tool_response>\nNow compute.\n" + block
    )
    assert result.answer == "42" and result.status == "finished"


def get_temperature_schema() -> dict[str, Any]:
    from tir_agent.tools import FunctionTool

    return FunctionTool(get_temperature).parameters


async def test_openmath_code_that_is_not_a_call_still_runs(sandbox: Sandbox) -> None:
    """With openmath tags a <tool_call> block is code unless it is a JSON call of a tool."""
    agent, _ = build(
        "chat",
        "openmath",
        [
            Step("", [json.dumps({"name": "other", "arguments": {}})]),
            Step("", ["print('code')"]),
            Step("done"),
        ],
        sandbox,
        user="{problem}",
    )
    result = await agent.asolve("p")
    assert result.tool_calls == []
    assert [e.status for e in result.executions] == ["completed", "completed"]
    assert result.executions[1].stdout == "code\n"


async def test_invalid_arguments_and_the_tool_budget(sandbox: Sandbox) -> None:
    agent, server = build(
        "chat",
        "qwen",
        [
            Step(hermes("get_temperature", {"unit": "c"})),
            Step(hermes("get_temperature", {"city": "Paris"})),
            Step(hermes("get_temperature", {"city": "Rome"})),
            Step("\\boxed{21}"),
        ],
        sandbox,
        user="{problem}",
        max_tool_calls=1,
    )
    result = await agent.asolve("p")
    answers = [m["content"] for m in server.requests[3]["messages"] if m["role"] == "user"][1:]
    run_out = (
        "```system\nYou have run out of tool calls! You can no longer call get_temperature. "
        "Continue solving the problem without them.\n```\n"
    )
    assert answers == [
        "<tool_response>\nError: invalid arguments for get_temperature: arguments: 'city' is a "
        "required property.\n</tool_response>",
        "<tool_response>\n21 c\n" + run_out + "\n</tool_response>",
        "<tool_response>\n" + run_out + "\n</tool_response>",
    ]
    assert result.answer == "21"


async def test_offer_tools_adds_a_system_message_when_there_is_none() -> None:
    messages = offer_tools([{"role": "user", "content": "q"}], [])
    assert messages[0]["role"] == "system"
    assert messages[0]["content"].startswith("# Tools\n\nYou may call one or more functions")
    assert messages[1] == {"role": "user", "content": "q"}


async def test_whichever_completes_first_runs(sandbox: Sandbox) -> None:
    """An endpoint that rejects stop strings writes on: code before a call runs, the call is
    dropped with the rest; a call before code is the call."""
    agent, _ = build(
        "chat",
        "qwen",
        [
            Step("", ["print(1)"], after=hermes("get_temperature", {"city": "Paris"})),
            Step(hermes("get_temperature", {"city": "Oslo"}) + "\n```python\nprint(2)\n```\n"),
            Step("\\boxed{1}"),
        ],
        sandbox,
        {"reject": ("stop",)},
        user="{problem}",
    )
    result = await agent.asolve("p")
    assert [e.stdout for e in result.executions] == ["1\n"]
    assert [c.arguments for c in result.tool_calls] == [{"city": "Oslo"}]
    assert result.turns[0].discarded.startswith("<tool_call>")


async def test_without_a_system_message_the_templates_default_leads(sandbox: Sandbox) -> None:
    """Qwen's template writes its default system text before the tools section."""
    from tir_agent.chat_templates import QWEN_DEFAULT_SYSTEM

    agent, server = build("completions", "qwen", [Step("\\boxed{1}")], sandbox, user="{problem}")
    await agent.asolve("p")
    prompt = server.requests[0]["prompt"]
    assert prompt.startswith("<|im_start|>system\n" + QWEN_DEFAULT_SYSTEM + "\n\n# Tools\n\n")
    assert prompt.count(QWEN_DEFAULT_SYSTEM) == 1


async def test_a_call_whose_tags_the_server_dropped(sandbox: Sandbox) -> None:
    """llama-cpp-python returns Qwen's <tool_call> tokens as nothing: a reply that ends with a
    bare call of a tool is that call (its tags restored); a bare call followed by more text is
    text."""
    bare = json.dumps({"name": "get_temperature", "arguments": {"city": "Paris"}})
    agent, server = build(
        "completions",
        "qwen",
        [
            Step("Checking.\n" + bare + "\n"),
            Step(bare + " is how I would ask."),
            Step("\\boxed{21}"),
        ],
        sandbox,
        user="{problem}",
    )
    result = await agent.asolve("p")
    assert [c.arguments for c in result.tool_calls] == [{"city": "Paris"}]
    restored = "Checking.\n<tool_call>\n" + bare + "\n</tool_call>"
    assert server.requests[1]["prompt"].endswith(
        restored + "<|im_end|>\n<|im_start|>user\n<tool_response>\n21 c\n</tool_response>"
        "<|im_end|>\n<|im_start|>assistant\n"
    )
    assert result.generation.startswith(restored + "<tool_response>\n21 c\n</tool_response>\n")
    assert result.generation.endswith(bare + " is how I would ask.")
    assert len(server.requests) == 2
