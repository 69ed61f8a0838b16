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
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlparse

import structlog
from pydantic import ValidationError

from tir_agent._sync import run_sync
from tir_agent.agent_config import AgentConfig
from tir_agent.chat_templates import ChatTemplate, get_chat_template
from tir_agent.client import OPENAI_URL, ModelClient
from tir_agent.errors import AuthenticationError, ConfigError, ContextLengthError, ModelError
from tir_agent.formats.tags import get_preset
from tir_agent.pricing import default_prices
from tir_agent.prompts import PromptConfig, load_prompt
from tir_agent.run import Problem, Run
from tir_agent.sandbox.base import Sandbox
from tir_agent.turn import (
    Event,
    Finished,
    SolveResult,
)

__all__ = ["Agent", "AgentConfig", "Problem"]

if TYPE_CHECKING:
    from tir_agent.local_model import LocalModel
    from tir_agent.tools.toolbox import Toolbox, ToolSpec


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

    async def _sandbox_for_run(self) -> Sandbox:
        """The sandbox a solve runs its code in: the one given, else this agent's own for the
        running event loop (created on first use, closed with the agent)."""
        if self._sandbox is not None:
            return self._sandbox
        loop = asyncio.get_running_loop()
        sandbox = self._own_sandboxes.get(loop)
        if sandbox is None:
            from tir_agent.sandbox.local import LocalSandbox  # heavy: only when code runs

            sandbox = self._own_sandboxes[loop] = LocalSandbox()
        return cast(Sandbox, sandbox)

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
