"""Prompt configs: shipped YAML files, strict rendering, few-shot examples in the runtime tags."""

from __future__ import annotations

from pathlib import Path

import pytest

from tir_agent.errors import PromptError
from tir_agent.formats.output import format_output
from tir_agent.formats.tags import PRESETS, get_preset
from tir_agent.prompts import FewShotExample, PromptConfig, available_prompts, load_prompt

SHIPPED = [
    "generic/math",
    "generic/math-tir-fewshot",
    "generic/tool-calling",
    "generic/tool-output",
    "openmath/tir",
    "qwen/math-tir",
]


def test_available_prompts_lists_the_shipped_configs() -> None:
    assert set(SHIPPED) <= set(available_prompts())


@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_shipped_prompt_renders_with_every_preset(name: str, preset: str) -> None:
    prompt = load_prompt(name)
    assert prompt.name == name
    assert prompt.required_keys() == {"problem"}
    messages = prompt.build_messages(
        {"problem": "What is 6*7?"}, tags=get_preset(preset), total_code_executions=4
    )
    assert messages[-1]["role"] == "user"
    assert messages[-1]["content"].endswith("What is 6*7?")
    text = "".join(m["content"] for m in messages)
    assert "\\boxed{}" in text  # the doubled braces became literal ones
    assert "{code_" not in text and "{{" not in text


def test_openmath_tir_is_byte_exact() -> None:
    messages = load_prompt("openmath/tir").build_messages(
        {"problem": "Find $x$ if $2x = {4}$."}, total_code_executions=3
    )
    assert messages == [
        {
            "role": "user",
            "content": (
                "Solve the following math problem, integrating natural language reasoning with "
                "Python code executions.\nYou may perform up to 3 Python code calls to assist "
                "your reasoning.\nMake sure to put the answer (and only answer) inside "
                "\\boxed{}.\n\nFind $x$ if $2x = {4}$."
            ),
        }
    ]


def test_generic_math_is_byte_exact() -> None:
    messages = load_prompt("generic/math").build_messages({"problem": "1+1?"})
    assert messages == [
        {
            "role": "user",
            "content": "Solve the following math problem. Make sure to put the answer (and only "
            "answer) inside \\boxed{}.\n\n1+1?",
        }
    ]


def test_qwen_math_tir_is_byte_exact() -> None:
    messages = load_prompt("qwen/math-tir").build_messages({"problem": "1+1?"})
    assert messages == [
        {
            "role": "system",
            "content": "Please integrate natural language reasoning with programs to solve the "
            "problem above, and put your final answer within \\boxed{}.",
        },
        {"role": "user", "content": "1+1?"},
    ]


def test_tool_calling_prompt_names_the_tool() -> None:
    system = load_prompt("generic/tool-calling").build_messages({"problem": "x"})[0]
    assert system["role"] == "system"
    assert "`python_exec`" in system["content"] and "stateful" in system["content"]
    assert "\\boxed{}" in system["content"]


def test_tool_output_example_is_the_seed_example_in_tool_output_tags() -> None:
    user = load_prompt("generic/tool-output").build_messages({"problem": "2+2?"})[0]["content"]
    assert (
        "I'll calculate the sum of squares from 1 to 10 using Python.\n\n"
        "<tool_call>\n"
        "sum_of_squares = sum(i**2 for i in range(1, 11))\n"
        'print(f"Sum of squares from 1 to 10: {sum_of_squares}")\n'
        "</tool_call>\n"
        "<tool_output>\n"
        "Sum of squares from 1 to 10: 385\n"
        "</tool_output>\n"
        "\n"
        "The sum of squares from 1 to 10 is \\boxed{385}."
    ) in user


def test_fewshot_example_follows_the_runtime_tags() -> None:
    prompt = load_prompt("generic/math-tir-fewshot")
    qwen = prompt.build_messages({"problem": "P"}, tags=get_preset("qwen"))[0]["content"]
    assert qwen == (
        "Solve the following math problem, integrating natural language reasoning with Python "
        "code executions. Write Python code in a code block exactly as in the example; it is "
        "executed and its output is shown right after the block. Make sure to put the answer "
        "(and only answer) inside \\boxed{}.\n\n"
        "Here is an example of a problem and its solution:\n\n"
        "Problem:\nWhat is the remainder when $2^{100}$ is divided by 7?\n\n"
        "Solution:\nI will compute the remainder with Python.\n"
        "```python\nprint(pow(2, 100, 7))\n```\n```output\n2\n```\n"
        "The remainder when $2^{100}$ is divided by 7 is 2.\n\n**Final Answer**: \\boxed{2}\n\n\n"
        "Now solve this problem in the same way:\nP"
    )
    openmath = prompt.build_messages({"problem": "P"}, tags=get_preset("openmath"))[0]["content"]
    assert "<tool_call>\nprint(pow(2, 100, 7))\n</tool_call>\n```output\n2\n```\n" in openmath
    llama = prompt.build_messages({"problem": "P"}, tags=get_preset("llama3"))[0]["content"]
    expected_output = format_output(get_preset("llama3"), stdout="2\n")
    assert "<|python_tag|>\nprint(pow(2, 100, 7))\n<|eom_id|>" + expected_output + "The" in llama
    assert "completed\n[stdout]\n2\n[/stdout]" in llama


def test_fewshot_without_tags_is_an_error_naming_the_prompt() -> None:
    with pytest.raises(PromptError, match=r"generic/math-tir-fewshot.*tags="):
        load_prompt("generic/math-tir-fewshot").build_messages({"problem": "P"})


