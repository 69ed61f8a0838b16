"""Options: defaults, then a YAML file, then overrides, with NeMo-Skills' names and forms."""

from __future__ import annotations

from pathlib import Path

import pytest

from tir_agent.config import config_keys, load_config, parse_override
from tir_agent.errors import ConfigError

# The seed document's arguments, verbatim (as the shell passes them after quote removal).
SEED_ARGS = [
    "++prompt_config=openmath/tir",
    "++inference.tokens_to_generate=16384",
    "++code_execution=true",
    "++server.code_execution.max_code_executions=null",
    "++server.code_execution.add_remaining_code_executions=true",
    "++total_code_executions_in_prompt=[1, 8]",
    "++override_max_code_executions=true",
]

SEED_PIPELINE = """\
stages:
  generate_solutions:
    inline_args: >-
      ++prompt_config=openmath/tir
      ++inference.tokens_to_generate=16384
      ++code_execution=true
      ++server.code_execution.max_code_executions=null
      ++server.code_execution.add_remaining_code_executions=true
      ++total_code_executions_in_prompt='[1, 8]'
      ++override_max_code_executions=true
    stage_kwargs:
      model: gpt-4.1-mini  # or gpt-4o, gpt-4o-mini, etc.
      server_type: openai
      server_address: https://api.openai.com/v1
      num_random_seeds: 16
      with_sandbox: true  # IMPORTANT: Enable sandbox for code execution
"""


def test_defaults() -> None:
    c = load_config(env={})
    assert c.server.code_execution.max_code_executions == 8
    assert c.server.code_execution.code_execution_timeout == 10.0
    assert c.server.code_execution.max_code_output_characters == 1000
    assert c.server.code_execution.add_remaining_code_executions is False
    assert c.seeds() == [None] and c.sampling() == (None, None)
    assert c.api_key is None


def test_seed_document_overrides_work_unchanged() -> None:
    c = load_config(overrides=SEED_ARGS, env={})
    assert c.prompt_config == "openmath/tir"
    assert c.inference.tokens_to_generate == 16384
    assert c.code_execution is True
    assert c.server.code_execution.max_code_executions is None
    assert c.server.code_execution.add_remaining_code_executions is True
    assert c.total_code_executions_in_prompt == (1, 8)
    assert c.override_max_code_executions is True


def test_seed_pipeline_file_works_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "custom-openai-tir.yaml"
    path.write_text(SEED_PIPELINE)
    c = load_config(path, env={})
    assert c.model == "gpt-4.1-mini" and c.server_type == "openai"
    assert c.server_address == "https://api.openai.com/v1"
    assert c.num_random_seeds == 16 and c.with_sandbox is True
    assert c.total_code_executions_in_prompt == (1, 8)
    assert c.seeds() == list(range(16))
    assert c.sampling() == (0.7, 0.95)  # seed runs sample unless told otherwise


def test_overrides_beat_flags_beat_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "model: from-file\nserver:\n  code_execution:\n    max_code_executions: 3\n"
        "inference.temperature: 0.2\n"
    )
    c = load_config(
        path,
        ["server.code_execution.max_code_executions=5", "+inference.top_p=0.5"],
        base={"model": "from-flag", "max_concurrent_requests": 7},
        env={},
    )
    assert c.model == "from-flag"  # command-line flags (base) beat the file
    assert c.max_concurrent_requests == 7
    assert c.server.code_execution.max_code_executions == 5
    assert c.inference.temperature == 0.2 and c.inference.top_p == 0.5
    assert c.sampling() == (0.2, 0.5)


def test_override_value_parsing() -> None:
    assert parse_override("++a.b=null") == ("a.b", None)
    assert parse_override("a=None") == ("a", None)
    assert parse_override("a=true") == ("a", True)
    assert parse_override("a=15.0") == ("a", 15.0)
    assert parse_override("a=[1, 8]") == ("a", [1, 8])
    assert parse_override("a=gpt-4o-mini") == ("a", "gpt-4o-mini")
    assert parse_override("a=") == ("a", "")
    assert parse_override("a=x=y") == ("a", "x=y")
    assert parse_override("a=Answer: {x") == ("a", "Answer: {x")  # not YAML: kept as text


