"""Tag formats only (chat tags and completions): stop strings and robustness (REFERENCE.md §2)."""

from __future__ import annotations

import pytest

from tests.agent.conftest import Harness
from tests.agent.scripted import Step
from tir_agent.sandbox.base import Sandbox

pytestmark = pytest.mark.asyncio(loop_scope="module")

VARIANTS = [
    ("chat-tags", "chat", False),
    ("completions", "completions", False),
    ("chat-tags", "chat", True),
    ("completions", "completions", True),
]


@pytest.fixture(
    params=VARIANTS, ids=["chat-tags", "completions", "chat-tags-stream", "completions-stream"]
)
def tagged(request: pytest.FixtureRequest, sandbox: Sandbox) -> Harness:
    name, api, streamed = request.param
    return Harness(name=name, api=api, streamed=streamed, sandbox=sandbox)


STEPS = [Step("Compute.\n", ["print(6 * 7)\n"], after="\nThe output is 41.\n"), Step("\\boxed{42}")]
EXPECTED = "Compute.\n<tool_call>\nprint(6 * 7)\n</tool_call>\n```output\n42\n```\n\\boxed{42}"


@pytest.mark.parametrize(
    "server",
    [
        {},
        {"include_stop": True},
        {"include_stop": True, "report_stop": True},
        {"report_stop": True},
    ],
    ids=["swallowed", "kept", "kept-reported", "reported"],
)
async def test_stop_string_swallowed_or_not(tagged: Harness, server: dict) -> None:
    agent, scripted = tagged.agent(list(STEPS), server=server)
    result = await tagged.solve(agent, "p")
    assert result.generation == EXPECTED
    assert result.executions[0].stdout == "42\n"
    assert all(r["stop"][0] == "</tool_call>" for r in scripted.requests)


async def test_endpoint_rejecting_stop_first_block_runs_rest_discarded(tagged: Harness) -> None:
    steps = [
        Step("Compute.\n", ["print(6 * 7)\n", "print(0)\n"], after="\nso \\boxed{0}"),
        Step("\\boxed{42}"),
    ]
    agent, scripted = tagged.agent(steps, server={"reject": ("stop",)})
    result = await tagged.solve(agent, "p")
    assert [e.code for e in result.executions] == ["print(6 * 7)\n"]
    assert result.turns[0].discarded == "\n<tool_call>\nprint(0)\n</tool_call>\nso \\boxed{0}"
    assert result.generation == EXPECTED and result.answer == "42"
    # One rejected request (400), then the stop parameter is no longer sent.
    assert len(scripted.requests) == 3 and "stop" in scripted.requests[0]
    assert all("stop" not in r for r in scripted.requests[1:])


async def test_reasoning_model_without_stop_unclosed_block_is_not_run(tagged: Harness) -> None:
    agent, scripted = tagged.agent(
        [Step("Let me try:\n", unclosed="\nprint(1)\n")], model="o3-mini"
    )
    result = await tagged.solve(agent, "p")
    assert "stop" not in scripted.requests[0]
    assert result.executions == [] and result.status == "finished"
    assert result.generation == "Let me try:\n<tool_call>\nprint(1)\n"


async def test_block_cut_by_length_is_not_run(tagged: Harness) -> None:
    agent, _ = tagged.agent([Step("Let me try:\n", unclosed="\nprint(1)", finish_reason="length")])
    result = await tagged.solve(agent, "p")
    assert result.executions == [] and result.status == "length"


async def test_closing_fence_that_is_not_code_does_not_end_the_solution(tagged: Harness) -> None:
    steps = [
        Step("Table:\n```text\n1 2\n```\nnot seen"),
        Step("Now code:\n", ["print(3)\n"]),
        Step("\\boxed{3}"),
    ]
    agent, scripted = tagged.agent(steps, tags="qwen")
    result = await tagged.solve(agent, "p")
    assert (
        result.generation
        == "Table:\n```text\n1 2\n```\nNow code:\n```python\nprint(3)\n```\n```output\n3\n```\n\\boxed{3}"
    )
    assert result.turns[0].continues and result.status == "finished"
    second = scripted.requests[1]
    if tagged.name == "completions":
        assert second["prompt"].endswith("Table:\n```text\n1 2\n```\n")
    else:
        assert second["messages"][-1] == {
            "role": "assistant",
            "content": "Table:\n```text\n1 2\n```\n",
        }
        # Joined into one assistant message afterwards.
        assert scripted.requests[2]["messages"][-2]["content"].startswith(
            "Table:\n```text\n1 2\n```\nNow code:\n```python\n"
        )


async def test_llama_output_format_and_custom_tags(tagged: Harness) -> None:
    agent, _ = tagged.agent(
        [Step("", ["print(1)\n"]), Step("\\boxed{1}")],
        tags="llama3",
        add_remaining_code_executions=True,
        max_code_executions=2,
    )
    result = await tagged.solve(agent, "p")
    assert result.generation == (
        "<|python_tag|>\nprint(1)\n<|eom_id|><|start_header_id|>ipython<|end_header_id|>\n\ncompleted"
        "\n[stdout]\n1\n[/stdout]```system\nRemaining code executions: 1. You will not be able to call code "
        "when you run out of executions, so use it wisely. Note that you can still continue solving the "
        "problem without code after that.\n```\n<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n\\boxed{1}"
    )
