"""Training data from generations: the TIR filters of REFERENCE.md §10 and the ``tir-agent
export`` command. A solution is read into a :data:`~tir_agent.transcripts.Transcript` (see
:mod:`tir_agent.transcripts`, whose API is also importable from here), filtered, and written in
the format asked for.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tir_agent.answers import extract_answer
from tir_agent.errors import ConfigError
from tir_agent.formats.tags import PRESETS, TagPreset, get_preset
from tir_agent.transcripts import (
    Block,
    FunctionCall,
    Transcript,
    from_messages,
    parse_tags,
    prompt_end,
    render_tags,
    to_messages,
    to_openai_finetune,
)

__all__ = [
    "DEFAULT_FILTERS",
    "FILTERS",
    "Block",
    "FunctionCall",
    "Sample",
    "Transcript",
    "apply_filters",
    "from_messages",
    "parse_tags",
    "render_tags",
    "to_messages",
    "to_openai_finetune",
]


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
        prompt = messages[: prompt_end(messages)]
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
