"""Chat templates render known conversations byte-exact (formats checked against the models'
own tokenizer_config.json templates: Qwen2.5-Instruct, Qwen2.5-Math-Instruct, Llama 3 Instruct)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tir_agent.chat_templates import (
    QWEN_DEFAULT_SYSTEM,
    ChatTemplate,
    JinjaChatTemplate,
    get_chat_template,
)
from tir_agent.errors import ConfigError

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 2+2?\n"},
    {"role": "assistant", "content": " It is 4. "},
    {"role": "user", "content": "And 3+3?"},
]

# A ChatML template written for these tests in the Hugging Face style (whitespace control,
# loop controls, raise_exception, tojson, a {% generation %} block, bos/eos tokens).
CHATML_JINJA = """\
{%- for message in messages %}
    {%- if message.role not in ['system', 'user', 'assistant'] %}
        {{- raise_exception('Unknown role ' + message.role) }}
    {%- endif %}
    {%- if message.role == 'assistant' %}
        {{- '<|im_start|>assistant\\n' }}{% generation %}{{- message.content + '<|im_end|>\\n' }}{% endgeneration %}
    {%- else %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
    {%- endif %}
    {%- if loop.index > 99 %}{% break %}{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""


def test_chatml_is_byte_exact() -> None:
    expected = (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?\n<|im_end|>\n"
        "<|im_start|>assistant\n It is 4. <|im_end|>\n"
        "<|im_start|>user\nAnd 3+3?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    template = get_chat_template("chatml")
    assert template.render(CONVERSATION) == expected
    assert template.stop == ("<|im_end|>",)
    no_prompt = template.render(CONVERSATION, add_generation_prompt=False)
    assert no_prompt == expected.removesuffix("<|im_start|>assistant\n")


def test_chatml_has_no_default_system_message() -> None:
    messages = [{"role": "user", "content": "Hi"}]
    assert get_chat_template("chatml").render(messages) == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_qwen_adds_its_default_system_message_only_when_missing() -> None:
    messages = [{"role": "user", "content": "Hi"}]
    assert get_chat_template("qwen").render(messages) == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
        "assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert get_chat_template("qwen").render(CONVERSATION) == get_chat_template("chatml").render(
        CONVERSATION
    )


def test_qwen_math_default_system_message() -> None:
    messages = [{"role": "user", "content": "1+1?"}]
    assert get_chat_template("qwen-math").render(messages) == (
        "<|im_start|>system\nPlease reason step by step, and put your final answer within "
        "\\boxed{}.<|im_end|>\n<|im_start|>user\n1+1?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_qwen_renders_tool_calls_and_grouped_tool_results_as_qwen25() -> None:
    messages = [
        {"role": "user", "content": "Compute."},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "python_exec", "arguments": '{"code": "print(1)"}'},
                },
                {
                    "id": "c2",
                    "type": "function",
                    "function": {"name": "python_exec", "arguments": '{"code": "x = 1"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "1\n"},
        {"role": "tool", "tool_call_id": "c2", "content": ""},
    ]
    assert get_chat_template("qwen").render(messages) == (
        f"<|im_start|>system\n{QWEN_DEFAULT_SYSTEM}<|im_end|>\n"
        "<|im_start|>user\nCompute.<|im_end|>\n"
        "<|im_start|>assistant"
        '\n<tool_call>\n{"name": "python_exec", "arguments": {"code": "print(1)"}}\n</tool_call>'
        '\n<tool_call>\n{"name": "python_exec", "arguments": {"code": "x = 1"}}\n</tool_call>'
        "<|im_end|>\n"
        "<|im_start|>user\n<tool_response>\n1\n\n</tool_response>"
        "\n<tool_response>\n\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_llama3_is_byte_exact_and_trims_contents() -> None:
    expected = (
        "<|begin_of_text|>"
        "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nIt is 4.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nAnd 3+3?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    template = get_chat_template("llama3")
    assert template.render(CONVERSATION) == expected
    assert template.stop == ("<|eot_id|>",)


@pytest.mark.parametrize(
    ("name", "expected_tail"),
    [
        ("chatml", "<|im_start|>user\nAnd 3+3?<|im_end|>\n<|im_start|>assistant\n  Let me\n"),
        (
            "llama3",
            "<|start_header_id|>user<|end_header_id|>\n\nAnd 3+3?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nLet me\n",
        ),
    ],
)
def test_continue_final_message_keeps_the_prefix_open_and_exact(
    name: str, expected_tail: str
) -> None:
    messages = [*CONVERSATION, {"role": "assistant", "content": "  Let me\n"}]
    text = get_chat_template(name).render(
        messages, add_generation_prompt=False, continue_final_message=True
    )
    assert text.endswith(expected_tail)


def test_continue_final_message_and_generation_prompt_conflict() -> None:
    with pytest.raises(ConfigError, match="cannot both"):
        get_chat_template("chatml").render(CONVERSATION, continue_final_message=True)


def test_jinja_string_matches_builtin_chatml() -> None:
    template = get_chat_template(CHATML_JINJA)
    assert isinstance(template, JinjaChatTemplate)
    builtin = get_chat_template("chatml")
    for generation_prompt in (True, False):
        assert template.render(
            CONVERSATION, add_generation_prompt=generation_prompt
        ) == builtin.render(CONVERSATION, add_generation_prompt=generation_prompt)
    assert template.stop == ("<|im_end|>",)


def test_jinja_continue_final_message_survives_trim() -> None:
    # The Llama 3 template trims every content; the continued prefix must keep its newline.
    source = (
        "{% for m in messages %}{{ bos_token if loop.first }}<|start_header_id|>{{ m.role }}"
        "<|end_header_id|>\n\n{{ m.content | trim }}<|eot_id|>{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
    )
    template = get_chat_template(source, bos_token="<|begin_of_text|>")
    messages = [*CONVERSATION, {"role": "assistant", "content": "Let me\n"}]
    rendered = template.render(messages, add_generation_prompt=False, continue_final_message=True)
    builtin = get_chat_template("llama3").render(
        messages, add_generation_prompt=False, continue_final_message=True
    )
    assert rendered == builtin
    assert rendered.endswith("<|end_header_id|>\n\nLet me\n")


def test_tokenizer_config_with_token_dicts(tmp_path: Path) -> None:
    source = (
        "{{ bos_token }}{% for m in messages %}{{ m.content }}{{ eos_token }}{% endfor %}"
        "{{ pad_token }}"
    )
    config = {
        "chat_template": source,
        "bos_token": {"content": "<s>", "lstrip": False, "__type": "AddedToken"},
        "eos_token": "</s>",
        "pad_token": "<pad>",
    }
    path = tmp_path / "tokenizer_config.json"
    path.write_text(json.dumps(config))
    for spec in (path, str(path), tmp_path):
        template = get_chat_template(spec)
        assert template.render([{"role": "user", "content": "hi"}]) == "<s>hi</s><pad>"
        assert template.stop == ("</s>",)


def test_tokenizer_config_with_named_templates_and_jinja_file(tmp_path: Path) -> None:
    config = {
        "chat_template": [
            {"name": "tool_use", "template": "TOOLS"},
            {"name": "default", "template": "{{ messages[0].content | tojson }}"},
        ]
    }
    path = tmp_path / "tokenizer_config.json"
    path.write_text(json.dumps(config))
    # tojson keeps non-ASCII and does not HTML-escape, as transformers' tojson does.
    assert get_chat_template(path).render([{"role": "user", "content": "é<&>"}]) == '"é<&>"'
    jinja_file = tmp_path / "template.jinja"
    jinja_file.write_text(CHATML_JINJA)
    assert get_chat_template(jinja_file).render(CONVERSATION) == get_chat_template("chatml").render(
        CONVERSATION
    )


def test_tokenizer_config_without_template_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "tokenizer_config.json"
    path.write_text(json.dumps({"eos_token": "</s>"}))
    with pytest.raises(ConfigError, match="no chat_template"):
        get_chat_template(path)


def test_raise_exception_becomes_config_error() -> None:
    template = get_chat_template(CHATML_JINJA)
    with pytest.raises(ConfigError, match="Unknown role tool"):
        template.render([{"role": "tool", "content": "x"}])


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ messages.append({'role': 'user'}) }}",
    ],
)
def test_jinja_is_sandboxed(source: str) -> None:
    with pytest.raises(ConfigError, match="failed"):
        get_chat_template(source).render([{"role": "user", "content": "x"}])


def test_jinja_syntax_error() -> None:
    with pytest.raises(ConfigError, match="syntax"):
        get_chat_template("{% for m in messages %}")


def test_unknown_name_lists_builtins() -> None:
    with pytest.raises(ConfigError, match="chatml, qwen, qwen-math, llama3"):
        get_chat_template("vicuna")


def test_content_parts_and_bad_messages() -> None:
    parts = [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
    ]
    assert get_chat_template("chatml").render(parts, add_generation_prompt=False) == (
        "<|im_start|>user\nab<|im_end|>\n"
    )
    with pytest.raises(ConfigError, match="message 0 has no role"):
        get_chat_template("chatml").render([{"content": "x"}])
    with pytest.raises(ConfigError, match="only text content parts"):
        get_chat_template("llama3").render([{"role": "user", "content": [{"type": "image_url"}]}])


def test_passthrough() -> None:
    template = get_chat_template("llama3")
    assert isinstance(template, ChatTemplate)
    assert get_chat_template(template) is template


def test_builtin_templates_take_no_options() -> None:
    with pytest.raises(ConfigError, match="takes no options"):
        get_chat_template("qwen", bos_token="<s>")
