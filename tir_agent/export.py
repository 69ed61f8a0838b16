"""Training data from generations: the TIR filters of REFERENCE.md §10 and format conversion.

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

import argparse
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tir_agent.answers import extract_answer
from tir_agent.budget import REMAINING_HINT, RUN_OUT_HINT
from tir_agent.errors import ConfigError
from tir_agent.formats.output import format_output
from tir_agent.formats.tags import PRESETS, TagPreset, get_preset

__all__ = [
    "DEFAULT_FILTERS",
    "FILTERS",
    "Block",
    "FunctionCall",
    "Transcript",
    "apply_filters",
    "from_messages",
    "parse_tags",
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


def _prompt_end(messages: list[dict[str, Any]]) -> int:
    return next((i for i, m in enumerate(messages) if m.get("role") == "assistant"), len(messages))


def from_messages(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], Transcript]:
    """A native tool-call conversation as ``(prompt messages, transcript)``.

    Calls that were refused (arguments not valid JSON, or over the budget) were never run and are
    left out, as they are from the agent's ``generation``.
    """
    start = _prompt_end(messages)
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


# -- filters (REFERENCE.md §10) ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    """What the filters look at."""

    record: Mapping[str, Any]
    parts: Transcript
    text: str


def _boxed_end(text: str, start: int) -> int | None:
    """End (exclusive) of the first balanced ``\\boxed{...}`` at or after ``start``."""
    at = text.find("\\boxed{", start)
    if at < 0:
        return None
    depth = 0
    for i in range(at + len("\\boxed"), len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def _has_code(s: Sample) -> bool:
    return any(isinstance(p, Block) for p in s.parts)


def _outputs_follow(s: Sample) -> bool:
    return all(p.executed for p in s.parts if isinstance(p, Block))


def _no_early_answer(s: Sample) -> bool:
    if not _has_code(s):
        return True  # nothing comes "before the first code block"; has_code judges this
    before = ""
    for part in s.parts:
        if isinstance(part, Block):
            break
        if isinstance(part, str):
            before += part
    answer = s.record.get("predicted_answer") or extract_answer(s.text)
    return "\\boxed{" not in before and not (answer and answer in before)


def _final_answer(s: Sample) -> bool:
    return _final_cut(s.parts) is not None


def _final_cut(parts: Transcript) -> Transcript | None:
    """The transcript cut right after ``**Final Answer**`` and its balanced ``\\boxed{}``."""
    if not parts or not isinstance(parts[-1], str):
        return None
    last = parts[-1]
    marker = last.find("**Final Answer**")
    if marker < 0:
        return None
    end = _boxed_end(last, marker)
    return None if end is None else [*parts[:-1], last[:end]]


def _absent(needle: str, *, fold: bool = False) -> Callable[[Sample], bool]:
    def check(s: Sample) -> bool:
        return (needle.lower() not in s.text.lower()) if fold else needle not in s.text

    return check


FILTERS: dict[str, tuple[Callable[[Sample], bool], str]] = {
    "no_error": (lambda s: s.record.get("error") is None, "the sample's generation failed"),
    "has_code": (_has_code, "no code block"),
    "outputs_follow": (_outputs_follow, "a code block without an output block"),
    "no_early_answer": (_no_early_answer, "\\boxed{ or the answer before the first code block"),
    "final_answer": (
        _final_answer,
        "no **Final Answer** with a balanced \\boxed{} (kept: cut after it)",
    ),
    "correct": (lambda s: s.record.get("symbolic_correct") is True, "not graded correct"),
    "no_traceback": (_absent("Traceback (most recent call last)"), "a traceback"),
    "no_output_cut": (_absent("<output cut>"), "a truncated output"),
    "no_timeout": (_absent("timed out", fold=True), "a timed-out execution"),
    "no_syntax_error": (_absent("SyntaxError"), "a SyntaxError"),
}
"""Every filter: name -> (keep?, what a dropped sample had), in the order they are checked."""

DEFAULT_FILTERS = ("no_error", "has_code", "outputs_follow", "no_early_answer", "final_answer")
"""The filters on unless changed; the others are the recipe's optional ones (and ``correct``)."""


def apply_filters(sample: Sample, enabled: set[str]) -> str | None:
    """The name of the first enabled filter ``sample`` fails, or ``None`` when it is kept."""
    for name, (keep, _) in FILTERS.items():
        if name in enabled and not keep(sample):
            return name
    return None


# -- the export command -----------------------------------------------------------------------

