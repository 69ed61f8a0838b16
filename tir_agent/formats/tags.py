"""Code tag presets: the exact strings TIR models were trained on (REFERENCE.md §1)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from tir_agent.errors import ConfigError

OutputFormat = Literal["qwen", "llama"]


class TagPreset(BaseModel):
    """Five values that say how code and its output are written in text."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    code_begin: str
    """Opens a code block the model writes."""
    code_end: str
    """Closes it; sent as the stop string."""
    output_begin: str
    """Opens the execution output the loop appends."""
    output_end: str
    """Closes the execution output."""
    output_format: OutputFormat = "qwen"
    """``qwen``: stdout+stderr, hint after ``output_end``; ``llama``: status line, hint inside."""


PRESETS: dict[str, TagPreset] = {
    "openmath": TagPreset(
        code_begin="<tool_call>",
        code_end="</tool_call>",
        output_begin="\n```output\n",
        output_end="```\n",
        output_format="qwen",
    ),
    "qwen": TagPreset(
        code_begin="```python\n",
        code_end="```\n",
        output_begin="```output\n",
        output_end="```\n",
        output_format="qwen",
    ),
    "nemotron": TagPreset(
        code_begin="<llm-code>\n",
        code_end="</llm-code>\n",
        output_begin="<llm-code-output>\n",
        output_end="</llm-code-output>\n",
        output_format="qwen",
    ),
    "llama3": TagPreset(
        code_begin="<|python_tag|>",
        code_end="<|eom_id|>",
        output_begin="<|start_header_id|>ipython<|end_header_id|>",
        output_end="<|eot_id|><|start_header_id|>assistant<|end_header_id|>",
        output_format="llama",
    ),
    "gpt-oss": TagPreset(
        code_begin="<|start|>assistant<|channel|>analysis to=python code<|message|>",
        code_end="<|call|>",
        output_begin="<|start|>python code to=assistant<|channel|>analysis<|message|>",
        output_end="<|end|><|start|>assistant",
        output_format="qwen",
    ),
    "tool-output": TagPreset(
        code_begin="<tool_call>",
        code_end="</tool_call>",
        output_begin="\n<tool_output>\n",
        output_end="</tool_output>\n",
        output_format="qwen",
    ),
}


def get_preset(tags: str | TagPreset | dict[str, str]) -> TagPreset:
    """A preset by name, a :class:`TagPreset`, or a dict of the five values."""
    if isinstance(tags, TagPreset):
        return tags
    if isinstance(tags, dict):
        try:
            return TagPreset.model_validate(tags)
        except ValueError as e:
            raise ConfigError(f"Invalid custom tags {tags!r}: {e}") from e
    try:
        return PRESETS[tags]
    except KeyError:
        known = ", ".join(sorted(PRESETS))
        raise ConfigError(
            f"Unknown tag preset {tags!r}. Use one of: {known}; or pass a dict with "
            "code_begin, code_end, output_begin, output_end (and optionally output_format)."
        ) from None
