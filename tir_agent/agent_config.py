"""The options of an :class:`~tir_agent.agent.Agent`, validated at construction."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tir_agent.chat_templates import ChatTemplate
from tir_agent.formats.native import TOOL_NAME
from tir_agent.formats.tags import TagPreset
from tir_agent.prompts import PromptConfig


class AgentConfig(BaseModel):
    """Every option of :class:`Agent`, validated at construction."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    model: str = Field(min_length=1)
    """Model name as the endpoint knows it."""
    base_url: str | None = None
    """OpenAI-compatible endpoint; ``None`` is ``OPENAI_BASE_URL`` if set, else api.openai.com."""
    format: Literal["tools", "tags"] = "tools"
    """``tools``: native ``python_exec`` function calls; ``tags``: code between text tags."""
    api: Literal["chat", "completions", "responses"] = "chat"
    """``chat``: /v1/chat/completions; ``completions``: /v1/completions with a chat template
    (with ``tools``: one that renders tools, e.g. ``qwen``; calls are parsed from the text);
    ``responses``: OpenAI's /v1/responses (format ``tools``; reasoning carried across calls)."""
    store: bool = False
    """``api="responses"``: ``False`` keeps nothing at OpenAI (reasoning items come back encrypted
    and are resent); ``True`` stores responses and chains them with ``previous_response_id``."""
    tool_choice: str = "auto"
    """``tools`` only, sent with every request that offers the tool: ``auto`` (the model decides),
    ``required`` (a call every round) or ``python_exec`` (that function named, which llama.cpp
    needs before it returns tool calls). The round after the budget is spent sends ``none``."""
    tags: str | TagPreset | dict[str, str] | None = None
    """Tag preset name or custom tags; ``None``: the prompt's ``code_tags``, else ``openmath``."""
    max_code_executions: int | None = Field(8, ge=0)
    """Executions per solve; one more generation follows the last. ``None``: unlimited."""
    add_remaining_code_executions: bool = False
    """Append the remaining-executions hint after each execution (REFERENCE.md §4)."""
    code_execution_timeout: float = Field(10.0, gt=0)
    """Seconds one execution may run."""
    max_code_output_characters: int = Field(1000, ge=0)
    """Cap of each output stream; longer output ends with ``<output cut>``."""
    prompt: str | PromptConfig | None = None
    """Prompt config (name, YAML path or object); ``None`` picks one for the format."""
    system: str | None = None
    """System template (instead of ``prompt``)."""
    user: str | None = None
    """User template with ``{problem}`` (instead of ``prompt``)."""
    chat_template: str | ChatTemplate | None = None
    """Completions only: ``chatml``, ``qwen``, ``llama3``, a tokenizer_config.json, a Jinja string."""
    temperature: float | None = None
    """Sampling temperature (endpoint default when ``None``)."""
    top_p: float | None = None
    """Nucleus sampling (endpoint default when ``None``)."""
    max_tokens: int | None = Field(None, gt=0)
    """Token budget of the whole solution (all model calls together); ``None``: no budget."""
    seed: int | None = None
    """Sampling seed (and the seed of the budget draw); ``solve(seed=...)`` overrides it."""
    reasoning_effort: str | None = None
    """Reasoning models: ``low``, ``medium``, ``high`` ..."""
    extra_body: dict[str, Any] | None = None
    """Extra JSON fields for every request (e.g. vLLM's ``top_k``)."""
    total_code_executions_in_prompt: int | tuple[int, int] | None = None
    """Fills ``{total_code_executions}``: an int, or ``[lo, hi]`` drawn per sample from the seed."""
    override_max_code_executions: bool = False
    """The drawn ``total_code_executions_in_prompt`` also becomes the enforced budget."""
    max_tool_calls: int | None = Field(None, ge=0)
    """Calls of the user's tools (``tools=``) per solve; after the last, they are withdrawn and
    (once code is spent too) a final round without tools follows. ``None``: unlimited."""
    tool_timeout: float | None = Field(60.0, gt=0)
    """Seconds one call of a user's tool may take (``tool(timeout=...)`` overrides it per tool;
    ``None``: no limit)."""
    max_model_calls: int = Field(64, ge=1)
    """Bound on model calls per solve (also with an unlimited budget)."""
    timeout: float | None = Field(600.0, gt=0)
    """Seconds one HTTP request may take."""
    max_retries: int = Field(5, ge=0)
    """Retries of transient endpoint errors (429, 408, 409, 5xx, connection, timeout)."""
    max_rpm: float | None = Field(None, gt=0)
    """Model requests per minute, shared by every call to this endpoint and model; ``None``: the
    limit the endpoint's ``x-ratelimit-*`` headers state (or none)."""
    max_tpm: float | None = Field(None, gt=0)
    """Tokens per minute, shared likewise; ``None``: learned from the headers (or none)."""
    prices: dict[str, Any] | str | Path | None = None
    """Prices over the shipped table: ``{model: {input, cached_input, output}}`` in USD per 1M
    tokens, or a YAML file of that (see :mod:`tir_agent.pricing`)."""

    @model_validator(mode="after")
    def _check(self) -> AgentConfig:
        if self.format == "tools" and self.api == "completions" and self.tool_choice != "auto":
            raise ValueError(
                f"tool_choice={self.tool_choice!r} needs api='chat'; over completions the model "
                "decides (tool_choice='auto')"
            )
        if self.api == "responses" and self.format != "tools":
            raise ValueError(
                "api='responses' takes format='tools' (python_exec as a function tool); for tags "
                "use api='chat' or api='completions'"
            )
        if self.store and self.api != "responses":
            raise ValueError("store=True is used only with api='responses'; drop it or set api")
        if self.tool_choice not in ("auto", "required", TOOL_NAME):
            raise ValueError(
                f"tool_choice={self.tool_choice!r}: use 'auto', 'required' or the tool's name "
                f"{TOOL_NAME!r} (to stop tool calls, use max_code_executions=0 or format='tags')"
            )
        if self.tool_choice != "auto" and self.format != "tools":
            raise ValueError(
                f"tool_choice={self.tool_choice!r} is used only with format='tools'; drop it or "
                "set format='tools'"
            )
        if self.chat_template is not None and self.api != "completions":
            raise ValueError(
                "chat_template is used only with api='completions'; drop it or set api='completions'"
            )
        if self.prompt is not None and (self.system is not None or self.user is not None):
            raise ValueError("pass either prompt=... or system=/user= templates, not both")
        spec = self.total_code_executions_in_prompt
        if isinstance(spec, tuple) and not 0 <= spec[0] <= spec[1]:
            raise ValueError(
                f"total_code_executions_in_prompt={list(spec)}: need [lo, hi] with 0 <= lo <= hi"
            )
        if self.override_max_code_executions and spec is None:
            raise ValueError(
                "override_max_code_executions=True needs total_code_executions_in_prompt"
            )
        return self
