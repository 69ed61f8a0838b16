"""Prompt configs: YAML data files that turn a data row into chat messages (REFERENCE.md §8).

A config holds an optional system message and a user template, both Python ``str.format``
templates (literal braces doubled: ``\\boxed{{}}``), and optional few-shot examples. Rendering is
strict: a placeholder missing from the data row is a :class:`~tir_agent.errors.PromptError` that
names the key and the prompt, never an empty string.

Placeholders filled by the library rather than the data row:

- ``{examples}``: the few-shot block (empty when the config has no examples);
- ``{total_code_executions}``: the per-sample budget stated in the prompt (REFERENCE.md §4);
- ``{code_begin}``, ``{code_end}``, ``{code_output_begin}``, ``{code_output_end}``: the tag preset.

Few-shot solutions are *not* ``str.format`` templates (their code is full of braces). Only the four
code placeholders are substituted, and each ``{code_output_begin}BODY{code_output_end}`` goes
through :func:`tir_agent.formats.output.format_output`, so an example is written in exactly the
bytes the model will see at run time, whatever the preset.
"""

from __future__ import annotations

import copy
import os
import re
import string
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from tir_agent._resources import data_dir, read_yaml
from tir_agent.errors import PromptError
from tir_agent.formats.output import format_output
from tir_agent.formats.tags import TagPreset, get_preset

__all__ = [
    "FewShotExample",
    "FewShotFormat",
    "PromptConfig",
    "available_prompts",
    "load_prompt",
]

CODE_KEYS = ("code_begin", "code_end", "code_output_begin", "code_output_end")
"""Placeholders filled from the tag preset."""
LIBRARY_KEYS = frozenset({"examples", "total_code_executions", *CODE_KEYS})
"""Placeholders the library fills; everything else comes from the data row."""

_EXAMPLE_BLOCK = re.compile(
    r"\{code_begin\}(?P<code>.*?)\{code_end\}"
    r"(?:\s*\{code_output_begin\}(?P<output>.*?)\{code_output_end\})?",
    re.DOTALL,
)
_FORMATTER = string.Formatter()


def _template_keys(template: str, where: str) -> set[str]:
    """The top-level placeholder names of a ``str.format`` template; malformed ones raise."""
    keys: set[str] = set()
    try:
        parsed = list(_FORMATTER.parse(template))
    except ValueError as e:
        raise PromptError(
            f"{where}: malformed template ({e}); write literal braces doubled, e.g. \\boxed{{{{}}}}"
        ) from e
    for _, field, _, _ in parsed:
        if field is None:
            continue
        name = re.split(r"[.\[]", field, maxsplit=1)[0]
        if not name or name.isdigit():
            raise PromptError(
                f"{where}: positional placeholder {{{field}}} is not allowed; name it "
                "(e.g. {problem}) or double the braces for a literal"
            )
        keys.add(name)
    return keys


