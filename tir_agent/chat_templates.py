"""Chat templates: turn chat messages into the one string a text-completion endpoint continues.

Built in, byte-exact with the models' own ``tokenizer_config.json`` templates (no tools):

- ``chatml``: ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message, generation prompt
  ``<|im_start|>assistant\\n``; no default system message.
- ``qwen``: ChatML plus Qwen2.5-Instruct's default system message
  (``You are Qwen, created by Alibaba Cloud. You are a helpful assistant.``) when the conversation
  has none; with ``tools``, Qwen2.5's Hermes-style tool prompt (:mod:`tir_agent.formats.hermes`:
  the definitions in a ``<tools>`` block of the system message, calls in ``<tool_call>`` tags,
  results in ``<tool_response>`` inside a user turn), byte-exact with Qwen2.5's own template.
- ``qwen-math``: ChatML plus Qwen2.5-Math-Instruct's default system message
  (``Please reason step by step, and put your final answer within \\boxed{}.``).
- ``llama3``: ``<|begin_of_text|>`` then
  ``<|start_header_id|>{role}<|end_header_id|>\\n\\n{content stripped}<|eot_id|>`` per message,
  generation prompt ``<|start_header_id|>assistant<|end_header_id|>\\n\\n`` (Llama 3 / 3.0; the
  content is stripped of surrounding whitespace as the original template's ``| trim`` does).

Any other template is Jinja, as Hugging Face ``transformers`` renders it: a sandboxed immutable
environment with ``trim_blocks``/``lstrip_blocks``, loop controls, ``raise_exception``,
``strftime_now``, a ``tojson`` that keeps non-ASCII, and ``{% generation %}`` blocks; loaded from a
``tokenizer_config.json`` (its ``chat_template``, ``bos_token``, ``eos_token``), a ``.jinja`` file, a
model folder, or a template string.

``render(messages, tools=[...])`` renders function definitions for the templates that know how
(``qwen``, and Jinja templates that read ``tools``); assistant ``tool_calls`` may carry their
``arguments`` as the chat API's JSON string or as an object (templates are given objects).
``render(..., continue_final_message=True)`` leaves the last (assistant) message open, exactly as
given (no trim, no end-of-turn marker), so a completion continues that text.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.parser
from jinja2.sandbox import ImmutableSandboxedEnvironment

from tir_agent.errors import ConfigError
from tir_agent.formats.hermes import check_tools, normalize_tool_calls, tool_call_text, tools_block

__all__ = [
    "BUILTIN_TEMPLATES",
    "QWEN_DEFAULT_SYSTEM",
    "QWEN_MATH_DEFAULT_SYSTEM",
    "ChatMLTemplate",
    "ChatTemplate",
    "JinjaChatTemplate",
    "Llama3Template",
    "get_chat_template",
]

QWEN_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
"""Qwen2.5-Instruct's system message when the conversation has none."""
QWEN_MATH_DEFAULT_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
"""Qwen2.5-Math-Instruct's system message when the conversation has none."""

_END_MARKERS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")
"""End-of-turn markers recognised in user-supplied templates (plus the template's eos token)."""


def _text(message: Mapping[str, Any], index: int) -> str:
    """A message's content as text: strings as is, ``None`` as empty, text parts joined."""
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for part in content:
            if isinstance(part, Mapping) and part.get("type") == "text":
                parts.append(str(part.get("text", "")))
            else:
                raise ConfigError(
                    f"message {index}: only text content parts can be rendered by a chat "
                    f"template, got {part!r}"
                )
        return "".join(parts)
    raise ConfigError(f"message {index}: content must be a string, got {type(content).__name__}")


def _role(message: Mapping[str, Any], index: int) -> str:
    role = message.get("role")
    if not isinstance(role, str) or not role:
        raise ConfigError(f"message {index} has no role: {dict(message)!r}")
    return role