DESCRIPTION = (
    """\
Filter solutions into training data and convert them between formats.

Input: generation JSONL (several files, e.g. the seeds out-rs*.jsonl, are read in turn). A row's
solution is its `generation` (a tag transcript, read with --from-tags) or, with --from messages
(or when a row has no generation), its native tool-call `messages`.

Output (--to):
  tags      the row with `generation` rewritten in --tags (default: the --from-tags preset)
  messages  the row plus `messages`: prompt, assistant tool calls and tool results
  openai    OpenAI fine-tuning lines: {"messages": [...with tool_calls...], "tools": [python_exec,
            and the functions called (definitions from the row's `tools`)]}

Filters (REFERENCE.md §10), checked in this order; a dropped row counts under the first it fails:
"""
    + "\n".join(
        f"  {name:<16}{'[on]  ' if name in DEFAULT_FILTERS else '[off] '}drops: {why}"
        for name, (_, why) in FILTERS.items()
    )
    + "\nWith final_answer on, kept solutions are cut right after the final \\boxed{}.\n"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``tir-agent export``."""
    parser.add_argument("files", nargs="+", metavar="FILE", help="generation JSONL files")
    parser.add_argument("--output", "-o", required=True, metavar="FILE", help="output JSONL")
    parser.add_argument("--to", choices=["tags", "messages", "openai"], default="tags")
    parser.add_argument(
        "--from", dest="source", choices=["auto", "tags", "messages"], default="auto"
    )
    parser.add_argument(
        "--from-tags", default="openmath", help=f"preset of the input ({', '.join(PRESETS)})"
    )
    parser.add_argument("--tags", help="preset of the output transcript (default: --from-tags)")
    parser.add_argument(
        "--enable", action="append", default=[], metavar="FILTER", help="turn a filter on"
    )
    parser.add_argument(
        "--disable", action="append", default=[], metavar="FILTER", help="turn a filter off"
    )
    parser.add_argument("--no-filters", action="store_true", help="convert only, keep every row")
    parser.add_argument(
        "--all-filters", action="store_true", help="every filter on (also `correct`)"
    )


def enabled_filters(args: argparse.Namespace) -> set[str]:
    """The filters in force for these flags; an unknown name is a :class:`ConfigError`."""
    for name in [*args.enable, *args.disable]:
        if name not in FILTERS:
            raise ConfigError(f"Unknown filter {name!r}; filters: {', '.join(FILTERS)}")
    enabled = set() if args.no_filters else set(FILTERS if args.all_filters else DEFAULT_FILTERS)
    return (enabled | set(args.enable)) - set(args.disable)


def _rows(paths: list[Path]) -> Iterator[dict[str, Any]]:
    from tir_agent.batch.journal import read_rows

    for path in paths:
        for _, _, row in read_rows(path):
            yield row


def read_solution(
    row: Mapping[str, Any], source: str, tags: TagPreset
) -> tuple[list[dict[str, Any]], Transcript]:
    """``(prompt messages, transcript)`` of one row."""
    generation = row.get("generation")
    messages = row.get("messages")
    use_messages = source == "messages" or (source == "auto" and not isinstance(generation, str))
    if use_messages and isinstance(messages, list):
        return from_messages(messages)
    prompt: list[dict[str, Any]] = []
    if isinstance(messages, list):
        prompt = messages[: _prompt_end(messages)]
    elif isinstance(row.get("problem"), str):
        prompt = [{"role": "user", "content": row["problem"]}]
    return prompt, parse_tags(generation if isinstance(generation, str) else "", tags)


def run(args: argparse.Namespace) -> Counter[str]:
    """``tir-agent export``: filter and convert; returns kept/dropped counts per reason."""
    source_tags = get_preset(args.from_tags)
    target_tags = get_preset(args.tags) if args.tags else source_tags
    enabled = enabled_filters(args)
    output = Path(args.output)
    counts: Counter[str] = Counter()
    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("w", encoding="utf-8") as out:
            for row in _rows([Path(f) for f in args.files]):
                counts["total"] += 1
                prompt, parts = read_solution(row, args.source, source_tags)
                sample = Sample(row, parts, render_tags(parts, source_tags))
                dropped = apply_filters(sample, enabled)
                if dropped is not None:
                    counts[dropped] += 1
                    continue
                if "final_answer" in enabled:
                    parts = _final_cut(parts) or parts
                counts["kept"] += 1
                if args.to == "openai":
                    line: dict[str, Any] = to_openai_finetune(prompt, parts, row.get("tools"))
                elif args.to == "messages":
                    line = {**row, "messages": prompt + to_messages(parts, target_tags)}
                else:
                    line = {**row, "generation": render_tags(parts, target_tags)}
                out.write(json.dumps(line, ensure_ascii=False) + "\n")
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    return counts


def report(counts: Counter[str]) -> str:
    """A readable summary of :func:`run`'s counts."""
    lines = [f"kept {counts['kept']} of {counts['total']} solutions"]
    for name in FILTERS:
        if counts[name]:
            lines.append(f"  dropped {counts[name]:>6}  {name}: {FILTERS[name][1]}")
    return "\n".join(lines)
