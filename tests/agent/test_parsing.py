"""Code-block detection in tag-format text (REFERENCE.md §2), as pure functions."""

from __future__ import annotations

from tir_agent.formats.parsing import BlockWatcher, parse_reply
from tir_agent.formats.tags import PRESETS


def test_parse_reply_rules() -> None:
    om = PRESETS["openmath"]
    # Swallowed only when stop was sent and finish_reason is stop.
    assert (
        parse_reply("a<tool_call>\nx=1\n", om, stop_sent=True, finish_reason="stop").code == "x=1\n"
    )
    assert (
        parse_reply("a<tool_call>\nx=1\n", om, stop_sent=False, finish_reason="stop").code is None
    )
    assert (
        parse_reply("a<tool_call>\nx=1\n", om, stop_sent=True, finish_reason="length").code is None
    )
    # Another stop string (end of turn) reported by the server: not a code stop.
    other = parse_reply(
        "a<tool_call>\nx=1\n", om, stop_sent=True, finish_reason="stop", matched_stop="<|im_end|>"
    )
    assert other.code is None and not other.continues
    # The code is between the last code_begin and the following code_end.
    assert (
        parse_reply(
            "<tool_call>a<tool_call>b</tool_call>", om, stop_sent=False, finish_reason="stop"
        ).code
        == "b"
    )
    # A stray closing tag is skipped; the next complete block counts.
    stray = parse_reply(
        "x</tool_call>y<tool_call>z</tool_call>w", om, stop_sent=False, finish_reason="stop"
    )
    assert (stray.code, stray.text, stray.discarded) == (
        "z",
        "x</tool_call>y<tool_call>z</tool_call>",
        "w",
    )


def test_block_watcher_across_chunks() -> None:
    watcher = BlockWatcher(PRESETS["openmath"])
    assert [
        watcher.feed(p)
        for p in ["Let <tool", "_call>\npri", "nt(1)</tool_", "call> ok <tool_call>"]
    ] == [False, True, False, True]
