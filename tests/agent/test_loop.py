"""The loop in every format: a solve end to end, budgets, hints, the final round, bounds."""

from __future__ import annotations

import json

import pytest

from tests.agent.conftest import Harness
from tests.agent.scripted import Step
from tir_agent.budget import REMAINING_HINT, RUN_OUT_HINT

pytestmark = pytest.mark.asyncio(loop_scope="module")

CODE = "total = sum(i**2 for i in range(1, 11))\nprint(total)\n"
EXPECTED = (
    "I'll compute it.\n<tool_call>\n" + CODE + "</tool_call>\n```output\n385\n```\n"
    "The sum is \\boxed{385}."
)


def remaining(n: int) -> str:
    return REMAINING_HINT.format(remaining=n)


async def test_solve_runs_code_and_answers(fmt: Harness) -> None:
    agent, server = fmt.agent(
        [Step("I'll compute it.\n", [CODE]), Step("The sum is \\boxed{385}.")]
    )
    result = await fmt.solve(agent, "Sum of squares from 1 to 10?")
    assert result.answer == "385"
    assert result.status == "finished"
    assert result.generation == EXPECTED  # the same bytes in every format
    assert [(e.code, e.status, e.stdout) for e in result.executions] == [
        (CODE, "completed", "385\n")
    ]
    assert len(result.turns) == 2 and len(server.requests) == 2
    assert (
        result.usage.completion_tokens == sum(t.usage.completion_tokens for t in result.turns) > 0
    )
    assert result.code_execution_time == pytest.approx(result.executions[0].duration)
    assert result.generation_time >= result.code_execution_time
    record = result.to_record()
    assert record["code_rounds_executed"] == 1 and record["num_code_timeouts"] == 0
    assert record["num_generated_tokens"] == result.usage.completion_tokens
    assert record["generation"] == EXPECTED and record["predicted_answer"] == "385"
    # The second request carries the first exchange, in the format's own shape.
    second = server.requests[1]
    if fmt.name == "completions":
        assert second["prompt"].endswith(EXPECTED[: EXPECTED.index("The sum")])
        assert second["stop"][0] == "</tool_call>"
    elif fmt.is_tools:
        call = second["messages"][-2]["tool_calls"][0]
        assert second["messages"][-1] == {
            "role": "tool",
            "tool_call_id": call["id"],
            "content": "385\n",
        }
    else:
        assert second["messages"][-2]["content"].endswith("</tool_call>")
        assert second["messages"][-1] == {"role": "user", "content": "\n```output\n385\n```\n"}
        assert second["stop"] == ["</tool_call>"]
    assert result.messages[-1]["role"] == "assistant"


async def test_state_persists_and_errors_are_shown(fmt: Harness) -> None:
    agent, _ = fmt.agent(
        [Step("", ["x = 41\n"]), Step("", ["x + 1\n"]), Step("", ["1 / 0\n"]), Step("\\boxed{42}")]
    )
    result = await fmt.solve(agent, "p")
    assert [e.status for e in result.executions] == ["completed", "completed", "error"]
    assert result.executions[1].stdout == "42\n"
    assert "ZeroDivisionError: division by zero" in result.executions[2].stderr
    assert result.answer == "42"


async def test_budget_then_final_round(fmt: Harness) -> None:
    steps = [Step(f"try {i}\n", [f"print({i})\n"]) for i in range(4)]
    agent, server = fmt.agent([*steps[:3], Step("done \\boxed{2}")], max_code_executions=2)
    result = await fmt.solve(agent, "p")
    assert [e.stdout for e in result.executions] == ["0\n", "1\n"]
    # Two executions, then one more generation in which code does not run.
    assert len(server.requests) == 3
    if fmt.is_tools:
        assert server.requests[2]["tool_choice"] == "none"
        # Hints are off, but the last tool result tells the model why the tools are gone.
        assert server.requests[2]["messages"][-1]["content"] == "1\n" + RUN_OUT_HINT
        # The server honours tool_choice="none": the third reply is text only and ends the solve.
        assert result.status == "finished" and result.turns[-1].calls == ()
        assert result.generation.endswith("```output\n1\n```\n" + RUN_OUT_HINT + "try 2\n")
    else:
        # The final round still sends the stop string; its code block is not run.
        assert server.requests[2]["stop"][0] == "</tool_call>"
        assert result.status == "budget_spent"
        assert result.generation.endswith("try 2\n<tool_call>\nprint(2)\n</tool_call>")
        assert RUN_OUT_HINT not in result.generation  # hints off: no run-out text in tag formats