class ChatTemplate:
    """Renders a conversation into a prompt string; ``stop`` holds its end-of-turn markers."""

    name: str
    stop: tuple[str, ...]
    renders_tools: bool = False
    """Whether :meth:`render` can write function definitions (``tools``) into the prompt."""

    def __init__(self, name: str, stop: tuple[str, ...]) -> None:
        self.name = name
        self.stop = stop

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> str:
        """The prompt for ``messages``.

        ``add_generation_prompt`` opens an assistant turn at the end; ``continue_final_message``
        instead leaves the last message (an assistant prefix) open, exactly as given. ``tools``:
        chat-style function definitions the model may call (templates with
        :attr:`renders_tools` only).
        """
        if tools and not self.renders_tools:
            raise ConfigError(
                f"the chat template {self.name!r} cannot render tools; use 'qwen' (Qwen2.5's "
                "Hermes-style tool calls) or a Jinja template that reads `tools`"
            )
        if continue_final_message:
            if add_generation_prompt:
                raise ConfigError(
                    "continue_final_message and add_generation_prompt cannot both be set"
                )
            if not messages:
                raise ConfigError("continue_final_message needs at least one message")
        checked = check_tools(tools) if tools is not None else None
        return self._render(
            normalize_tool_calls(messages), add_generation_prompt, continue_final_message, checked
        )

    def _render(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool,
        continue_final_message: bool,
        tools: list[dict[str, Any]] | None,
    ) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class ChatMLTemplate(ChatTemplate):
    """ChatML (Qwen, many fine-tunes), with an optional default system message."""

    def __init__(
        self, name: str = "chatml", *, default_system: str | None = None, qwen_tools: bool = False
    ) -> None:
        super().__init__(name, ("<|im_end|>",))
        self.default_system = default_system
        self.qwen_tools = qwen_tools
        self.renders_tools = qwen_tools

    def _render(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool,
        continue_final_message: bool,
        tools: list[dict[str, Any]] | None,
    ) -> str:
        parts: list[str] = []
        has_system = bool(messages) and messages[0].get("role") == "system"
        if tools:
            # Qwen2.5: the definitions close the system message (its own, else the default).
            system = _text(messages[0], 0) if has_system else self.default_system
            if system is None:
                system = QWEN_DEFAULT_SYSTEM
            parts.append(f"<|im_start|>system\n{system}{tools_block(tools)}<|im_end|>\n")
        elif self.default_system is not None and not has_system:
            parts.append(f"<|im_start|>system\n{self.default_system}<|im_end|>\n")
        last = len(messages) - 1
        for i, message in enumerate(messages):
            if tools and i == 0 and has_system:
                continue  # written above, with the tools
            role = _role(message, i)
            content = _text(message, i)
            if self.qwen_tools and role == "tool":
                # Qwen2.5: consecutive tool results share one user turn.
                previous = messages[i - 1].get("role") if i else None
                following = messages[i + 1].get("role") if i < last else None
                if previous != "tool":
                    parts.append("<|im_start|>user")
                parts.append(f"\n<tool_response>\n{content}\n</tool_response>")
                if following != "tool":
                    parts.append("<|im_end|>\n")
                continue
            if self.qwen_tools and role == "assistant" and message.get("tool_calls"):
                parts.append("<|im_start|>assistant")
                if content:
                    parts.append("\n" + content)
                parts.extend("\n" + tool_call_text(call) for call in message["tool_calls"])
                parts.append("<|im_end|>\n")
                continue
            if continue_final_message and i == last:
                parts.append(f"<|im_start|>{role}\n{content}")
            else:
                parts.append(f"<|im_start|>{role}\n{content}<|im_end|>\n")
        if add_generation_prompt:
            parts.append("<|im_start|>assistant\n")
        return "".join(parts)


class Llama3Template(ChatTemplate):
    """Llama 3 Instruct: header tokens around each role, contents trimmed."""

    bos_token = "<|begin_of_text|>"

    def __init__(self, name: str = "llama3") -> None:
        super().__init__(name, ("<|eot_id|>",))

    def _render(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool,
        continue_final_message: bool,
        tools: list[dict[str, Any]] | None,
    ) -> str:
        parts = [self.bos_token]
        last = len(messages) - 1
        for i, message in enumerate(messages):
            role = _role(message, i)
            content = _text(message, i)
            header = f"<|start_header_id|>{role}<|end_header_id|>\n\n"
            if continue_final_message and i == last:
                parts.append(header + content.lstrip())
            else:
                parts.append(header + content.strip() + "<|eot_id|>")
        if add_generation_prompt:
            parts.append("<|start_header_id|>assistant<|end_header_id|>\n\n")
        return "".join(parts)


# --- Jinja templates, rendered as Hugging Face transformers does ----------------------------------


