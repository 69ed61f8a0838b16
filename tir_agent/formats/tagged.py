"""What the two tag formats (chat and completions) share: a reply parsed into a ``Turn``, and
execution results written back as text."""

from __future__ import annotations

from tir_agent.formats.base import Feedback, ModelReply
from tir_agent.formats.output import format_result
from tir_agent.formats.parsing import ParsedReply, parse_reply
from tir_agent.formats.tags import TagPreset
from tir_agent.turn import CodeCall, Turn


def parse_tagged(reply: ModelReply, tags: TagPreset, index: int) -> tuple[ParsedReply, Turn]:
    """The reply's kept text and first complete code block (REFERENCE.md §2), as a ``Turn``."""
    parsed = parse_reply(
        reply.text,
        tags,
        stop_sent=reply.stop_sent,
        finish_reason=reply.finish_reason,
        matched_stop=reply.matched_stop,
    )
    turn = Turn(
        index=index,
        text=parsed.text,
        calls=() if parsed.code is None else (CodeCall(code=parsed.code),),
        finish_reason=reply.finish_reason,
        usage=reply.usage,
        latency=reply.latency,
        discarded=parsed.discarded,
        continues=parsed.continues,
        reasoning=reply.reasoning,
    )
    return parsed, turn


def outputs_text(tags: TagPreset, feedback: list[Feedback]) -> str:
    """The formatted outputs (with hints) of the executions that ran, in order."""
    return "".join(format_result(tags, f.result, f.hint) for f in feedback if f.result)
