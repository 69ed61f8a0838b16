"""Solutions as transcripts: read from and written to tag text, tool-call conversations and
OpenAI fine-tuning lines (the conversions behind ``tir-agent export``, :mod:`tir_agent.export`).

A solution is read into a :data:`Transcript`, a list of text pieces and :class:`Block` values (the
code, and the output the sandbox gave it), from either a tag transcript (``generation``, any
preset) or a native tool-call conversation (``messages``). It is written back as a tag transcript
of any preset, as a tool-call conversation, or as an OpenAI fine-tuning line (``messages`` with
``tool_calls``, plus ``tools``).

Round trips keep code and outputs exactly. In tags a block is written ``code_begin`` (plus a
newline when the tag has none), the code, one newline, ``code_end``; reading strips exactly those
newlines back, so any code survives, and model-written blocks in that layout come back byte for
byte. Outputs are re-rendered with :func:`~tir_agent.formats.output.format_output` with their
hints. One loss is inherent: ``qwen``-style outputs (and tool messages) hold stdout and stderr
joined, with no status, so converting them into the ``llama`` output format infers the status
(``error`` on a traceback, ``timeout`` on a timeout notice) and puts the text in ``[stdout]``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from tir_agent.budget import REMAINING_HINT, RUN_OUT_HINT
from tir_agent.formats.output import format_output
from tir_agent.formats.tags import TagPreset, get_preset

__all__ = [
    "Block",
    "FunctionCall",
    "Transcript",
    "from_messages",
    "parse_tags",
    "prompt_end",
    "render_tags",
    "to_messages",
    "to_openai_finetune",
]

TOOL_NAME = "python_exec"


@dataclass(frozen=True, slots=True)
class Block:
    """One code block and what running it printed (``None``: it was never run)."""

    code: str
    """The code exactly as executed."""
    stdout: str | None = None
    """Standard output (in ``qwen``-style outputs and tool messages: stdout and stderr joined)."""
    stderr: str = ""
    """Standard error (kept apart only by the ``llama`` output format)."""
    status: str = "completed"
    """``completed``, ``error`` or ``timeout`` (inferred where the source does not say)."""
    hint: str = ""
    """The budget hint that followed the output (REFERENCE.md §4), if any."""

    @property
    def executed(self) -> bool:
        """Whether an output followed the code."""
        return self.stdout is not None

    @property
    def output(self) -> str:
        """stdout and stderr joined (what a tool message carries, before the hint)."""
        return (self.stdout or "") + self.stderr


@dataclass(frozen=True, slots=True)
class FunctionCall:
    """A call of one of the user's tools (not ``python_exec``) and the output the model got.

    Kept through native conversions (messages, OpenAI fine-tuning) as the tool call it was; a
    tag transcript has no form for it, so :func:`render_tags` leaves it out."""

    name: str
    arguments: str
    """The arguments as the model wrote them (a JSON string)."""
    output: str


Transcript = list[str | Block | FunctionCall]
"""A solution: text pieces, code blocks and function calls, in order."""

_REMAINING_TEXT = re.escape(REMAINING_HINT).replace(re.escape("{remaining}"), r"\d+")
_REMAINING_AT = re.compile(_REMAINING_TEXT)
_REMAINING_END = re.compile(_REMAINING_TEXT + r"\Z")


def _split_hint(text: str) -> tuple[str, str]:
    """``(body, hint)``: a budget hint at the end of ``text`` split off."""
    if text.endswith(RUN_OUT_HINT):
        return text[: -len(RUN_OUT_HINT)], RUN_OUT_HINT
    start = text.rfind("```system\nRemaining code executions: ")
    if start >= 0 and _REMAINING_END.match(text, start):
        return text[:start], text[start:]
    return text, ""


def _status(output: str) -> str:
    if "Traceback (most recent call last)" in output:
        return "error"
    if re.search(r"timed out after", output, re.IGNORECASE):
        return "timeout"
    return "completed"


def _strip_code(inner: str, tags: TagPreset) -> str:
    if not tags.code_begin.endswith("\n") and inner.startswith("\n"):
        inner = inner[1:]
    return inner[:-1] if inner.endswith("\n") else inner


def code_text(tags: TagPreset, code: str) -> str:
    """A code block as it is written in tags (the inverse of reading it)."""
    head = tags.code_begin if tags.code_begin.endswith("\n") else tags.code_begin + "\n"
    return head + code + "\n" + tags.code_end


def _parse_output(text: str, at: int, tags: TagPreset) -> tuple[Block | None, int]:
    """The output block at ``text[at:]`` as a partial :class:`Block` (no code), and its end."""
    if tags.output_format == "qwen":
        if not text.startswith(tags.output_begin, at):
            return None, at
        start = at + len(tags.output_begin)
        end = text.find(tags.output_end, start)
        if end < 0:
            return None, at
        body = text[start:end]
        after = end + len(tags.output_end)
        hint = ""
        if text.startswith(RUN_OUT_HINT, after):
            hint = RUN_OUT_HINT
        elif match := _REMAINING_AT.match(text, after):
            hint = match.group(0)
        return Block("", body, "", _status(body), hint), after + len(hint)
    opener = tags.output_begin + "\n\n"
    closer = tags.output_end + "\n\n"
    if not text.startswith(opener, at):
        return None, at
    start = at + len(opener)
    end = text.find(closer, start)
    if end < 0:
        return None, at
    inner, hint = _split_hint(text[start:end])
    stdout = stderr = ""
    # Read from the end: a stream may itself contain "[/stdout]" and the like.
    if inner.endswith("[/stderr]") and (cut := inner.rfind("\n[stderr]\n")) >= 0:
        stderr, inner = inner[cut + len("\n[stderr]\n") : -len("[/stderr]")], inner[:cut]
    if inner.endswith("[/stdout]") and (cut := inner.find("\n[stdout]\n")) >= 0:
        stdout, inner = inner[cut + len("\n[stdout]\n") : -len("[/stdout]")], inner[:cut]
    if inner not in ("completed", "error", "timeout"):
        return None, at
    status = inner
    return Block("", stdout, stderr, status, hint), end + len(closer)


def parse_tags(text: str, tags: TagPreset | str) -> Transcript:
    """A tag transcript (a ``generation``) as text pieces and blocks."""
    preset = get_preset(tags)
    parts: Transcript = []
    pos = 0
    while True:
        begin = text.find(preset.code_begin, pos)
        if begin < 0:
            break
        end = text.find(preset.code_end, begin + len(preset.code_begin))
        if end < 0:
            break  # an unclosed block is text
        if begin > pos:
            parts.append(text[pos:begin])
        code = _strip_code(text[begin + len(preset.code_begin) : end], preset)
        after = end + len(preset.code_end)
        output, pos = _parse_output(text, after, preset)
        if output is None:
            parts.append(Block(code))
            pos = after
        else:
            parts.append(Block(code, output.stdout, output.stderr, output.status, output.hint))
    if pos < len(text):
        parts.append(text[pos:])
    return parts


def render_tags(parts: Transcript, tags: TagPreset | str) -> str:
    """A transcript written as text with ``tags`` (outputs formatted as live executions are)."""
    preset = get_preset(tags)
    out: list[str] = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
            continue
        if isinstance(part, FunctionCall):
            continue
        out.append(code_text(preset, part.code))
        if part.executed:
            stdout, stderr = part.stdout or "", part.stderr
            if preset.output_format == "qwen":
                stdout, stderr = stdout + stderr, ""
            out.append(
                format_output(
                    preset, stdout=stdout, stderr=stderr, status=part.status, hint=part.hint
                )
            )
    return "".join(out)


def prompt_end(messages: list[dict[str, Any]]) -> int:
    return next((i for i, m in enumerate(messages) if m.get("role") == "assistant"), len(messages))


def from_messages(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], Transcript]:
    """A native tool-call conversation as ``(prompt messages, transcript)``.

    Calls that were refused (arguments not valid JSON, or over the budget) were never run and are
    left out, as they are from the agent's ``generation``.
    """
    start = prompt_end(messages)
    results = {
        m.get("tool_call_id"): m.get("content") or ""
        for m in messages[start:]
        if m.get("role") == "tool"
    }
    parts: Transcript = []
    ran_out = False
    for message in messages[start:]:
        if message.get("role") != "assistant":
            continue
        text = message.get("content") or ""
        calls = message.get("tool_calls") or []
        blocks: list[Block | FunctionCall] = []
        for call in calls:
            function = call.get("function") or {}
            content = results.get(call.get("id"))
            name = function.get("name")
            if name != TOOL_NAME and isinstance(name, str) and content is not None:
                blocks.append(FunctionCall(name, function.get("arguments") or "", content))
                continue
            try:
                code = json.loads(function.get("arguments") or "")["code"]
            except (ValueError, KeyError, TypeError):
                continue  # refused: never executed
            if function.get("name") != TOOL_NAME or content is None or not isinstance(code, str):
                continue
            if ran_out and content == RUN_OUT_HINT:
                continue  # over the budget: answered, not run
            body, hint = _split_hint(content)
            ran_out = ran_out or hint == RUN_OUT_HINT
            blocks.append(Block(code, body, "", _status(body), hint))
        if text and any(isinstance(b, Block) for b in blocks) and not text.endswith("\n"):
            text += "\n"  # as the agent writes it: a block starts on its own line
        if text:
            parts.append(text)
        parts.extend(blocks)
    return messages[:start], parts


def to_messages(parts: Transcript, tags: TagPreset | str = "openmath") -> list[dict[str, Any]]:
    """The transcript as assistant and tool messages (a block never run stays text, in ``tags``)."""
    preset = get_preset(tags)
    messages: list[dict[str, Any]] = []
    text = ""
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []

    def flush() -> None:
        nonlocal text, calls, results
        if text or calls:
            message: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                message["tool_calls"] = calls
            messages.append(message)
            messages.extend(results)
        text, calls, results = "", [], []

    count = 0
    for part in parts:
        if isinstance(part, str):
            if calls:
                flush()
            text += part
        elif isinstance(part, FunctionCall):
            call_id = f"call_{count}"
            count += 1
            calls.append(
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": part.name, "arguments": part.arguments},
                }
            )
            results.append({"role": "tool", "tool_call_id": call_id, "content": part.output})
        elif not part.executed:
            if calls:
                flush()
            text += code_text(preset, part.code)
        else:
            call_id = f"call_{count}"
            count += 1
            arguments = json.dumps({"code": part.code}, ensure_ascii=False)
            calls.append(
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": TOOL_NAME, "arguments": arguments},
                }
            )
            results.append(
                {"role": "tool", "tool_call_id": call_id, "content": part.output + part.hint}
            )
    flush()
    if messages and messages[-1]["role"] == "tool":
        messages.append({"role": "assistant", "content": ""})
    return messages


def to_openai_finetune(
    prompt: list[dict[str, Any]],
    parts: Transcript,
    tools: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One line of OpenAI fine-tuning JSONL: ``messages`` with tool calls, and ``tools``:
    ``python_exec`` and the definitions of the functions called, taken from ``tools`` (a batch
    row's ``tools``) or, for a function without one, a bare ``{"name", "parameters"}``."""
    from tir_agent.formats.native import tool_definition

    known = {
        t["function"]["name"]: t
        for t in tools or []
        if isinstance(t, dict) and isinstance(t.get("function"), dict)
    }
    definitions = [tool_definition()]
    for name in dict.fromkeys(p.name for p in parts if isinstance(p, FunctionCall)):
        bare = {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
        definitions.append(known.get(name, bare))
    messages = [{"role": m["role"], "content": m.get("content")} for m in prompt]
    return {"messages": messages + to_messages(parts), "tools": definitions}
