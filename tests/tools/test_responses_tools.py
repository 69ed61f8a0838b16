"""The user's tools through ``api="responses"``: their definitions reach the Responses API as
function tools (strict, flat), their calls are checked and run beside ``python_exec`` in call
order, and each result goes back as a ``function_call_output`` with the call's ``call_id``.

The endpoint is :class:`~tests.agent.scripted_responses.ScriptedResponses` (replies built from
the ``openai`` SDK's own Responses types; no API key is available here); the sandbox is real.
"""

from __future__ import annotations

import json

import pytest

from tests.agent.scripted import Step
from tests.agent.scripted_responses import ScriptedResponses
from tests.tools.test_agent_tools import get_temperature
from tir_agent.agent import Agent
from tir_agent.sandbox.base import Sandbox

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.mark.parametrize("streamed", [False, True], ids=["json", "sse"])
async def test_user_tools_and_code_through_the_responses_api(
    sandbox: Sandbox, streamed: bool
) -> None:
    server = ScriptedResponses(
        [
            Step(
                "Look it up and compute.",
                arguments=[
                    json.dumps({"city": "Paris", "unit": None}),
                    json.dumps({"code": "print(21 * 9 / 5 + 32)"}),
                    json.dumps({"town": "Paris"}),
                ],
                names=["get_temperature", "python_exec", "get_temperature"],
            ),
            Step("It is \\boxed{21} degrees."),
        ],
        reasoning=True,
    )
    agent = Agent(
        "o4-mini",
        base_url="http://scripted.test/v1",
        api_key="sk-test",
        api="responses",
        sandbox=sandbox,
        http_client=server.client(),
        tools=[get_temperature],
        user="{problem}",
    )
    if streamed:
        events = [e async for e in agent.stream("Temperature in Paris?")]
        result = events[-1].result
    else:
        result = await agent.asolve("Temperature in Paris?")
    assert result.answer == "21"

    first = server.requests[0]
    tools = {t["name"]: t for t in first["tools"]}
    assert set(tools) == {"python_exec", "get_temperature"}
    temperature = tools["get_temperature"]
    assert temperature["type"] == "function" and "function" not in temperature  # flat form
    assert temperature["strict"] is True  # strict mode, as on chat completions
    unit = temperature["parameters"]["properties"]["unit"]
    assert {"enum": ["c", "f"], "type": "string"} in unit["anyOf"]
    assert "The city's name" in temperature["parameters"]["properties"]["city"]["description"]

    calls = [(c.name, c.arguments, c.output, c.failed) for c in result.tool_calls]
    assert calls[0] == ("get_temperature", {"city": "Paris"}, "21 c", False)  # null: default
    assert calls[1][0] == "get_temperature" and calls[1][3] is True  # an unknown argument
    assert "town" in calls[1][2]
    assert [e.stdout for e in result.executions] == ["69.8\n"]

    second = server.requests[1]["input"]
    made = [i["call_id"] for i in second if i.get("type") == "function_call"]
    outputs = [i for i in second if i.get("type") == "function_call_output"]
    assert len(made) == 3 and [o["call_id"] for o in outputs] == made  # each answered, in order
    assert outputs[0]["output"].startswith("21 c")
    assert "69.8" in outputs[1]["output"]
    assert server.carried == [True, True]  # the reasoning went along