@pytest.mark.parametrize("bad", ["novalue", "+++a=1", "=3"])
def test_malformed_override_is_an_error(bad: str) -> None:
    with pytest.raises(ConfigError, match="override"):
        load_config(overrides=[bad], env={})


def test_unknown_key_lists_close_matches() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(overrides=["++server.code_execution.max_code_execution=5"], env={})
    message = str(info.value)
    assert "Unknown option 'server.code_execution.max_code_execution'" in message
    assert "server.code_execution.max_code_executions" in message
    with pytest.raises(ConfigError, match=r"inference\.temperature"):
        load_config(overrides=["inference.temprature=0.1"], env={})


def test_unknown_key_in_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("modle: x\n")
    with pytest.raises(ConfigError, match=r"c.yaml.*Did you mean: model"):
        load_config(path, env={})


def test_invalid_values_name_the_option() -> None:
    with pytest.raises(ConfigError, match="num_random_seeds"):
        load_config(overrides=["num_random_seeds=0"], env={})
    with pytest.raises(ConfigError, match="total_code_executions_in_prompt"):
        load_config(overrides=["total_code_executions_in_prompt=[8, 1]"], env={})
    with pytest.raises(ConfigError, match="override_max_code_executions=true needs"):
        load_config(overrides=["override_max_code_executions=true"], env={})
    # tools over completions: the agent renders the tool prompt with a chat template that writes
    # tools (and says so when the template cannot)
    c = load_config(overrides=["api=completions"], env={})
    assert (c.api, c.format) == ("completions", "tools")
    with pytest.raises(ConfigError, match="with prompt_format=openai"):
        load_config(overrides=["prompt_format=openai", "prompt_suffix=x"], env={})


def test_aliases_and_free_form_keys() -> None:
    c = load_config(
        overrides=["max_tokens=100", "tags=qwen", "inference.extra_body.top_k=20", "seeds=[3, 5]"],
        env={},
    )
    assert c.inference.tokens_to_generate == 100 and c.code_tags == "qwen"
    assert c.inference.extra_body == {"top_k": 20}
    assert c.seeds() == [3, 5]


def test_environment_supplies_key_and_endpoint_only_when_unset() -> None:
    env = {"OPENAI_API_KEY": "sk-env", "OPENAI_BASE_URL": "http://env/v1"}
    c = load_config(env=env)
    assert c.api_key is not None and c.api_key.get_secret_value() == "sk-env"
    assert c.server_address == "http://env/v1"
    assert "sk-env" not in repr(c)  # the key is a secret
    c = load_config(overrides=["api_key=sk-cli", "server_address=http://cli/v1"], env=env)
    assert c.api_key is not None and c.api_key.get_secret_value() == "sk-cli"
    assert c.server_address == "http://cli/v1"


def test_every_seed_name_is_a_key() -> None:
    keys = set(config_keys())
    for name in (
        "prompt_config", "inference.tokens_to_generate", "code_execution",
        "server.code_execution.max_code_executions",
        "server.code_execution.code_execution_timeout",
        "server.code_execution.max_code_output_characters",
        "server.code_execution.add_remaining_code_executions",
        "total_code_executions_in_prompt", "override_max_code_executions", "num_random_seeds",
        "server_type", "server_address", "model", "with_sandbox",
    ):  # fmt: skip
        assert name in keys


def test_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml", env={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(bad, env={})


def test_agent_gets_only_explicit_options() -> None:
    from tir_agent.batch import agent_options

    assert agent_options(load_config(env={})) == {}  # the agent's own defaults apply
    options = agent_options(load_config(overrides=SEED_ARGS, env={}))
    assert options == {
        "prompt": "openmath/tir",
        "max_tokens": 16384,
        "max_code_executions": None,  # explicit null: unlimited
        "add_remaining_code_executions": True,
        "total_code_executions_in_prompt": (1, 8),
        "override_max_code_executions": True,
    }
    seeded = agent_options(load_config(overrides=["num_random_seeds=2", "top_p=0.5"], env={}))
    assert seeded == {"temperature": 0.7, "top_p": 0.5}
    off = agent_options(
        load_config(overrides=["code_execution=false", "max_model_calls=null"], env={})
    )
    assert off == {"max_code_executions": 0, "override_max_code_executions": False}
    env = agent_options(load_config(env={"OPENAI_BASE_URL": "http://h/v1"}))
    assert env == {"base_url": "http://h/v1"}
