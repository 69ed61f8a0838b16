"""Export: conversions between tag presets and tool-call conversations, and the §10 filters."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.agent.scripted import ScriptedServer, Step
from tir_agent.agent import Agent
from tir_agent.budget import REMAINING_HINT, RUN_OUT_HINT
from tir_agent.export import (
    DEFAULT_FILTERS,
    FILTERS,
    Block,
    Sample,
    apply_filters,
    from_messages,
    parse_tags,
    render_tags,
    to_messages,
    to_openai_finetune,
)
from tir_agent.formats.tags import PRESETS

try:
    from tir_agent.sandbox.local import LocalSandbox
except ImportError:  # until the sandbox lands: the agent tests' in-process stand-in
    from tests.agent._standin import LocalSandbox  # type: ignore[assignment]

TRACE = "Traceback (most recent call last):\n    1 / 0\nZeroDivisionError: division by zero\n"
PARTS: list[str | Block] = [
    "I'll compute {it} with `code`.\n",
    Block("d = {'a': 1}\nprint(d['a'])\n", "1\n", hint=REMAINING_HINT.format(remaining=1)),
    "Check the error:\n",
    Block("1 / 0", TRACE, status="error", hint=RUN_OUT_HINT),
    Block("print('''```output\nnot a tag\n```''')", "`x` {y} </tool_call> [/stdout]\n"),
    "So **Final Answer** \\boxed{\\frac{1}{2}}. Trailing words.",
]


@pytest.mark.parametrize("source", sorted(PRESETS))
@pytest.mark.parametrize("target", sorted(PRESETS))
def test_preset_to_preset_round_trip_is_exact(source: str, target: str) -> None:
    text = render_tags(PARTS, source)
    converted = render_tags(parse_tags(text, source), target)
    assert render_tags(parse_tags(converted, target), source) == text
    codes = [p.code for p in parse_tags(converted, target) if isinstance(p, Block)]
    assert codes == [p.code for p in PARTS if isinstance(p, Block)]


def test_parse_reads_the_exact_agent_bytes() -> None:
    text = (
        "Compute.\n<tool_call>\nprint(6)\n</tool_call>\n```output\n6\n```\n"
        + REMAINING_HINT.format(remaining=7)
        + "Done \\boxed{6}."
    )
    parts = parse_tags(text, "openmath")
    assert parts == [
        "Compute.\n",
        Block("print(6)", "6\n", hint=REMAINING_HINT.format(remaining=7)),
        "Done \\boxed{6}.",
    ]
    assert render_tags(parts, "openmath") == text


def test_llama_output_keeps_status_and_streams() -> None:
    block = Block("x", "out\n", "warn\n", status="timeout", hint=RUN_OUT_HINT)
    text = render_tags(["a\n", block, "b"], "llama3")
    assert parse_tags(text, "llama3") == ["a\n", block, "b"]
    qwen = render_tags(parse_tags(text, "llama3"), "qwen")
    assert "```output\nout\nwarn\n```\n" + RUN_OUT_HINT in qwen


def test_unexecuted_and_unclosed_blocks() -> None:
    text = "a\n<tool_call>\nprint(1)\n</tool_call>\nb <tool_call>\nopen"
    parts = parse_tags(text, "openmath")
    assert parts == ["a\n", Block("print(1)"), "\nb <tool_call>\nopen"]
    assert render_tags(parts, "openmath") == text


def test_tags_to_tool_calls_and_back() -> None:
    prompt = [{"role": "user", "content": "q"}]
    messages = to_messages(PARTS)
    assert [m["role"] for m in messages] == [
        "assistant", "tool", "assistant", "tool", "tool", "assistant",
    ]  # fmt: skip
    call = messages[0]["tool_calls"][0]
    assert json.loads(call["function"]["arguments"]) == {"code": PARTS[1].code}  # type: ignore[union-attr]
    assert messages[1] == {
        "role": "tool", "tool_call_id": call["id"],
        "content": "1\n" + REMAINING_HINT.format(remaining=1),
    }  # fmt: skip
    assert len(messages[2]["tool_calls"]) == 2  # consecutive blocks: parallel calls
    back_prompt, back = from_messages(prompt + messages)
    assert back_prompt == prompt and back == PARTS


def test_refused_calls_are_left_out() -> None:
    messages = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "python_exec", "arguments": "{bad"}},
            {"id": "b", "type": "function",
             "function": {"name": "python_exec", "arguments": '{"code": "print(2)"}'}},
            {"id": "c", "type": "function",
             "function": {"name": "python_exec", "arguments": '{"code": "print(3)"}'}},
        ]},
        {"role": "tool", "tool_call_id": "a", "content": "Error: the arguments are not valid JSON"},
        {"role": "tool", "tool_call_id": "b", "content": "2\n" + RUN_OUT_HINT},
        {"role": "tool", "tool_call_id": "c", "content": RUN_OUT_HINT},
        {"role": "assistant", "content": "\\boxed{2}"},
    ]  # fmt: skip
    _, parts = from_messages(messages)
    assert parts == [Block("print(2)", "2\n", hint=RUN_OUT_HINT), "\\boxed{2}"]


@pytest.mark.slow  # starts a real sandbox
async def test_agent_tool_conversation_converts_to_its_generation() -> None:
    server = ScriptedServer(
        [Step("First.", ["print(40 + 2)"]), Step("", ["x = 1", "x + 1"]), Step("\\boxed{42}")],
        tags=PRESETS["openmath"],
    )
    async with LocalSandbox() as sandbox:
        agent = Agent(
            "scripted", base_url="http://scripted.test/v1", api_key="k", format="tools",
            add_remaining_code_executions=True, sandbox=sandbox, http_client=server.client(),
            user="{problem}",
        )  # fmt: skip
        result = await agent.asolve("q")
        await agent.aclose()
    assert len(result.executions) == 3
    _, parts = from_messages(result.messages)
    assert render_tags(parts, "openmath") == result.generation


def test_openai_finetune_line() -> None:
    line = to_openai_finetune(
        [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}], PARTS
    )
    assert set(line) == {"messages", "tools"}
    assert line["tools"][0]["function"]["name"] == "python_exec"
    roles = [m["role"] for m in line["messages"]]
    assert roles[:3] == ["system", "user", "assistant"] and roles[-1] == "assistant"
    for message in line["messages"]:
        for call in message.get("tool_calls", []):
            assert isinstance(call["function"]["arguments"], str)
    json.dumps(line)


def sample(text: str, **record: Any) -> Sample:
    return Sample(record, parse_tags(text, "openmath"), text)


GOOD = "Let me check.\n<tool_call>\nprint(2)\n</tool_call>\n```output\n2\n```\n**Final Answer** \\boxed{2}"


@pytest.mark.parametrize(
    ("text", "record", "reason"),
    [
        (GOOD, {}, None),
        (GOOD, {"error": "boom"}, "no_error"),
        ("Just **Final Answer** \\boxed{2}", {}, "has_code"),
        (GOOD.replace("```output\n2\n```\n", ""), {}, "outputs_follow"),
        ("It is \\boxed{2}.\n" + GOOD, {}, "no_early_answer"),
        ("Guess 2.\n" + GOOD, {"predicted_answer": "2"}, "no_early_answer"),
        (GOOD.replace("**Final Answer**", "Final answer"), {}, "final_answer"),
        (GOOD.replace("\\boxed{2}", "\\boxed{2"), {}, "final_answer"),
        (GOOD, {"symbolic_correct": False}, "correct"),
        (GOOD.replace("2\n```", TRACE + "```"), {}, "no_traceback"),
        (GOOD.replace("2\n```", "22<output cut>```"), {}, "no_output_cut"),
        (GOOD.replace("2\n```", "Execution timed out after 10 seconds\n```"), {}, "no_timeout"),
        (GOOD.replace("2\n```", "SyntaxError: invalid syntax\n```"), {}, "no_syntax_error"),
    ],
)
def test_each_filter_drops_its_case(text: str, record: dict[str, Any], reason: str | None) -> None:
    record.setdefault("symbolic_correct", True)
    assert apply_filters(sample(text, **record), set(FILTERS)) == reason
    if reason is not None:
        assert apply_filters(sample(text, **record), set(FILTERS) - {reason}) is None


def test_optional_filters_are_off_by_default() -> None:
    text = GOOD.replace("2\n```", TRACE + "```")
    assert apply_filters(sample(text), set(DEFAULT_FILTERS)) is None
