"""``api="responses"``: python_exec as a Responses function tool, reasoning carried across calls.

The endpoint is :class:`~tests.agent.scripted_responses.ScriptedResponses`, whose replies and
stream events are the ``openai`` SDK's own Responses types (no API key is available here); the
sandbox is a real LocalSandbox.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.agent.scripted import Fail, ScriptedServer, Step
from tests.agent.scripted_responses import ScriptedResponses
from tir_agent.agent import Agent, Problem
from tir_agent.budget import RUN_OUT_HINT
from tir_agent.errors import AuthenticationError, ConfigError
from tir_agent.formats.responses import responses_tool_choice, responses_tools
from tir_agent.formats.tags import PRESETS
from tir_agent.pricing import default_prices
from tir_agent.sandbox.base import Sandbox
from tir_agent.turn import CodeStart, Finished, SolveResult, TextDelta

aio = pytest.mark.asyncio(loop_scope="module")

URL = "http://scripted.test/v1"

THREE_CALLS = [
    Step(
        "Let me compute the sum directly.",
        ["squares = [i * i for i in range(1, 11)]\nsum(squares)\n"],
    ),
    Step(
        "Now check it against the closed form, and the variable survived.",
        ["n = 10\nn * (n + 1) * (2 * n + 1) // 6\n", "len(squares)\n"],
    ),
    Step("Both agree: \\boxed{385}."),
]


def responses_agent(
    server: ScriptedResponses, sandbox: Sandbox, model: str = "o4-mini", **options: Any
) -> Agent:
    options.setdefault("user", "{problem}")
    agent = Agent(
        model,
        base_url=URL,
        api_key="sk-test",
        api="responses",
        sandbox=sandbox,
        http_client=server.client(),
        **options,
    )
    agent.client.backoff = 0.01
    return agent


async def solve(agent: Agent, problem: Problem, streamed: bool) -> tuple[SolveResult, list[Any]]:
    if not streamed:
        return await agent.asolve(problem), []
    events = [e async for e in agent.stream(problem)]
    assert isinstance(events[-1], Finished)
    return events[-1].result, events


@aio
@pytest.mark.parametrize("streamed", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("store", [False, True], ids=["stateless", "stored"])
async def test_reasoning_model_keeps_its_reasoning_across_calls(
    sandbox: Sandbox, streamed: bool, store: bool
) -> None:
    server = ScriptedResponses(list(THREE_CALLS), reasoning=True)
    agent = responses_agent(server, sandbox, store=store, system="Use python_exec.")
    result, _ = await solve(agent, "Sum of the squares from 1 to 10?", streamed)
    assert result.status == "finished" and result.answer == "385"
    assert [e.stdout for e in result.executions] == ["385\n", "385\n", "10\n"]
    assert [e.call_id for e in result.executions] == ["call_1_0", "call_2_0", "call_2_1"]
    # Every request after the first reached the model with every earlier reasoning item.
    assert server.carried == [True, True, True]
    first, second, third = server.requests
    assert all(
        r["store"] is store and r["instructions"] == "Use python_exec." for r in server.requests
    )
    if store:
        assert "include" not in first and "previous_response_id" not in first
        assert second["previous_response_id"] == "resp_0001"
        assert third["previous_response_id"] == "resp_0002"
        # Only what is new goes up: the outputs of the previous reply's calls.
        assert [i["type"] for i in third["input"]] == ["function_call_output"] * 2
    else:
        assert all(r["include"] == ["reasoning.encrypted_content"] for r in server.requests)
        reasoning = [i for i in third["input"] if i.get("type") == "reasoning"]
        assert [(r["id"], r["encrypted_content"]) for r in reasoning] == [
            ("rs_0001", "gAAAA-scripted-rs_0001"),
            ("rs_0002", "gAAAA-scripted-rs_0002"),
        ]
        kinds = [i.get("type", i.get("role")) for i in third["input"]]
        assert kinds == [
            "user",
            "reasoning", "message", "function_call", "function_call_output",
            "reasoning", "message", "function_call", "function_call", "function_call_output",
            "function_call_output",
        ]  # fmt: skip
        outputs = [i for i in third["input"] if i.get("type") == "function_call_output"]
        assert [o["call_id"] for o in outputs] == ["call_1_0", "call_2_0", "call_2_1"]
    assert result.turns[0].reasoning == "Planning step 1."
    assert result.usage.reasoning_tokens == 150 and result.usage.cached_tokens > 0


@aio
async def test_without_carried_reasoning_the_endpoint_refuses(sandbox: Sandbox) -> None:
    """The scripted endpoint is strict like the real one: a reasoning item resent without its
    encrypted content under store=false is a 404 (so the check above can fail)."""
    server = ScriptedResponses(list(THREE_CALLS), reasoning=True)
    agent = responses_agent(server, sandbox)
    agent.client._rejected.add("include")  # as if the client never asked for encrypted content
    result = await agent.asolve("Sum of the squares from 1 to 10?")
    assert result.status == "error" and "Items are not persisted" in (result.error or "")


@aio
async def test_outputs_hints_and_final_round_match_the_chat_tools_format(sandbox: Sandbox) -> None:
    """Same script, budget 2, hints on: the tool message contents, the final no-tools round and
    the generation are byte-identical between chat tools and Responses."""
    steps = [
        Step("First.", ["print(1)\n"]),
        Step("Two at once.", ["print(2)\n", "print(3)\n"]),
        Step("Done: \\boxed{3}."),
    ]
    options: dict[str, Any] = {"max_code_executions": 2, "add_remaining_code_executions": True}
    chat_server = ScriptedServer(list(steps), tags=PRESETS["openmath"])
    chat = Agent(
        "gpt-4o-mini", base_url=URL, api_key="k", sandbox=sandbox,
        http_client=chat_server.client(), user="{problem}", **options,
    )  # fmt: skip
    chat_result = await chat.asolve("p")
    server = ScriptedResponses(list(steps))
    result = await responses_agent(server, sandbox, "gpt-4o-mini", **options).asolve("p")
    tool_messages = [
        m["content"] for m in chat_server.requests[-1]["messages"] if m["role"] == "tool"
    ]
    outputs = [
        i["output"] for i in server.requests[-1]["input"] if i.get("type") == "function_call_output"
    ]
    assert outputs == tool_messages and outputs[-1] == RUN_OUT_HINT
    assert [r["tool_choice"] for r in server.requests] == ["auto", "auto", "none"]
    assert [r["tool_choice"] for r in chat_server.requests] == ["auto", "auto", "none"]
    assert result.generation == chat_result.generation
    assert result.status == chat_result.status == "finished"
    assert "include" not in server.requests[0]  # not a reasoning model


@aio
async def test_reasoning_model_parameters(sandbox: Sandbox) -> None:
    server = ScriptedResponses([Step("\\boxed{1}")], reasoning=True)
    agent = responses_agent(
        server, sandbox, temperature=0.7, top_p=0.9, reasoning_effort="high", max_tokens=500,
        seed=3, system="sys",
    )  # fmt: skip
    result = await agent.asolve("p")
    body = server.requests[0]
    assert "temperature" not in body and "top_p" not in body and "seed" not in body
    assert body["reasoning"] == {"effort": "high"} and body["max_output_tokens"] == 500
    assert "max_tokens" not in body and "stop" not in body
    assert body["instructions"] == "sys" and body["input"] == [{"role": "user", "content": "p"}]
    assert result.messages[0] == {"role": "developer", "content": "sys"}

    plain = ScriptedResponses([Step("\\boxed{1}")])
    await responses_agent(plain, sandbox, "gpt-4.1", temperature=0.2, seed=3).asolve("p")
    assert plain.requests[0]["temperature"] == 0.2 and "seed" not in plain.requests[0]
    assert "include" not in plain.requests[0] and "reasoning" not in plain.requests[0]


@aio
async def test_message_list_prompt(sandbox: Sandbox) -> None:
    server = ScriptedResponses([Step("\\boxed{2}")], reasoning=True)
    conversation = [
        {"role": "system", "content": "You solve problems."},
        {"role": "user", "content": "What is 1+1?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "python_exec", "arguments": '{"code": "1+1"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "2\n"},
        {"role": "system", "content": "Answer in a box."},
    ]
    server._calls.add("c1")  # the earlier call of the conversation, made "before"
    await responses_agent(server, sandbox).asolve(conversation)
    body = server.requests[0]
    assert body["instructions"] == "You solve problems."
    assert body["input"] == [
        {"role": "user", "content": "What is 1+1?"},
        {
            "type": "function_call",
            "call_id": "c1",
            "name": "python_exec",
            "arguments": '{"code": "1+1"}',
        },
        {"type": "function_call_output", "call_id": "c1", "output": "2\n"},
        {"role": "developer", "content": "Answer in a box."},
    ]


@aio
async def test_stream_events(sandbox: Sandbox) -> None:
    server = ScriptedResponses(list(THREE_CALLS), reasoning=True, chunk=5)
    result, events = await solve(responses_agent(server, sandbox), "p", streamed=True)
    first_turn = "".join(e.text for e in events if isinstance(e, TextDelta) and e.turn == 0)
    assert first_turn == "Let me compute the sum directly."
    assert sum(isinstance(e, CodeStart) for e in events) == 3
    assert server.requests[0]["stream"] is True and result.answer == "385"


@aio
async def test_retries_and_errors(sandbox: Sandbox) -> None:
    server = ScriptedResponses(
        [Fail(429, "Rate limit reached", {"retry-after": "0"}), Fail(503), Step("\\boxed{4}")]
    )
    result = await responses_agent(server, sandbox).asolve("p")
    assert result.answer == "4" and len(server.requests) == 3
    context = ScriptedResponses([Fail(400, "Your input exceeds the context window of this model.")])
    result = await responses_agent(context, sandbox).asolve("p")
    assert result.status == "length"
    with pytest.raises(AuthenticationError):
        await responses_agent(ScriptedResponses([Fail(401, "bad key")]), sandbox).asolve("p")


@aio
async def test_usage_and_cost(sandbox: Sandbox) -> None:
    server = ScriptedResponses(list(THREE_CALLS), reasoning=True)
    result = await responses_agent(server, sandbox).asolve("p")
    usage = result.usage
    assert (
        usage.input_tokens == usage.prompt_tokens and usage.output_tokens == usage.completion_tokens
    )
    price = default_prices().models["o4-mini"]
    expected = (
        (usage.input_tokens - usage.cached_tokens) * price.input
        + usage.cached_tokens * (price.cached_input or 0)
        + usage.output_tokens * price.output
    ) / 1e6
    assert result.cost == pytest.approx(expected) and result.cost > 0
    assert result.to_record()["cost"] == result.cost


def test_any_chat_function_tool_becomes_a_responses_tool() -> None:
    chat_tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": "d",
                "parameters": {"type": "object"},
                "strict": True,
            },
        },
        {"type": "function", "name": "already_flat", "parameters": {}},
    ]
    assert responses_tools(chat_tools) == [
        {
            "type": "function",
            "name": "lookup",
            "description": "d",
            "parameters": {"type": "object"},
            "strict": True,
        },
        {"type": "function", "name": "already_flat", "parameters": {}},
    ]
    named = {"type": "function", "function": {"name": "python_exec"}}
    assert responses_tool_choice(named) == {"type": "function", "name": "python_exec"}
    assert responses_tool_choice("auto") == "auto"


def test_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="api='responses' takes format='tools'"):
        Agent("o4-mini", api_key="k", api="responses", format="tags")
    with pytest.raises(ConfigError, match="store=True is used only with api='responses'"):
        Agent("o4-mini", api_key="k", store=True)


@aio
async def test_named_tool_choice_is_flat(sandbox: Sandbox) -> None:
    server = ScriptedResponses([Step("\\boxed{1}")])
    await responses_agent(server, sandbox, "gpt-4.1", tool_choice="python_exec").asolve("p")
    assert server.requests[0]["tool_choice"] == {"type": "function", "name": "python_exec"}
    assert json.dumps(server.requests[0]["tools"]).count('"function"') == 1


@aio
@pytest.mark.parametrize("streamed", [False, True], ids=["json", "sse"])
async def test_an_incomplete_response_is_length(sandbox: Sandbox, streamed: bool) -> None:
    server = ScriptedResponses([Step("The answer is", finish_reason="length")])
    result, _ = await solve(responses_agent(server, sandbox), "p", streamed)
    assert result.status == "length" and result.turns[0].finish_reason == "length"
    assert result.generation == "The answer is"


@aio
async def test_a_failed_stream_ends_the_solve_with_an_error(sandbox: Sandbox) -> None:
    server = ScriptedResponses([Step("Partial")], fail_stream="The server had an error.")
    result, events = await solve(responses_agent(server, sandbox), "p", streamed=True)
    assert result.status == "error" and "The server had an error." in (result.error or "")
    assert any(isinstance(e, TextDelta) for e in events)  # it had started streaming
