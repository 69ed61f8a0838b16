"""Hermes-style tool calls that a server returns as text (tir_agent.formats.native).

llama-cpp-python renders Qwen2.5's tool template but does not parse the calls: the replies below
are the shapes Qwen2.5-Coder-0.5B wrote through it and in completions (the ``<tool_call>`` tags,
a user-defined token that reaches the text, may or may not be there: the 0.5B mostly writes the
bare object).
"""

from __future__ import annotations

from tir_agent.formats.base import ModelReply, ToolCallData
from tir_agent.formats.native import ToolsFormat, text_tool_calls
from tir_agent.formats.tags import get_preset
from tir_agent.turn import Usage

_CALL = '{"name": "python_exec", "arguments": {"code": "print(6 * 7)"}}'


def test_a_bare_call_a_tagged_call_and_a_fenced_call() -> None:
    for text in (_CALL, f"<tool_call>\n{_CALL}\n</tool_call>", f"```json\n{_CALL}\n```"):
        rest, calls = text_tool_calls(text, 3)
        assert rest == ""
        assert calls == [ToolCallData("call_3_0", "python_exec", '{"code": "print(6 * 7)"}')]


def test_text_around_calls_is_kept_and_each_call_is_found() -> None:
    text = f"I will compute it.\n<tool_call>\n{_CALL}\n</tool_call>\n{_CALL}\nDone."
    rest, calls = text_tool_calls(text, 0)
    assert rest == "I will compute it.\nDone."
    assert [c.id for c in calls] == ["call_0_0", "call_0_1"]


def test_json_that_is_not_a_call_stays_text() -> None:
    for text in ('{"response": "385"}', 'The answer is {"name": 1}', '{"name": "x", "other": 1}'):
        assert text_tool_calls(text, 0) == (text, [])


def test_raw_newlines_in_the_code_string_are_accepted() -> None:
    rest, calls = text_tool_calls(
        '{"name": "python_exec", "arguments": {"code": "a = 1\nprint(a)"}}', 0
    )
    assert rest == "" and calls[0].arguments == '{"code": "a = 1\\nprint(a)"}'


def test_the_tools_format_runs_a_call_written_as_text() -> None:
    messages: list[dict[str, object]] = [{"role": "user", "content": "6*7?"}]
    fmt = ToolsFormat(messages, get_preset("qwen"), {"model": "local"})  # type: ignore[arg-type]
    reply = ModelReply(text=f"Let me run it.\n{_CALL}", finish_reason="stop", usage=Usage())
    turn = fmt.parse(reply, 1)
    assert [c.code for c in turn.calls] == ["print(6 * 7)"] and turn.text == "Let me run it."
    assert messages[-1] == {
        "role": "assistant",
        "content": "Let me run it.",
        "tool_calls": [
            {
                "id": "call_1_0",
                "type": "function",
                "function": {"name": "python_exec", "arguments": '{"code": "print(6 * 7)"}'},
            }
        ],
    }
    # A structured call from the server is taken as it is; the text is not searched.
    structured = ToolCallData("srv_1", "python_exec", '{"code": "1"}')
    reply = ModelReply(
        text=_CALL, finish_reason="tool_calls", usage=Usage(), tool_calls=[structured]
    )
    assert [c.id for c in fmt.parse(reply, 2).calls] == ["srv_1"]


def test_a_call_written_when_the_tool_was_withheld_stays_text() -> None:
    fmt = ToolsFormat([], get_preset("qwen"), {"model": "local"})
    assert fmt.build_request(final=True, max_tokens=None).params["tool_choice"] == "none"
    turn = fmt.parse(ModelReply(text=_CALL, finish_reason="stop", usage=Usage()), 2)
    assert turn.calls == () and turn.text == _CALL
    fmt.build_request(final=False, max_tokens=None)
    assert len(fmt.parse(ModelReply(text=_CALL, finish_reason="stop", usage=Usage()), 3).calls) == 1
