"""The agent as a batch solver, and ``generate``: the whole ``tir-agent generate`` run."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pydantic import BaseModel

from tir_agent._log import get_logger
from tir_agent.batch.chunks import Chunk, merge_chunks
from tir_agent.batch.engine import BatchSummary, Job, SampleOutput, run_batch
from tir_agent.batch.journal import output_path, scan_input
from tir_agent.batch.progress import Progress
from tir_agent.config import GenerateConfig
from tir_agent.errors import ConfigError
from tir_agent.sandbox.base import Sandbox

if TYPE_CHECKING:
    from tir_agent.agent import Agent

log = get_logger(__name__)

__all__ = [
    "AgentSolver",
    "agent_options",
    "build_agent",
    "explicit_options",
    "generate",
    "open_agent",
]


def _literal(text: str) -> str:
    """``text`` as a ``str.format`` template that renders to itself."""
    return text.replace("{", "{{").replace("}", "}}")


def explicit_options(model: BaseModel, prefix: str = "") -> set[str]:
    """Dotted keys of the options set explicitly (file, flags, overrides, environment)."""
    keys: set[str] = set()
    for name in model.model_fields_set:
        keys.add(prefix + name)
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            keys |= explicit_options(value, f"{prefix}{name}.")
    return keys


_AGENT_KEYS = {
    "base_url": "server_address",
    "format": "format",
    "api": "api",
    "tags": "code_tags",
    "max_code_executions": "server.code_execution.max_code_executions",
    "add_remaining_code_executions": "server.code_execution.add_remaining_code_executions",
    "code_execution_timeout": "server.code_execution.code_execution_timeout",
    "max_code_output_characters": "server.code_execution.max_code_output_characters",
    "prompt": "prompt_config",
    "chat_template": "chat_template",
    "temperature": "inference.temperature",
    "top_p": "inference.top_p",
    "max_tokens": "inference.tokens_to_generate",
    "reasoning_effort": "inference.reasoning_effort",
    "extra_body": "inference.extra_body",
    "total_code_executions_in_prompt": "total_code_executions_in_prompt",
    "override_max_code_executions": "override_max_code_executions",
    "max_model_calls": "max_model_calls",
    "max_tool_calls": "max_tool_calls",
    "tool_timeout": "tool_timeout",
    "timeout": "request_timeout",
    "max_retries": "max_retries",
    "store": "store",
    "prices": "prices",
    "max_rpm": "max_rpm",
    "max_tpm": "max_tpm",
}
"""Agent option -> the option of :class:`GenerateConfig` it comes from."""


def agent_options(config: GenerateConfig) -> dict[str, Any]:
    """The :class:`~tir_agent.agent.Agent` options for ``config`` (NeMo-Skills names mapped).

    Only options set explicitly are passed (plus the seed-run sampling defaults and
    ``code_execution=false``), so everything else keeps the agent's own default, including the
    defaults it picks for a model (such as the embedded local one).
    """
    execution = config.server.code_execution
    temperature, top_p = config.sampling()
    values: dict[str, Any] = {
        "base_url": config.server_address,
        "format": config.format,
        "api": config.api,
        "tags": config.code_tags,
        "max_code_executions": execution.max_code_executions,
        "add_remaining_code_executions": execution.add_remaining_code_executions,
        "code_execution_timeout": execution.code_execution_timeout,
        "max_code_output_characters": execution.max_code_output_characters,
        "prompt": config.prompt_config,
        "chat_template": config.chat_template,
        "temperature": temperature,
        "top_p": top_p,
        "max_tokens": config.inference.tokens_to_generate,
        "reasoning_effort": config.inference.reasoning_effort,
        "extra_body": config.inference.extra_body or None,
        "total_code_executions_in_prompt": config.total_code_executions_in_prompt,
        "override_max_code_executions": config.override_max_code_executions,
        "max_model_calls": config.max_model_calls,
        "max_tool_calls": config.max_tool_calls,
        "tool_timeout": config.tool_timeout,
        "timeout": config.request_timeout,
        "max_retries": config.max_retries,
        "store": config.store,
        "prices": config.prices,
        "max_rpm": config.max_rpm,
        "max_tpm": config.max_tpm,
    }
    explicit = explicit_options(config)
    options = {key: values[key] for key, source in _AGENT_KEYS.items() if source in explicit}
    if config.seeded():
        options.update(temperature=temperature, top_p=top_p)
    if not config.code_execution:
        options.update(max_code_executions=0, override_max_code_executions=False)
    # ``None`` means "the agent's default" for these, but is a value ("no limit") for the others.
    defaults_only = ("max_model_calls", "timeout", "max_retries", "tool_timeout")
    return {k: v for k, v in options.items() if v is not None or k not in defaults_only}


def build_agent(
    config: GenerateConfig,
    *,
    sandbox: Sandbox | None = None,
    http_client: Any = None,
    tools: Sequence[Any] = (),
) -> Agent:
    """An :class:`~tir_agent.agent.Agent` configured from ``config`` (prompt overrides applied),
    with the user's ``tools`` (functions, MCP servers)."""
    from tir_agent.agent import Agent

    api_key = config.api_key.get_secret_value() if config.api_key is not None else None
    options = agent_options(config)
    agent = Agent(
        config.model,
        api_key=api_key,
        sandbox=sandbox,
        http_client=http_client,
        tools=tools,
        **options,
    )
    if config.system_message is not None or config.prompt_suffix:
        prompt = agent.prompt
        update: dict[str, Any] = {"user": prompt.user + _literal(config.prompt_suffix)}
        if config.system_message is not None:
            update["system"] = _literal(config.system_message) or None
        options["prompt"] = prompt.model_copy(update=update)
        agent = Agent(
            config.model,
            api_key=api_key,
            sandbox=sandbox,
            http_client=http_client,
            tools=tools,
            **options,
        )
    return agent