def _raise_exception(message: str) -> NoReturn:
    raise jinja2.TemplateError(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # Jinja's own tojson escapes HTML characters; chat templates expect plain json.dumps.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


class _GenerationBlock(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}`` (marks assistant tokens for training): rendered
    as its body."""

    tags = {"generation"}  # noqa: RUF012 (the base class declares a set)

    def parse(self, parser: jinja2.parser.Parser) -> list[jinja2.nodes.Node]:
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


_SENTINEL = "\x00tir-agent-continue\x00"


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[jinja2.ext.loopcontrols, _GenerationBlock],
        undefined=jinja2.Undefined,
        keep_trailing_newline=False,
        autoescape=False,
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


class JinjaChatTemplate(ChatTemplate):
    """A Jinja chat template (e.g. a model's ``tokenizer_config.json``), sandboxed."""

    def __init__(
        self,
        source: str,
        *,
        name: str = "jinja",
        bos_token: str = "",
        eos_token: str = "",
        stop: Sequence[str] | None = None,
        **template_kwargs: Any,
    ) -> None:
        if stop is None:
            found = [marker for marker in _END_MARKERS if marker in source]
            if eos_token and eos_token not in found:
                found.append(eos_token)
            stop = found
        super().__init__(name, tuple(stop))
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.template_kwargs = template_kwargs
        self.renders_tools = "tools" in source
        try:
            self._template = _environment().from_string(source)
        except jinja2.TemplateSyntaxError as e:
            raise ConfigError(
                f"chat template {name}: Jinja syntax error line {e.lineno}: {e}"
            ) from e

    def _render(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool,
        continue_final_message: bool,
        tools: list[dict[str, Any]] | None,
    ) -> str:
        conversation = [dict(message) for message in messages]
        if continue_final_message:
            # Render with a marker after the final message, then cut there: the message's own
            # text (trailing whitespace included) survives even when the template trims contents.
            final = _text(conversation[-1], len(conversation) - 1)
            conversation[-1]["content"] = final + _SENTINEL
        try:
            text = self._template.render(
                messages=conversation,
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                tools=tools,
                documents=None,
                **self.template_kwargs,
            )
        except jinja2.TemplateError as e:
            raise ConfigError(f"chat template {self.name} failed: {e}") from e
        if continue_final_message:
            cut = text.find(_SENTINEL)
            if cut < 0:
                raise ConfigError(
                    f"chat template {self.name} does not write the final message's content, so "
                    "it cannot be continued"
                )
            text = text[:cut]
        return text


BUILTIN_TEMPLATES: dict[str, ChatTemplate] = {
    "chatml": ChatMLTemplate("chatml"),
    "qwen": ChatMLTemplate("qwen", default_system=QWEN_DEFAULT_SYSTEM, qwen_tools=True),
    "qwen-math": ChatMLTemplate("qwen-math", default_system=QWEN_MATH_DEFAULT_SYSTEM),
    "llama3": Llama3Template("llama3"),
}
"""The built-in templates by name."""


def _token(value: Any) -> str:
    """``bos_token``/``eos_token`` as stored in ``tokenizer_config.json``: a string or a dict."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return str(value["content"])
    raise ConfigError(f"cannot read special token {value!r} from tokenizer_config.json")


def _from_tokenizer_config(path: Path, **kwargs: Any) -> JinjaChatTemplate:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read {path}: {e}") from e
    if not isinstance(config, dict):
        raise ConfigError(f"{path} is not a tokenizer config (expected a JSON object)")
    source = config.get("chat_template")
    if isinstance(source, list):  # named templates: [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in source if isinstance(t, dict)}
        source = named.get("default")
    if source is None and (path.parent / "chat_template.jinja").is_file():
        source = (path.parent / "chat_template.jinja").read_text(encoding="utf-8")
    if not isinstance(source, str) or not source:
        raise ConfigError(
            f"{path} has no chat_template; pass the model's template as a .jinja file or string"
        )
    # Every special token is a template variable, as in transformers (bos, eos, pad, unk, ...).
    for key, value in config.items():
        if key.endswith("_token") and isinstance(value, str | dict):
            kwargs.setdefault(key, _token(value))
    kwargs.setdefault("bos_token", "")
    kwargs.setdefault("eos_token", "")
    return JinjaChatTemplate(source, name=str(path), **kwargs)


def get_chat_template(spec: str | os.PathLike[str] | ChatTemplate, **kwargs: Any) -> ChatTemplate:
    """A chat template by built-in name, path, or Jinja source.

    ``"chatml"``, ``"qwen"``, ``"qwen-math"``, ``"llama3"``; a path to a ``tokenizer_config.json``,
    a ``.jinja`` file or a model folder holding one of them; or a Jinja template string (contains
    ``{%`` or ``{{``). ``kwargs`` (``bos_token``, ``eos_token``, ``stop``, extra template variables)
    go to :class:`JinjaChatTemplate`.
    """
    if isinstance(spec, ChatTemplate):
        return spec
    if isinstance(spec, str):
        if "{%" in spec or "{{" in spec:
            return JinjaChatTemplate(spec, **kwargs)
        if spec in BUILTIN_TEMPLATES:
            if kwargs:
                raise ConfigError(
                    f"the built-in chat template {spec!r} takes no options ({', '.join(kwargs)})"
                )
            return BUILTIN_TEMPLATES[spec]
    path = Path(spec)
    if path.is_dir():
        for candidate in ("tokenizer_config.json", "chat_template.jinja"):
            if (path / candidate).is_file():
                path = path / candidate
                break
    if path.is_file():
        if path.suffix == ".json":
            return _from_tokenizer_config(path, **kwargs)
        try:
            source = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot read chat template {path}: {e}") from e
        kwargs.setdefault("name", str(path))
        return JinjaChatTemplate(source, **kwargs)
    known = ", ".join(BUILTIN_TEMPLATES)
    raise ConfigError(
        f"Unknown chat template {os.fspath(spec)!r}. Use one of: {known}; a path to a model's "
        "tokenizer_config.json or a .jinja file; or a Jinja template string."
    )
