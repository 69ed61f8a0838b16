"""Construction-time validation and problem formats; errors say how to fix the call."""

from __future__ import annotations

import pytest

from tir_agent.agent import Agent
from tir_agent.errors import AuthenticationError, ConfigError, PromptError

LOCAL = {"base_url": "http://127.0.0.1:9/v1"}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"format": "tools", "api": "completions"},
            "format='tools' with api='completions' needs a chat template that renders tools",
        ),
        (
            {"format": "tools", "api": "completions", "tool_choice": "required"},
            "tool_choice='required' needs api='chat'",
        ),
        ({"format": "native"}, "format: Input should be 'tools' or 'tags'"),
        (
            {"max_code_executions": -1},
            "max_code_executions: Input should be greater than or equal to 0",
        ),
        ({"chat_template": "chatml"}, "chat_template is used only with api='completions'"),
        ({"total_code_executions_in_prompt": (5, 2)}, "need [lo, hi] with 0 <= lo <= hi"),
        ({"override_max_code_executions": True}, "needs total_code_executions_in_prompt"),
        ({"prompt": "openmath/tir", "user": "{problem}"}, "either prompt=... or system=/user="),
        ({"temprature": 0.5}, "temprature: Extra inputs are not permitted"),
        ({"tool_choice": "python"}, "tool_choice='python': use 'auto', 'required' or the tool"),
        ({"tool_choice": "none"}, "to stop tool calls, use max_code_executions=0"),
        (
            {"format": "tags", "tool_choice": "required"},
            "tool_choice='required' is used only with format='tools'",
        ),
        ({"format": "tags", "tags": "nope"}, "Unknown tag preset 'nope'. Use one of:"),
        (
            {"prompt": "openmath/tir", "max_code_executions": None},
            "set total_code_executions_in_prompt",
        ),
    ],
)
def test_invalid_options_say_how_to_fix(options: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Agent("m", **LOCAL, **options)
    assert message in str(info.value)


def test_prompt_errors_name_the_prompt() -> None:
    with pytest.raises(PromptError, match="unknown_prompt"):
        Agent("m", **LOCAL, prompt="unknown_prompt")


def test_defaults_per_format() -> None:
    tools = Agent("m", **LOCAL)
    assert tools.prompt.name == "generic/tool-calling" and tools.config.max_code_executions == 8
    chat_tags = Agent("m", **LOCAL, format="tags")
    assert (
        chat_tags.prompt.name == "generic/tool-output"
        and chat_tags.tags.output_begin == "\n<tool_output>\n"
    )
    local = Agent("m", **LOCAL, format="tags", api="completions", tags="qwen")
    assert local.prompt.name == "openmath/tir" and local.tags.code_begin == "```python\n"
    assert local.template is not None and local.template.name == "qwen"


def test_missing_key_for_openai_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(AuthenticationError, match="set the OPENAI_API_KEY environment variable"):
        Agent("gpt-4o-mini")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    assert Agent("gpt-4o-mini").client.base_url == "https://api.openai.com/v1"


@pytest.mark.parametrize(
    ("problem", "message"),
    [
        ([], "the message list is empty"),
        ([{"role": "user", "content": "hi"}, "oops"], "message 1 is a str"),
        ([{"role": "human", "content": "hi"}], "message 0 has role 'human'"),
        (
            [{"role": "system", "content": "s"}, {"role": "user"}],
            "message 1 (user) needs a string 'content'",
        ),
        (42, "A problem is a string or a list of chat messages, not int"),
    ],
)
async def test_malformed_conversation_is_rejected_before_any_call(
    problem: object, message: str
) -> None:
    agent = Agent("m", **LOCAL)  # nothing listens on port 9: a model call would fail differently
    with pytest.raises(ConfigError, match=r"Invalid OpenAI prompt format|A problem is") as info:
        await agent.asolve(problem)  # type: ignore[arg-type]
    assert message in str(info.value)