def test_example_code_with_braces_is_not_formatted() -> None:
    example = FewShotExample(
        problem="p",
        solution="{code_begin}d = {'a': 1}\nprint(f'{d}')\n{code_end}\n\n"
        "{code_output_begin}{'a': 1}{code_output_end}Done: \\boxed{1}",
    )
    assert example.render_solution(get_preset("nemotron")) == (
        "<llm-code>\nd = {'a': 1}\nprint(f'{d}')\n</llm-code>\n"
        "<llm-code-output>\n{'a': 1}\n</llm-code-output>\nDone: \\boxed{1}"
    )


def test_missing_key_names_the_key_and_the_prompt() -> None:
    prompt = PromptConfig(name="mine", user="Problem: {problem}\nHint: {hint}")
    assert prompt.required_keys() == {"problem", "hint"}
    with pytest.raises(PromptError, match=r"prompt mine, user message needs \{hint\}"):
        prompt.build_messages({"problem": "x"})


def test_missing_key_in_system_message() -> None:
    prompt = PromptConfig(name="sys", system="You are {persona}.", user="{problem}")
    with pytest.raises(PromptError, match=r"prompt sys, system message needs \{persona\}"):
        prompt.build_messages({"problem": "x"})


def test_total_code_executions_required_when_stated() -> None:
    with pytest.raises(PromptError, match=r"openmath/tir.*total_code_executions_in_prompt"):
        load_prompt("openmath/tir").build_messages({"problem": "x"})
    # A row may carry the value itself.
    content = load_prompt("openmath/tir").build_messages(
        {"problem": "x", "total_code_executions": 5}
    )[0]["content"]
    assert "up to 5 Python code calls" in content


def test_system_override_and_suffix() -> None:
    prompt = load_prompt("qwen/math-tir")
    messages = prompt.build_messages(
        {"problem": "1+1?"}, system="Answer in \\boxed{}.", suffix="\nThink step by step."
    )
    assert messages == [
        {"role": "system", "content": "Answer in \\boxed{}."},
        {"role": "user", "content": "1+1?\nThink step by step."},
    ]
    assert prompt.build_messages({"problem": "1+1?"}, system="") == [
        {"role": "user", "content": "1+1?"}
    ]


def test_from_templates() -> None:
    prompt = PromptConfig.from_templates(system="Use \\boxed{{}}.", user="Q: {question}")
    assert prompt.required_keys() == {"question"}
    assert prompt.build_messages({"question": "2?", "unused": 1}) == [
        {"role": "system", "content": "Use \\boxed{}."},
        {"role": "user", "content": "Q: 2?"},
    ]


@pytest.mark.parametrize(
    ("user", "message"),
    [
        ("Put it in \\boxed{}: {problem}", "positional placeholder"),
        ("Unclosed {problem", "malformed template"),
        ("Stray } brace {problem}", "malformed template"),
    ],
)
def test_malformed_templates_fail_when_loaded(user: str, message: str) -> None:
    with pytest.raises(PromptError, match=message):
        PromptConfig.from_templates(user=user)


def test_load_by_path_and_yaml_errors(tmp_path: Path) -> None:
    path = tmp_path / "custom.yaml"
    path.write_text('system: "S"\nuser: "Q={q}"\ncode_tags: qwen\n')
    prompt = load_prompt(path)
    assert prompt.name == str(path)
    assert prompt.code_tags == "qwen"
    assert prompt.build_messages({"q": 1})[1] == {"role": "user", "content": "Q=1"}
    assert load_prompt(str(path)) == prompt
    assert load_prompt(prompt) is prompt

    bad = tmp_path / "bad.yaml"
    bad.write_text("user: '{problem}'\nsystem_prompt: oops\n")
    with pytest.raises(PromptError, match=r"bad.yaml is invalid.*system_prompt"):
        load_prompt(bad)
    bad.write_text("user: [unclosed\n")
    with pytest.raises(PromptError, match="cannot be read"):
        load_prompt(bad)
    bad.write_text("- just a list\n")
    with pytest.raises(PromptError, match="must hold a mapping"):
        load_prompt(bad)
    with pytest.raises(PromptError, match="does not exist"):
        load_prompt(tmp_path / "missing.yaml")
    bad.write_text("user: '{problem}'\ncode_tags: nope\n")
    with pytest.raises(PromptError, match="Unknown tag preset 'nope'"):
        load_prompt(bad)


def test_unknown_name_lists_available_prompts() -> None:
    with pytest.raises(PromptError, match=r"Unknown prompt 'openmath/nope'.*openmath/tir"):
        load_prompt("openmath/nope")
    with pytest.raises(PromptError, match="Unknown prompt"):
        load_prompt("../pyproject")


def test_nemo_skills_style_yaml_with_few_shot_format(tmp_path: Path) -> None:
    path = tmp_path / "ns.yaml"
    path.write_text(
        "few_shot_examples:\n"
        '  prefix: "Examples:\\n"\n'
        '  template: "Q: {problem}\\nA: {solution}\\n\\n"\n'
        '  suffix: "Now:\\n"\n'
        'system: ""\n'
        "examples:\n"
        "  - problem: '1+1'\n"
        "    solution: '\\boxed{2}'\n"
        "user: |-\n"
        "  Solve. Put the answer in \\boxed{{}}.\n"
        "  {examples}{problem}\n"
    )
    assert load_prompt(path).build_messages({"problem": "2+2"}) == [
        {
            "role": "user",
            "content": "Solve. Put the answer in \\boxed{}.\nExamples:\nQ: 1+1\nA: \\boxed{2}\n\nNow:\n2+2",
        }
    ]
