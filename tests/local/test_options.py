"""The local model's agent defaults and the lazy server handle (no server is started here)."""

from __future__ import annotations

import pytest

from tir_agent.agent import Agent
from tir_agent.errors import ConfigError
from tir_agent.local_model import (
    PLACEHOLDER_URL,
    LocalModel,
    local_agent_options,
    prepare_local,
)


@pytest.mark.parametrize(
    ("fmt", "api"), [("tags", "completions"), ("tags", "chat"), ("tools", "chat")]
)
def test_defaults_build_a_valid_agent(fmt: str, api: str) -> None:
    options = local_agent_options(fmt, api)  # type: ignore[arg-type]
    agent = Agent("local", base_url="http://127.0.0.1:9/v1", **options)
    assert agent.config.max_tokens is not None and agent.config.timeout is not None
    assert agent.config.temperature == 0.0 and agent.config.seed == 0
    if fmt == "tags":
        assert agent.tags.code_begin == "```python\n"  # what these models write unprompted
        assert agent.prompt.examples, "the few-shot prompt shows the tag format"
    if api == "completions":
        assert agent.template is not None
        assert agent.template.render([{"role": "user", "content": "hi"}]) == (
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        )


def test_tools_defaults_go_over_completions_unless_the_model_needs_chat() -> None:
    # Qwen2.5: its Hermes-style tool prompt rendered by us (tests/local/test_hermes.py);
    # SmolLM2 needs a named tool_choice, which only the chat API has.
    assert local_agent_options("tools")["api"] == "completions"
    assert local_agent_options("tools", "chat")["api"] == "chat"
    assert local_agent_options("tools", "completions", "local:smollm2-135m")["api"] == "chat"


def test_tools_defaults_follow_the_model() -> None:
    # Qwen2.5 writes its own Hermes-style calls (tool_choice="auto"), shown the form by a prompt;
    # SmolLM2 returns a call from llama.cpp only when tool_choice names the tool.
    qwen = local_agent_options("tools")
    assert qwen["tool_choice"] == "auto" and qwen["prompt"] == "generic/tool-calling-fewshot"
    assert local_agent_options("tools", model="local:smollm2-135m")["tool_choice"] == "python_exec"
    assert "tool_choice" not in local_agent_options("tags")


def test_named_local_models_take_their_own_defaults() -> None:
    options, local = prepare_local("local:smollm2-135m", {})
    assert isinstance(local, LocalModel) and local.model == "local:smollm2-135m"
    assert options["max_tokens"] == 768
    default, local = prepare_local("local", {})
    assert isinstance(local, LocalModel) and local.model == "local"
    assert default["chat_template"] == "chatml" and default["tags"] == "qwen"
    agent = Agent("local:qwen2.5-coder-1.5b", max_code_executions=1)
    assert agent.local_model is not None and agent.local_model.model == "local:qwen2.5-coder-1.5b"
    assert agent.config.model == "local:qwen2.5-coder-1.5b"  # the alias the server lists
    agent.close()
    with pytest.raises(ConfigError, match="Unknown embedded model 'local:nope'"):
        Agent("local:nope")


def test_prepare_local_merges_defaults_under_the_callers_options() -> None:
    options, local = prepare_local("local", {"max_code_executions": 1, "api": "chat"})
    assert isinstance(local, LocalModel) and not local.running
    assert options["base_url"] == PLACEHOLDER_URL
    assert options["max_code_executions"] == 1 and options["api"] == "chat"
    assert "chat_template" not in options  # chat: the server applies the model's template
    mine, none = prepare_local("local", {"base_url": "http://127.0.0.1:8000/v1"})
    assert none is None and mine["base_url"] == "http://127.0.0.1:8000/v1"
    assert mine["prompt"] == "generic/math-tir-fewshot"
    assert prepare_local("gpt-4o-mini", {"format": "tools"}) == ({"format": "tools"}, None)


def test_local_model_close_before_start_is_harmless() -> None:
    local = LocalModel()
    local.close()
    assert not local.running


def test_agent_local_takes_the_defaults_and_starts_nothing_until_a_solve(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-users-openai-key")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://elsewhere.test/v1")
    agent = Agent("local", max_code_executions=1)
    assert agent.client._api_key == "none"  # the user's OpenAI key is not sent to the server
    local = agent.local_model
    assert isinstance(local, LocalModel) and not local.running and local.pid is None
    assert agent.client.base_url == PLACEHOLDER_URL  # the real port is known on the first solve
    assert agent.config.max_code_executions == 1  # the caller's option over the default
    assert agent.config.prompt == "generic/math-tir-fewshot" and agent.template is not None
    agent.close()  # before any solve: nothing to stop
    assert not local.running


def test_agent_local_with_a_base_url_uses_that_server() -> None:
    agent = Agent("local", base_url="http://127.0.0.1:9/v1", format="tools")
    assert agent.local_model is None and agent.client.base_url == "http://127.0.0.1:9/v1"
    assert agent.config.tool_choice == "auto" and agent.config.api == "completions"
    assert Agent("gpt-4o-mini", base_url="http://127.0.0.1:9/v1").local_model is None


def test_own_templates_replace_the_default_prompt() -> None:
    agent = Agent("local", format="tools", system="Be brief.", user="{problem}")
    assert agent.config.prompt is None and agent.prompt.system == "Be brief."
    agent.close()
