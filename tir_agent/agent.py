"""The agent: one loop that lets a model solve a problem by running Python in a sandbox.

The loop (:meth:`Agent._loop`) is written once for every format. A format
(:mod:`tir_agent.formats`) only builds the request, parses the reply into a
:class:`~tir_agent.turn.Turn` and feeds execution outputs back; the loop's limits and stopping
live here, and one solve's state (budget, hints, sandbox session, statistics, result) in a
:class:`~tir_agent.run.Run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import weakref
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlparse

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tir_agent._sync import run_sync
from tir_agent.chat_templates import ChatTemplate, get_chat_template
from tir_agent.client import OPENAI_URL, ModelClient
from tir_agent.errors import AuthenticationError, ConfigError, ContextLengthError, ModelError
from tir_agent.formats.native import TOOL_NAME
from tir_agent.formats.tags import TagPreset, get_preset
from tir_agent.pricing import default_prices
from tir_agent.prompts import PromptConfig, load_prompt
from tir_agent.run import Problem, Run
from tir_agent.sandbox.base import Sandbox
from tir_agent.turn import (
    Event,
    Finished,
    SolveResult,
)

if TYPE_CHECKING:
    from tir_agent.local_model import LocalModel
    from tir_agent.tools.toolbox import Toolbox, ToolSpec


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


class Agent:
    """Solves problems with a model that writes Python and a sandbox that runs it.

    ``Agent(model="gpt-4o-mini").solve("...")`` uses OpenAI with the native ``python_exec`` tool;
    ``Agent(model=..., base_url=..., format="tags", tags="qwen", api="completions")`` a local
    server. Options are those of :class:`AgentConfig`, plus ``api_key`` (default
    ``OPENAI_API_KEY``), ``sandbox`` (default: a :class:`~tir_agent.sandbox.LocalSandbox`, created
    on first use and closed with the agent), ``http_client`` (an ``httpx2.AsyncClient``) and
    ``tools`` (your functions and MCP servers, called beside ``python_exec``: see
    :mod:`tir_agent.tools`; their servers are closed with the agent).

    ``Agent(model="local")`` without ``base_url`` runs the embedded model (Qwen2.5-Coder-0.5B on
    llama.cpp, ``bash scripts/setup.sh``; ``local:NAME`` picks another of
    :data:`tir_agent.weights.MODELS`): its server starts on the first solve on a free
    loopback port and stops when the agent is closed or the process exits; its defaults
    (:func:`~tir_agent.local_model.local_agent_options`) sit under the options given.
    """

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None = None,
        sandbox: Sandbox | None = None,
        http_client: Any = None,
        tools: Sequence[ToolSpec] = (),
        **options: Any,
    ) -> None:
        self._local: LocalModel | None = None
        if model == "local" or model.startswith("local:"):  # embedded (imported only then)
            from tir_agent.local_model import prepare_local

            options, self._local = prepare_local(model, options)
        try:
            self.config = config = AgentConfig(model=model, **options)
        except ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(map(str, err['loc'])) or 'options'}: {err['msg'].removeprefix('Value error, ')}"
                for err in e.errors()
            )
            raise ConfigError(f"Invalid Agent options: {problems}") from None
        self.toolbox: Toolbox | None = None
        if tools:
            from tir_agent.tools.toolbox import Toolbox  # only when tools are given

            self.toolbox = Toolbox(tools, timeout=config.tool_timeout)
        self.prompt = self._resolve_prompt(config)
        self.tags = get_preset(config.tags or self.prompt.code_tags or "openmath")
        self.template: ChatTemplate | None = None
        if config.api == "completions":
            self.template = get_chat_template(
                config.chat_template or _default_template(config.tags)
            )
            if config.format == "tools" and not self.template.renders_tools:
                raise ConfigError(
                    f"format='tools' with api='completions' needs a chat template that renders "
                    f"tools, not {self.template.name!r}: use chat_template='qwen' (Qwen2.5's "
                    "Hermes-style tool calls) or a model's Jinja template that reads `tools`"
                )
        self._states_budget = self.prompt.needs_total_code_executions()
        if self._states_budget and (
            config.total_code_executions_in_prompt is None and config.max_code_executions is None
        ):
            raise ConfigError(
                f"The prompt {self.prompt.name} states {{total_code_executions}}, but the budget is "
                "unlimited: set total_code_executions_in_prompt=... or max_code_executions=..."
            )
        # Like the openai SDK itself: OPENAI_BASE_URL points every client at another endpoint.
        base_url = config.base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_URL
        if self._local is not None:
            api_key = api_key or "none"  # the embedded server: the user's OpenAI key stays home
        api_key = api_key or os.environ.get("OPENAI_API_KEY")
        if not api_key:
            if urlparse(base_url).hostname == "api.openai.com":
                raise AuthenticationError(
                    "No API key for api.openai.com: pass Agent(api_key=...) or set the "
                    "OPENAI_API_KEY environment variable (or use base_url= for a local server)."
                )
            api_key = "none"  # local OpenAI-compatible servers accept any key
        self.client = ModelClient(
            model=config.model,
            base_url=base_url,
            api_key=api_key,
            timeout=config.timeout,
            max_retries=config.max_retries,
            http_client=http_client,
            max_rpm=config.max_rpm,
            max_tpm=config.max_tpm,
        )
        self.prices = default_prices().merged(config.prices)
        """The price table used for ``SolveResult.cost`` (the shipped one plus ``prices``)."""
        self._sandbox = sandbox
        self._own_sandboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )

    @staticmethod
    def _resolve_prompt(config: AgentConfig) -> PromptConfig:
        if config.system is not None or config.user is not None:
            return PromptConfig.from_templates(
                user=config.user or "{problem}", system=config.system
            )
        if config.prompt is not None:
            return load_prompt(config.prompt)
        if config.format == "tools":
            return load_prompt("generic/tool-calling")
        return load_prompt("generic/tool-output" if config.api == "chat" else "openmath/tir")

    @property
    def local_model(self) -> LocalModel | None:
        """The embedded model's server handle (``model="local"`` without ``base_url``), else
        ``None``."""
        return self._local

    def __repr__(self) -> str:
        c = self.config
        return f"Agent(model={c.model!r}, format={c.format!r}, api={c.api!r}, max_code_executions={c.max_code_executions})"

    # -- public API -------------------------------------------------------------------------

    def solve(self, problem: Problem, *, seed: int | None = None, **fields: Any) -> SolveResult:
        """Solve ``problem`` synchronously (works inside Jupyter's running loop too)."""
        return run_sync(self.asolve(problem, seed=seed, **fields))

    async def asolve(
        self, problem: Problem, *, seed: int | None = None, **fields: Any
    ) -> SolveResult:
        """Solve ``problem``; extra keyword ``fields`` fill further prompt placeholders."""
        return await self._solve(problem, seed, fields, None)

    async def stream(
        self, problem: Problem, *, seed: int | None = None, **fields: Any
    ) -> AsyncIterator[Event]:
        """Solve ``problem``, yielding typed events as they happen; the last is :class:`Finished`."""
        queue: asyncio.Queue[Event | Exception] = asyncio.Queue()

        async def produce() -> None:
            try:
                await self._solve(problem, seed, fields, queue.put_nowait)
            except Exception as e:  # handed to the consumer, raised there
                queue.put_nowait(e)

        task = asyncio.ensure_future(produce())
        try:
            while True:
                item = await queue.get()
                if isinstance(item, Exception):
                    raise item
                yield item
                if isinstance(item, Finished):
                    return
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def close(self) -> None:
        """Close the HTTP clients and the default sandbox (synchronously)."""
        run_sync(self.aclose())

    async def aclose(self) -> None:
        """Close the HTTP client and the default sandbox of the running loop, and stop the
        embedded model's server (``model="local"``; the next solve would start it again)."""
        await self.client.aclose()
        if self.toolbox is not None:
            await self.toolbox.aclose()
        sandbox = self._own_sandboxes.pop(asyncio.get_running_loop(), None)
        if sandbox is not None:
            await sandbox.close()
        if self._local is not None:
            await asyncio.to_thread(self._local.close)

    async def __aenter__(self) -> Agent:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one solve --------------------------------------------------------------------------

    async def _solve(
        self,
        problem: Problem,
        seed: int | None,
        fields: Mapping[str, Any],
        emit: Callable[[Event], None] | None,
    ) -> SolveResult:
        if self._local is not None:  # the embedded server: started now, its port known now
            self.client.set_base_url(await self._local.abase_url())
        seed = self.config.seed if seed is None else seed
        functions = await self.toolbox.open() if self.toolbox is not None else None
        run = Run(self, problem, seed, fields, emit, functions)
        with structlog.contextvars.bound_contextvars(problem=run.problem_id, seed=seed):
            async with run:
                result = await self._loop(run)
        if emit is not None:
            emit(Finished(result=result))
        return result

    async def _loop(self, run: Run) -> SolveResult:
        """The agent loop: ask the model, run its code, feed the output back, until it stops."""
        fmt, budget = run.format, run.budget
        while True:
            if len(run.turns) >= self.config.max_model_calls:
                return run.finish("max_model_calls")
            if (tokens_left := run.tokens_left()) is not None and tokens_left <= 0:
                return run.finish("length")
            final = budget is not None and run.executed >= budget
            try:
                reply = await self.client.request(
                    fmt.build_request(final=final, max_tokens=tokens_left), **run.callbacks()
                )
            except ModelError as e:
                if isinstance(e, AuthenticationError):
                    raise
                return run.finish(
                    "length" if isinstance(e, ContextLengthError) else "error", error=e
                )
            turn = run.record(fmt.parse(reply, len(run.turns)))
            if turn.continues:
                run.add_text(fmt.feed(turn, []))
                continue
            if not turn.calls:
                return run.finish(run.stop_status(turn))
            if final and run.ends_final_round(turn):
                return run.finish("budget_spent")
            run.add_text(fmt.feed(turn, await run.execute_all(turn)))


def _default_template(tags: object) -> str:
    """The chat template a tag preset's models usually use."""
    return {"llama3": "llama3", "qwen": "qwen"}.get(tags if isinstance(tags, str) else "", "chatml")
