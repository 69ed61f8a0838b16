"""How an execution result is written back into text (REFERENCE.md §3), byte-exact."""

from __future__ import annotations

from tir_agent.formats.tags import TagPreset
from tir_agent.sandbox.result import ExecutionResult


def format_output(
    preset: TagPreset,
    *,
    stdout: str,
    stderr: str = "",
    status: str = "completed",
    hint: str = "",
) -> str:
    """The text appended after a code block: output tags, body and hint, as the preset says."""
    if preset.output_format == "qwen":
        return preset.output_begin + stdout + stderr + preset.output_end + hint
    body = status
    if stdout:
        body += f"\n[stdout]\n{stdout}[/stdout]"
    if stderr:
        body += f"\n[stderr]\n{stderr}[/stderr]"
    return preset.output_begin + "\n\n" + body + hint + preset.output_end + "\n\n"


def format_result(preset: TagPreset, result: ExecutionResult, hint: str = "") -> str:
    """:func:`format_output` for a sandbox result."""
    return format_output(
        preset, stdout=result.stdout, stderr=result.stderr, status=result.status, hint=hint
    )