def _check_conversation(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise ConfigError("prompt_format=openai: the row's 'messages' must be a non-empty list")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message:
            raise ConfigError(
                f"prompt_format=openai: messages[{i}] must be an object with 'role' and 'content'"
            )


class AgentSolver:
    """A :data:`Solver` that runs each job through one shared :class:`~tir_agent.agent.Agent`."""

    def __init__(self, config: GenerateConfig, agent: Agent) -> None:
        self.config = config
        self.agent = agent
        self._required = agent.prompt.required_keys()

    def validate(self, row: dict[str, Any]) -> None:
        """Raise :class:`ConfigError` when ``row`` cannot fill the prompt."""
        if self.config.prompt_format == "openai":
            if "messages" not in row:
                raise ConfigError(
                    "prompt_format=openai needs a 'messages' field (an OpenAI chat conversation) "
                    "in every row"
                )
            _check_conversation(row["messages"])
            return
        missing = sorted(self._required - row.keys())
        if missing:
            name = self.agent.prompt.name or "<inline>"
            raise ConfigError(
                f"the row lacks {', '.join(missing)}, which prompt {name} needs (row keys: "
                f"{', '.join(sorted(row)) or 'none'}); add the field or use another prompt"
            )

    async def __call__(self, job: Job) -> SampleOutput:
        """Solve one job; the endpoint failing for good gives an ``error`` field."""
        row = job.row
        if self.config.prompt_format == "openai":
            result = await self.agent.asolve(row["messages"], seed=job.seed)
        else:
            fields = {k: v for k, v in row.items() if k not in ("problem", "seed", "self")}
            result = await self.agent.asolve(str(row.get("problem", "")), seed=job.seed, **fields)
        record = result.to_record()
        if result.status == "error":
            record["error"] = result.error or "the model endpoint failed"
        toolbox = self.agent.toolbox
        if toolbox is not None:  # the user's tool calls (python_exec runs are counted above)
            record["tool_calls"] = [
                c.model_dump(include={"name", "arguments", "output", "failed"})
                for c in result.tool_calls
            ]
        if self.config.keep_conversation:
            record["messages"] = result.messages
            if result.prompt is not None:
                record["prompt"] = result.prompt
            if toolbox is not None:  # what export needs to keep the calls as tool calls
                record["tools"] = (await toolbox.open()).definitions()
        return SampleOutput(record, tokens=result.usage.total_tokens, requests=len(result.turns))


@contextlib.asynccontextmanager
async def open_agent(
    config: GenerateConfig,
    *,
    sandbox: Sandbox | None = None,
    http_client: Any = None,
    tools: Sequence[Any] = (),
) -> AsyncIterator[Agent]:
    """An agent for ``config`` (unless ``sandbox`` is given, with a sandbox of
    ``config.sandbox``: a :class:`~tir_agent.sandbox.RemoteSandbox` when ``sandbox.url`` is set,
    else a :class:`~tir_agent.sandbox.LocalSandbox` whose sessions are reset and reused by the
    samples through a :class:`~tir_agent.sandbox.pool.SessionPool`); the agent and any sandbox
    made here are closed on exit."""
    own: Any = None
    pool: Any = None
    if sandbox is None and config.sandbox.url is not None:
        from tir_agent.sandbox.remote import RemoteSandbox

        explicit = config.sandbox.model_fields_set
        own = RemoteSandbox(
            config.sandbox.url,
            timeout=config.sandbox.timeout if "timeout" in explicit else None,
            max_output_characters=(
                config.sandbox.max_output_characters
                if "max_output_characters" in explicit
                else None
            ),
        )
        sandbox = cast(Sandbox, own)
    elif sandbox is None:
        from tir_agent.sandbox.local import LocalSandbox
        from tir_agent.sandbox.pool import SessionPool

        # A sample's session is reset and handed to the next sample instead of closed: that
        # saves a new supervisor per sample (docs/batch.md, "What a sample costs").
        # A sample's last cell is followed by no other: unless told otherwise, a runner is
        # forked when a cell comes rather than ahead of one that may never come (ditto).
        sandbox_config = config.sandbox
        if "fork_ahead" not in sandbox_config.model_fields_set:
            sandbox_config = sandbox_config.model_copy(update={"fork_ahead": False})
        own = LocalSandbox(sandbox_config)
        pool = SessionPool(own, config.max_concurrent_requests)
        sandbox = cast(Sandbox, pool)
    try:
        agent = build_agent(config, sandbox=sandbox, http_client=http_client, tools=tools)
        try:
            yield agent
        finally:
            await agent.aclose()
    finally:
        if pool is not None:
            await pool.close()
        if own is not None:
            await own.close()


async def generate(
    input_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    config: GenerateConfig,
    *,
    progress: Progress | None = None,
    sandbox: Sandbox | None = None,
    http_client: Any = None,
    tools: Sequence[Any] = (),
) -> BatchSummary:
    """``tir-agent generate`` as a function: every row of ``input_path`` (times every seed);
    ``tools``: the user's functions and MCP servers (rows then carry ``tool_calls``).

    With ``num_chunks``/``chunk_id`` only that chunk runs, and the chunks are merged into the
    output(s) once all are done (``outputs`` of the summary are then the merged files, else this
    chunk's files). With ``ray.enabled`` the samples run on Ray actors (:mod:`.cluster`).
    """
    source, target = Path(input_path), Path(output)
    seeds = config.seeds()
    chunk = None
    if config.num_chunks is not None and config.chunk_id is not None:
        chunk = Chunk.of(source, config.num_chunks, config.chunk_id)
        if config.skip_filled:  # NeMo-Skills: a merged output means every chunk is done
            merged = [s for s in seeds if _merged(output_path(target, s), chunk)]
            seeds = [s for s in seeds if s not in merged]
            if not seeds:
                return BatchSummary([output_path(target, s) for s in merged], 0, 0, 0, 0)
    if tools and config.ray.enabled:
        raise ConfigError(
            "tools= are not sent to Ray actors: run without --ray, or give the actors the tools "
            "through a sandbox service or MCP server they can reach"
        )
    async with open_agent(config, sandbox=sandbox, http_client=http_client, tools=tools) as agent:
        solver = AgentSolver(config, agent)
        if chunk is not None and not chunk.rows:  # more chunks than rows: this one is empty
            for seed in seeds:
                chunk.path(output_path(target, seed)).write_bytes(b"")
            summary = BatchSummary([chunk.path(output_path(target, s)) for s in seeds], 0, 0, 0, 0)
        else:
            select = None if chunk is None else chunk.rows
            scan = scan_input(source, solver.validate, config.max_samples, select)
            options: dict[str, Any] = {
                "scan": scan,
                "seeds": seeds,
                "max_samples": config.max_samples,
                "resume": config.skip_filled,
                "retry_errors": config.retry_errors,
                "requests_per_minute": config.requests_per_minute,
                "tokens_per_minute": config.tokens_per_minute,
                "progress": progress,
                "chunk": chunk,
                "max_cost": config.max_cost,
            }
            if config.ray.enabled:
                from tir_agent.batch.cluster import RaySolver

                async with RaySolver.start(config) as remote:
                    summary = await run_batch(
                        source, target, remote, concurrency=remote.concurrency, **options
                    )
            else:
                summary = await run_batch(
                    source, target, solver, concurrency=config.max_concurrent_requests, **options
                )
    if chunk is None:
        return summary
    outputs = [output_path(target, s) for s in seeds]
    if all([merge_chunks(path, chunk.count) for path in outputs]):
        log.info("chunks.merged", outputs=[str(p) for p in outputs], chunks=chunk.count)
        return dataclasses.replace(summary, outputs=outputs)
    return summary


def _merged(output: Path, chunk: Chunk) -> bool:
    """Whether ``output`` was merged from its chunks already (so this chunk is done)."""
    return output.exists() and not chunk.path(output).exists()
