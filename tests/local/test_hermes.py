"""Qwen2.5's Hermes-style tool prompt rendered by us (tir_agent.formats.hermes, the ``qwen`` chat
template with ``tools``) and the tools format over completions (tir_agent.formats.completion_tools).

``data/qwen2.5-chat-template.jinja`` is the ``tokenizer.chat_template`` of the Qwen2.5-Coder-0.5B
GGUF (the same as Qwen2.5-Instruct's ``tokenizer_config.json``): our built-in template must render
byte for byte what it renders, for any function definitions, not only ``python_exec``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tir_agent.agent import Agent
from tir_agent.chat_templates import JinjaChatTemplate, get_chat_template
from tir_agent.errors import ConfigError
from tir_agent.formats.base import Feedback, ModelReply
from tir_agent.formats.completion_tools import CompletionToolsFormat
from tir_agent.formats.hermes import tool_call_text, tools_block
from tir_agent.formats.native import tool_definition
from tir_agent.formats.tags import get_preset
from tir_agent.local_model import local_agent_options
from tir_agent.prompts import load_prompt
from tir_agent.sandbox.result import ExecutionResult
from tir_agent.turn import Usage

QWEN_SOURCE = (Path(__file__).parent / "data" / "qwen2.5-chat-template.jinja").read_text()

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Das Wetter für eine Stadt",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def _call(id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}


CONVERSATION: list[dict[str, Any]] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Zürich, and 6*7?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            _call("a", "get_weather", '{"city": "Zürich"}'),
            _call("b", "python_exec", json.dumps({"code": "print(6 * 7)\n"})),
        ],
    },
    {"role": "tool", "tool_call_id": "a", "content": "sunny"},
    {"role": "tool", "tool_call_id": "b", "content": "42\n"},
    {"role": "assistant", "content": "Let me check.", "tool_calls": [_call("c", "x", "not json")]},
    {"role": "tool", "tool_call_id": "c", "content": "Error"},
    {"role": "assistant", "content": "Sunny; 42."},
]


@pytest.mark.parametrize("system", [True, False], ids=["own-system", "default-system"])
@pytest.mark.parametrize("tools", [[tool_definition(), WEATHER], [WEATHER], None])
def test_builtin_qwen_renders_exactly_as_qwens_own_template(
    system: bool, tools: list[dict[str, Any]] | None
) -> None:
    messages = CONVERSATION if system else CONVERSATION[1:]
    # Qwen's template wants arguments as objects (as transformers passes them); render() gives
    # every template that form, whichever the messages carry.
    expected = JinjaChatTemplate(QWEN_SOURCE).render(messages, tools=tools)
    assert get_chat_template("qwen").render(messages, tools=tools) == expected
    if tools:
        assert tools_block(tools) in expected
        assert '"arguments": {"city": "Zürich"}' in expected  # not a quoted JSON string
        assert '"arguments": "not json"' in expected  # invalid JSON: the model's own string


def test_the_tools_block_lists_each_definition_on_its_own_line() -> None:
    block = tools_block([tool_definition(), WEATHER])
    lines = block.split("<tools>\n", 1)[1].split("\n</tools>", 1)[0].split("\n")
    assert [json.loads(line) for line in lines] == [tool_definition(), WEATHER]
    assert "für" in block  # non-ASCII kept, as the template's tojson
    assert block.endswith(
        '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
    )


def test_a_call_reads_as_the_template_writes_it() -> None:
    text = tool_call_text(_call("a", "python_exec", '{"code": "print(1)\\n"}'))
    assert (
        text
        == '<tool_call>\n{"name": "python_exec", "arguments": {"code": "print(1)\\n"}}\n</tool_call>'
    )


def test_templates_without_tools_refuse_them_and_bad_definitions_are_named() -> None:
    messages = [{"role": "user", "content": "hi"}]
    for name in ("chatml", "llama3", "qwen-math"):
        with pytest.raises(ConfigError, match="cannot render tools; use 'qwen'"):
            get_chat_template(name).render(messages, tools=[tool_definition()])
    assert get_chat_template("chatml").render(messages, tools=[]) == get_chat_template(
        "chatml"
    ).render(messages)
    with pytest.raises(ConfigError, match=r"tool 1 is not a function definition"):
        get_chat_template("qwen").render(messages, tools=[WEATHER, {"name": "f"}])


def _format(messages: list[dict[str, Any]]) -> CompletionToolsFormat:
    return CompletionToolsFormat(
        messages, get_preset("qwen"), {"temperature": 0.0}, get_chat_template("qwen")
    )


def _reply(text: str) -> ModelReply:
    return ModelReply(text=text, finish_reason="stop", usage=Usage(), stop_sent=True)


def _ran(stdout: str) -> ExecutionResult:
    return ExecutionResult(status="completed", stdout=stdout, stderr="")


def test_completion_tools_round_trip_keeps_each_prompt_a_prefix_of_the_next() -> None:
    messages = load_prompt("generic/tool-calling-fewshot").build_messages({"problem": "6*7?"})
    fmt = _format(messages)
    first = fmt.build_request(final=False, max_tokens=100)
    assert first.api == "completions"
    assert first.params["stop"] == ["</tool_call>", "<tool_response>", "<|im_end|>"]
    assert first.params["max_tokens"] == 100 and first.params["temperature"] == 0.0
    assert first.params["prompt"].endswith(
        "<|im_start|>user\n6*7?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert tools_block([tool_definition()]) in first.params["prompt"]

    # What the 0.5B writes up to the stop string: the call, with or without its opening tag.
    turn = fmt.parse(
        _reply('<tool_call>\n{"name": "python_exec", "arguments": {"code": "print(6*7)"}}\n'), 0
    )
    assert [c.code for c in turn.calls] == ["print(6*7)"] and turn.text == ""
    assert fmt.feed(turn, [Feedback(turn.calls[0], _ran("42\n"))]) == (
        "```python\nprint(6*7)\n```\n```output\n42\n```\n"
    )
    second = fmt.build_request(final=False, max_tokens=None).params["prompt"]
    assert second.startswith(first.params["prompt"])  # the server's KV cache is reused
    assert second.endswith(
        '<|im_start|>assistant\n<tool_call>\n{"name": "python_exec", "arguments": '
        '{"code": "print(6*7)"}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\n42\n\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    turn = fmt.parse(_reply("The answer is \\boxed{42}."), 1)
    assert not turn.calls and turn.text == "The answer is \\boxed{42}."
    assert fmt.prompt() == second + "The answer is \\boxed{42}.<|im_end|>\n"


def test_completion_tools_final_round_keeps_a_written_call_as_text() -> None:
    fmt = _format([{"role": "user", "content": "6*7?"}])
    final = fmt.build_request(final=True, max_tokens=None)
    assert tools_block([tool_definition()]) in final.params["prompt"]  # same prefix as before
    call = '{"name": "python_exec", "arguments": {"code": "print(6*7)"}}'
    turn = fmt.parse(_reply(call), 0)
    assert turn.calls == () and turn.text == call


def test_completion_tools_takes_any_function_definitions() -> None:
    fmt = CompletionToolsFormat(
        [{"role": "user", "content": "Weather?"}],
        get_preset("qwen"),
        {},
        get_chat_template("qwen"),
        tools=[WEATHER],
    )
    prompt = fmt.build_request(final=False, max_tokens=None).params["prompt"]
    assert '"name": "get_weather"' in prompt and "python_exec" not in prompt


def test_agent_options_for_tools_over_completions() -> None:
    options = local_agent_options("tools")
    assert options["api"] == "completions" and options["chat_template"] == "qwen"
    agent = Agent("local", base_url="http://127.0.0.1:9/v1", **options)
    assert agent.config.tool_choice == "auto" and agent.template is not None
    assert agent.template.renders_tools
    # SmolLM2 calls only when tool_choice names the tool, which needs the chat API.
    smol = local_agent_options("tools", "completions", model="local:smollm2-135m")
    assert smol["api"] == "chat" and "chat_template" not in smol
    with pytest.raises(ConfigError, match="needs a chat template that renders tools"):
        Agent(
            "m",
            base_url="http://127.0.0.1:9/v1",
            format="tools",
            api="completions",
            chat_template="chatml",
        )
    with pytest.raises(ConfigError, match="tool_choice='python_exec' needs api='chat'"):
        Agent(
            "m",
            base_url="http://127.0.0.1:9/v1",
            format="tools",
            api="completions",
            chat_template="qwen",
            tool_choice="python_exec",
        )


def test_prompt_turns_are_sent_as_written_between_system_and_user() -> None:
    prompt = load_prompt("generic/tool-calling-fewshot")
    first = prompt.build_messages({"problem": "6*7?"})
    assert [m["role"] for m in first] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
    ]
    assert first[2]["tool_calls"][0]["function"]["arguments"] == '{"code": "print(pow(2, 100, 7))"}'
    first[2]["tool_calls"][0]["function"]["name"] = "changed"
    second = prompt.build_messages({"problem": "6*7?"})
    assert second[2]["tool_calls"][0]["function"]["name"] == "python_exec"  # copies, not shared


def test_the_written_example_of_the_tools_prompt_names_no_roles() -> None:
    """Written with "Assistant:" / "Tool:" lines, the system message's example made the 0.5B end
    its turn at once, empty, in half of the problems (docs/local-model.md): the example shows
    the call and its response as the chat template writes them, without role labels."""
    system = load_prompt("generic/tool-calling-fewshot").build_messages({"problem": "x"})[0]
    example = system["content"].split("Example.", 1)[1]
    assert "<tool_call>" in example and "<tool_response>" in example
    assert not re.search(r"^\s*(Assistant|Tool|User)\s*:", example, flags=re.MULTILINE)
