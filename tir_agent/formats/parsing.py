"""Finding the code block in a tag-format reply (REFERENCE.md §2).

One function, :func:`parse_reply`, turns the raw text of a reply into what the loop needs: the text
to keep, the code to run (if any), and whether the model must simply continue its text.
"""

from __future__ import annotations

from dataclasses import dataclass

from tir_agent.formats.tags import TagPreset


@dataclass(frozen=True, slots=True)
class ParsedReply:
    """The outcome of parsing one tag-format reply."""

    text: str
    """The text to keep: up to and including the first complete block, stop string restored."""
    code: str | None
    """The code of the first complete block, or ``None``."""
    discarded: str = ""
    """What the model wrote after that block (not grounded in a real output)."""
    continues: bool = False
    """A stop string that closes no code block fired: it was restored; the model continues."""


def _open_fence(text: str) -> bool:
    """Whether ``text`` ends inside a markdown fence (an odd number of fence lines)."""
    count = 0
    for line in text.split("\n"):
        if line.lstrip().startswith("```"):
            count += 1
    return count % 2 == 1


def parse_reply(
    raw: str,
    tags: TagPreset,
    *,
    stop_sent: bool,
    finish_reason: str | None,
    matched_stop: str | int | None = None,
) -> ParsedReply:
    """Find the first complete code block of ``raw`` (REFERENCE.md §2).

    ``stop_sent``: ``code_end`` was sent as a stop string. ``matched_stop``: the stop string the
    server reports (vLLM ``stop_reason``, SGLang ``matched_stop``), if any.
    """
    begin, end = tags.code_begin, tags.code_end
    text = raw
    reported = matched_stop if isinstance(matched_stop, str) else None
    # Did our code_end stop string (rather than the end of the model's turn) end this reply?
    at_stop = stop_sent and finish_reason == "stop" and reported in (None, end)
    if at_stop and not text.endswith(end):
        if text.count(begin) > text.count(end):
            text += end  # the stop string closed the open block and was swallowed
        elif reported == end or (end.startswith("```") and _open_fence(text)):
            text += end  # it closed something else (e.g. a ```text fence): restore it
    pos = 0
    while True:
        close = text.find(end, pos)
        if close < 0:
            break
        start = text.rfind(begin, pos, close)
        if start >= 0:
            cut = close + len(end)
            code = text[start + len(begin) : close]
            if code.startswith("\n") and not begin.endswith("\n"):
                code = code[1:]  # the newline after an inline tag like <tool_call> is layout
            return ParsedReply(text=text[:cut], code=code, discarded=text[cut:])
        pos = close + len(end)  # a stray closing tag: not a block, keep looking
    # A stop that closes no code block must not end the solution: the model continues.
    continues = at_stop and text.endswith(end)
    return ParsedReply(text=text, code=None, continues=continues)


class BlockWatcher:
    """Notices, while text streams in, the moment a code block opens (for ``CodeStart`` events)."""

    __slots__ = ("_begin", "_end", "_open", "_tail")

    def __init__(self, tags: TagPreset) -> None:
        self._begin = tags.code_begin
        self._end = tags.code_end
        self._tail = ""
        self._open = False

    def feed(self, delta: str) -> bool:
        """Add streamed text; ``True`` when a code block opened in it."""
        self._tail += delta
        opened = False
        while True:
            marker = self._end if self._open else self._begin
            found = self._tail.find(marker)
            if found < 0:
                break
            self._tail = self._tail[found + len(marker) :]
            self._open = not self._open
            opened = opened or self._open
        keep = max(len(self._begin), len(self._end))
        self._tail = self._tail[-keep:]
        return opened
