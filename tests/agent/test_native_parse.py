"""Parsing one native tool call's arguments into a code call (pure function)."""

from __future__ import annotations

import pytest

from tir_agent.formats.base import ToolCallData
from tir_agent.formats.native import parse_call


def call(arguments: str, name: str = "python_exec") -> ToolCallData:
    return ToolCallData("call_1", name, arguments)


ESCAPED = '{"code": "print(1)\\nprint(2)\\n"}'
RAW = '{"code": "print(1)' + "\n" + "print(2)" + "\n" + '"}'
MIXED = '{"code": "if x:' + "\n\t" + r'return \"a\\n\""}'


@pytest.mark.parametrize(
    ("arguments", "code"),
    [
        (ESCAPED, "print(1)\nprint(2)\n"),
        (RAW, "print(1)\nprint(2)\n"),
        (MIXED, 'if x:\n\treturn "a\\n"'),
    ],
    ids=["escaped", "raw-newlines", "raw-newline-and-tab-beside-escapes"],
)
def test_code_is_exact_even_with_raw_control_characters(arguments: str, code: str) -> None:
    # llama.cpp's grammar lets raw newlines and tabs into the argument string.
    parsed = parse_call(call(arguments))
    assert parsed.error is None and parsed.code == code
    assert parsed.arguments == arguments and parsed.id == "call_1"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ('{"code": "print(1)', "(Unterminated string starting at position 9)"),
        ('{"code": "print(1)"', "(Expecting ',' delimiter at position 19)"),
        ("", "(Expecting value at position 0)"),
    ],
)
def test_invalid_json_names_the_problem_and_position(arguments: str, message: str) -> None:
    parsed = parse_call(call(arguments))
    assert parsed.code is None and parsed.error is not None
    assert parsed.error.startswith("Error: the arguments are not valid JSON " + message)
    assert " at at " not in parsed.error


def test_unknown_tool_is_refused() -> None:
    parsed = parse_call(call('{"code": "1"}', name="python"))
    assert parsed.code is None
    assert parsed.error == "Error: unknown tool 'python'; the only tool is python_exec."