async def test_remaining_hints_byte_exact(fmt: Harness) -> None:
    steps = [Step("", [f"print({i})\n"]) for i in range(3)]
    agent, server = fmt.agent(
        [*steps, Step("\\boxed{1}")], max_code_executions=3, add_remaining_code_executions=True
    )
    result = await fmt.solve(agent, "p")
    block = "<tool_call>\nprint({i})\n</tool_call>\n```output\n{i}\n```\n"
    assert result.generation == (
        block.format(i=0)
        + remaining(2)
        + block.format(i=1)
        + remaining(1)
        + block.format(i=2)
        + RUN_OUT_HINT
        + "\\boxed{1}"
    )
    if fmt.is_tools:
        contents = [m["content"] for m in server.requests[3]["messages"] if m["role"] == "tool"]
        assert contents == ["0\n" + remaining(2), "1\n" + remaining(1), "2\n" + RUN_OUT_HINT]


async def test_unlimited_budget_has_no_hints_and_is_bounded(fmt: Harness) -> None:
    agent, server = fmt.agent(
        [Step("", [f"print({i})\n"]) for i in range(10)],
        max_code_executions=None,
        add_remaining_code_executions=True,
        max_model_calls=5,
    )
    result = await fmt.solve(agent, "p")
    assert result.status == "max_model_calls"
    assert len(server.requests) == 5 and len(result.executions) == 5
    assert "```system" not in result.generation


async def test_token_budget_spans_the_solution(fmt: Harness) -> None:
    agent, server = fmt.agent([Step("x" * 400, ["print(1)\n"]), Step("never sent")], max_tokens=50)
    result = await fmt.solve(agent, "p")
    assert server.requests[0]["max_tokens"] == 50
    assert result.status == "length" and len(server.requests) == 1


async def test_budget_drawn_per_seed_and_override(fmt: Harness) -> None:
    seen = {}
    for seed in range(6):
        agent, server = fmt.agent(
            [Step("", ["print(1)\n"]) for _ in range(9)] + [Step("\\boxed{1}")],
            user="Use up to {total_code_executions} calls. {problem}",
            total_code_executions_in_prompt=(1, 4),
            override_max_code_executions=True,
        )
        result = await fmt.solve(agent, "p", seed=seed)
        drawn = result.total_code_executions
        assert drawn is not None and 1 <= drawn <= 4
        assert result.max_code_executions == drawn == len(result.executions)
        first = server.requests[0]
        text = first["prompt"] if "prompt" in first else first["messages"][-1]["content"]
        assert f"Use up to {drawn} calls. p" in text
        assert first["seed"] == seed
        seen[seed] = drawn
    assert len(set(seen.values())) > 1  # drawn, not fixed
    agent, _ = fmt.agent(
        [Step("\\boxed{1}")],
        user="{total_code_executions} {problem}",
        total_code_executions_in_prompt=(1, 4),
    )
    again = await fmt.solve(agent, "p", seed=3)
    assert again.total_code_executions == seen[3]  # reproducible from the seed
    assert again.max_code_executions == 8  # no override: the default budget is enforced


async def test_conversation_problem(fmt: Harness) -> None:
    conversation = [
        {"role": "system", "content": "Use Python."},
        {"role": "user", "content": "What is 6*7?"},
    ]
    agent, server = fmt.agent([Step("", ["print(6*7)\n"]), Step("\\boxed{42}")])
    result = await fmt.solve(agent, conversation)
    first = server.requests[0]
    if fmt.name == "completions":
        assert agent.template is not None
        assert first["prompt"] == agent.template.render(conversation)
        assert first["prompt"].startswith("<|im_start|>system\nUse Python.<|im_end|>\n")
        assert first["stop"] == ["</tool_call>", "<|im_end|>"]
        assert result.prompt == first["prompt"] + result.generation
    else:
        assert first["messages"] == conversation
    assert result.messages[:2] == conversation and result.answer == "42"


async def test_timeout_and_truncation_are_shown_to_the_model(fmt: Harness) -> None:
    agent, server = fmt.agent(
        [
            Step("", ["while True:\n    pass\n"]),
            Step("", ["print('x' * 50)\n"]),
            Step("\\boxed{0}"),
        ],
        code_execution_timeout=0.3,
        max_code_output_characters=10,
    )
    result = await fmt.solve(agent, "p")
    timed_out, long = result.executions
    assert (
        timed_out.status == "timeout"
        and "Execution timed out after 0.3 seconds" in timed_out.stderr
    )
    assert long.stdout == "x" * 10 + "<output cut>" and long.truncated
    assert result.to_record()["num_code_timeouts"] == 1
    assert "Execution timed out after 0.3 seconds" in json.dumps(server.requests[1])
    assert "```output\n" + "x" * 10 + "<output cut>" in result.generation