class FewShotExample(BaseModel):
    """One worked example: a problem and a solution that may contain code and its output."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    problem: str
    """The example problem."""
    solution: str
    """The solution; code as ``{code_begin}...{code_end}``, output as
    ``{code_output_begin}stdout{code_output_end}`` (rendered for the runtime preset)."""

    def has_code(self) -> bool:
        """Whether the solution uses any code placeholder."""
        return any("{" + key + "}" in self.solution for key in CODE_KEYS)

    def render_solution(self, tags: TagPreset) -> str:
        """The solution written with ``tags``, outputs formatted as live executions are.

        The code between the tags is written as ``code_begin`` (plus a newline when the tag does
        not end with one), the code with a single trailing newline, then ``code_end``; blank space
        between a code block and its output placeholder is dropped, since the preset's output
        tags carry their own separators.
        """

        def block(match: re.Match[str]) -> str:
            code = match["code"].strip("\n") + "\n"
            opener = tags.code_begin if tags.code_begin.endswith("\n") else tags.code_begin + "\n"
            text = opener + code + tags.code_end
            if match["output"] is not None:
                stdout = match["output"]
                if stdout and not stdout.endswith("\n"):
                    stdout += "\n"
                text += format_output(tags, stdout=stdout)
            return text

        text = _EXAMPLE_BLOCK.sub(block, self.solution)
        # Placeholders outside the canonical block shape are substituted literally.
        return (
            text.replace("{code_begin}", tags.code_begin)
            .replace("{code_end}", tags.code_end)
            .replace("{code_output_begin}", tags.output_begin)
            .replace("{code_output_end}", tags.output_end)
        )


class FewShotFormat(BaseModel):
    """How the examples are joined into ``{examples}`` (NeMo-Skills' ``few_shot_examples``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prefix: str = "Here are some examples of problems and solutions you can refer to.\n\n"
    """Text before the first example."""
    template: str = "Problem:\n{problem}\n\nSolution:\n{solution}\n\n\n\n\n\n"
    """``str.format`` template of one example, with ``{problem}`` and ``{solution}``."""
    suffix: str = "Here is the problem you need to solve:\n"
    """Text after the last example."""


class PromptConfig(BaseModel):
    """A prompt: optional system message, user template and few-shot examples."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None
    """Name shown in error messages (``openmath/tir``, or the file path)."""
    system: str | None = None
    """System message template; ``None`` or empty means no system message."""
    user: str = "{problem}"
    """User message template."""
    examples: list[FewShotExample] = []
    """Few-shot examples, rendered into ``{examples}`` when the user template has it."""
    few_shot_examples: FewShotFormat = FewShotFormat()
    """Prefix, per-example template and suffix of the ``{examples}`` block."""
    code_tags: str | None = None
    """The tag preset the prompt was written for (e.g. ``openmath``); used when none is given."""
    turns: list[dict[str, Any]] = []
    """Few-shot chat turns, sent as written between the system and the user message (not
    templates): e.g. a worked tool-call exchange (user, assistant with ``tool_calls``, tool,
    assistant), which small models follow better than a description of one."""

    @model_validator(mode="after")
    def _check_templates(self) -> PromptConfig:
        where = f"prompt {self.name or '<inline>'}"
        if self.system:
            _template_keys(self.system, f"{where}, system message")
        _template_keys(self.user, f"{where}, user message")
        _template_keys(self.few_shot_examples.template, f"{where}, few_shot_examples.template")
        if self.code_tags is not None:
            try:
                get_preset(self.code_tags)
            except ValueError as e:
                raise PromptError(f"{where}: code_tags: {e}") from e
        return self

    @classmethod
    def from_templates(cls, *, user: str = "{problem}", system: str | None = None) -> PromptConfig:
        """A config from plain ``str.format`` templates (literal braces doubled)."""
        try:
            return cls(name="<inline>", user=user, system=system)
        except ValidationError as e:
            raise PromptError(f"Invalid prompt templates: {_describe(e)}") from e

    def _keys(self) -> set[str]:
        keys = _template_keys(self.user, self._where("user message"))
        if self.system:
            keys |= _template_keys(self.system, self._where("system message"))
        return keys

    def required_keys(self) -> set[str]:
        """The placeholders the templates need from the data row."""
        return self._keys() - LIBRARY_KEYS

    def needs_total_code_executions(self) -> bool:
        """Whether a template states the budget (``{total_code_executions}``)."""
        return "total_code_executions" in self._keys()

    def _where(self, part: str) -> str:
        return f"prompt {self.name or '<inline>'}, {part}"

    def render_examples(self, tags: TagPreset | None = None) -> str:
        """The ``{examples}`` block; empty when the config has no examples."""
        if not self.examples:
            return ""
        preset = self._resolve_tags(tags, needed=any(e.has_code() for e in self.examples))
        parts = [self.few_shot_examples.prefix]
        for example in self.examples:
            solution = example.render_solution(preset) if preset else example.solution
            parts.append(
                self.few_shot_examples.template.format(problem=example.problem, solution=solution)
            )
        parts.append(self.few_shot_examples.suffix)
        return "".join(parts)

    def _resolve_tags(self, tags: TagPreset | None, *, needed: bool) -> TagPreset | None:
        if tags is not None:
            return tags
        if self.code_tags is not None:
            return get_preset(self.code_tags)
        if needed:
            raise PromptError(
                f"prompt {self.name or '<inline>'} uses code tags ({{code_begin}}, ...) but no tag "
                "preset was given: pass tags= or set code_tags in the prompt config"
            )
        return None

    def build_messages(
        self,
        fields: Mapping[str, Any],
        *,
        tags: TagPreset | None = None,
        total_code_executions: int | None = None,
        system: str | None = None,
        suffix: str = "",
    ) -> list[dict[str, Any]]:
        """Render the chat messages for one data row.

        ``fields`` fill the templates; ``{total_code_executions}`` comes from the argument (or the
        row when the argument is ``None``), ``{examples}`` and the code tags from ``tags`` (or the
        config's ``code_tags``). ``system`` replaces the config's system message (literal text,
        not a template; ``""`` drops it); ``suffix`` is appended to the user message as is.
        """
        keys = self._keys()
        values: dict[str, Any] = dict(fields)
        if "total_code_executions" in keys:
            if total_code_executions is None:
                total_code_executions = values.get("total_code_executions")
            if total_code_executions is None:
                raise PromptError(
                    f"{self._where('user message')} states {{total_code_executions}}: set "
                    "total_code_executions_in_prompt (an int or a [lo, hi] range) or use a prompt "
                    "without it"
                )
            values["total_code_executions"] = total_code_executions
        preset = self._resolve_tags(tags, needed=bool(keys & set(CODE_KEYS)))
        if preset is not None:
            values.update(
                code_begin=preset.code_begin,
                code_end=preset.code_end,
                code_output_begin=preset.output_begin,
                code_output_end=preset.output_end,
            )
        if "examples" in keys:
            values["examples"] = self.render_examples(preset)

        messages: list[dict[str, Any]] = []
        if system is not None:
            if system:
                messages.append({"role": "system", "content": system})
        elif self.system:
            messages.append(
                {"role": "system", "content": self._format(self.system, values, "system message")}
            )
        messages.extend(copy.deepcopy(self.turns))
        user = self._format(self.user, values, "user message") + suffix
        messages.append({"role": "user", "content": user})
        return messages

    def _format(self, template: str, values: Mapping[str, Any], part: str) -> str:
        try:
            return template.format_map(values)
        except KeyError as e:
            key = e.args[0]
            known = ", ".join(sorted(str(k) for k in values)) or "none"
            raise PromptError(
                f"{self._where(part)} needs {{{key}}}, which the data row does not have "
                f"(row keys: {known}); add the field or use another prompt"
            ) from None
        except (IndexError, AttributeError, ValueError) as e:
            raise PromptError(f"{self._where(part)}: cannot render: {e}") from e


def available_prompts() -> list[str]:
    """Names of the prompt configs shipped with the package (``openmath/tir``, ...)."""
    root = data_dir("prompts")
    names = [
        path.relative_to(root).with_suffix("").as_posix()
        for path in root.rglob("*")
        if path.suffix in (".yaml", ".yml")
    ]
    return sorted(names)


def load_prompt(spec: str | os.PathLike[str] | PromptConfig) -> PromptConfig:
    """A prompt config by name (``"openmath/tir"``), by path to a YAML file, or as given."""
    if isinstance(spec, PromptConfig):
        return spec
    text = os.fspath(spec)
    path = Path(text)
    if isinstance(spec, os.PathLike) or path.suffix in (".yaml", ".yml") or path.is_file():
        return _load_file(path.resolve(), name=text)
    return _load_named(text)


@cache
def _load_named(name: str) -> PromptConfig:
    root = data_dir("prompts")
    for suffix in (".yaml", ".yml"):
        path = root / f"{name}{suffix}"
        if path.is_file() and path.resolve().is_relative_to(root.resolve()):
            return _load_file(path, name=name)
    available = ", ".join(available_prompts())
    raise PromptError(
        f"Unknown prompt {name!r}. Shipped prompts: {available}; or pass a path to a YAML file."
    )


def _load_file(path: Path, *, name: str) -> PromptConfig:
    data = read_yaml(path, what="Prompt file", error=PromptError)
    if not isinstance(data, dict):
        raise PromptError(f"Prompt file {path} must hold a mapping (system, user, examples, ...)")
    data.setdefault("name", name)
    try:
        return PromptConfig.model_validate(data)
    except ValidationError as e:
        raise PromptError(f"Prompt file {path} is invalid: {_describe(e)}") from e


def _describe(error: ValidationError) -> str:
    """A one-line summary of a validation error, with the keys a prompt file may use."""
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "file"
        problems.append(f"{where}: {item['msg'].removeprefix('Value error, ')}")
    allowed = ", ".join(PromptConfig.model_fields)
    return "; ".join(problems) + f" (a prompt file may set: {allowed})"
