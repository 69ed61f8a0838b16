"""Options of the batch pipeline and the CLI: defaults, then a YAML file, then overrides.

Everything is merged by one function, :func:`load_config`. Names follow NVIDIA NeMo-Skills
(REFERENCE.md §7) so a NeMo-Skills user's arguments work unchanged::

    tir-agent generate --input in.jsonl --output out.jsonl \\
        ++prompt_config=openmath/tir ++server.code_execution.max_code_executions=5 \\
        ++total_code_executions_in_prompt='[1, 8]' ++override_max_code_executions=true

An override is ``key=value``, ``+key=value`` or ``++key=value`` (Hydra's forms, all meaning "set");
the value is parsed as YAML (``null``, ``true``, ``[1, 8]``, ``0.7``). An unknown key is a
:class:`~tir_agent.errors.ConfigError` that lists the close matches.

A config file is YAML holding the same keys, nested (``server: {code_execution: {...}}``) or dotted
(``server.code_execution.max_code_executions: 5``). A NeMo-Skills pipeline file works as well: a
mapping with ``inline_args`` (a string of overrides) and ``stage_kwargs`` (a mapping), at the top
level or under ``stages.<name>`` (``generate_solutions`` is taken when there are several).

Environment variables are read here and nowhere else: ``OPENAI_API_KEY`` (the API key when
``api_key`` is not set), ``OPENAI_BASE_URL`` (the endpoint when ``server_address`` is not set) and
``RAY_ADDRESS`` (the Ray cluster of ``--ray`` when ``ray.address`` is not set).
"""

from __future__ import annotations

import difflib
import json
import os
import shlex
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from tir_agent._resources import read_yaml
from tir_agent.errors import ConfigError
from tir_agent.sandbox.config import SandboxConfig

__all__ = [
    "ALIASES",
    "CodeExecutionConfig",
    "GenerateConfig",
    "InferenceConfig",
    "RayConfig",
    "ServerConfig",
    "config_keys",
    "describe_options",
    "load_config",
    "parse_override",
]

_FORBID = ConfigDict(extra="forbid", use_attribute_docstrings=True)

ServerType = Literal["openai", "vllm", "sglang", "trtllm", "local"]


class CodeExecutionConfig(BaseModel):
    """Execution budget and sandbox limits per sample (NeMo-Skills ``server.code_execution``)."""

    model_config = _FORBID

    max_code_executions: int | None = Field(default=8, ge=0)
    """Executions allowed per sample; ``null`` = unlimited (still bounded by ``max_model_calls``)."""
    code_execution_timeout: float = Field(default=10.0, gt=0)
    """Wall-clock limit of one execution, in seconds."""
    max_code_output_characters: int = Field(default=1000, ge=0)
    """Cap of each output stream; longer output ends with ``<output cut>``."""
    add_remaining_code_executions: bool = False
    """Append the "Remaining code executions" hint after each execution (REFERENCE.md §4)."""


class ServerConfig(BaseModel):
    """Server-side options (NeMo-Skills ``server.*``)."""

    model_config = _FORBID

    code_execution: CodeExecutionConfig = CodeExecutionConfig()
    """Execution budget and limits."""


class InferenceConfig(BaseModel):
    """Sampling parameters (NeMo-Skills ``inference.*``); ``None`` leaves the endpoint's default."""

    model_config = _FORBID

    tokens_to_generate: int | None = Field(default=None, gt=0)
    """Token budget of each model reply (``max_tokens`` / ``max_completion_tokens``)."""
    temperature: float | None = Field(default=None, ge=0)
    """Sampling temperature; seed runs (``num_random_seeds``) default to 0.7."""
    top_p: float | None = Field(default=None, gt=0, le=1)
    """Nucleus sampling; seed runs default to 0.95."""
    reasoning_effort: str | None = None
    """Reasoning models only: ``low``, ``medium`` or ``high``."""
    extra_body: dict[str, Any] = Field(default_factory=dict)
    """Extra JSON fields for every request (``top_k``, ``repetition_penalty``, ... on vLLM)."""


class RayConfig(BaseModel):
    """Generation spread over Ray actors (``tir-agent generate --ray``, docs/batch.md)."""

    model_config = _FORBID

    enabled: bool = False
    """Run the samples on Ray actors instead of in this process (``--ray``)."""
    address: str | None = None
    """The cluster to join, as ``ray.init`` takes it (``10.0.0.5:6379``, ``auto``); ``None`` =
    ``RAY_ADDRESS`` if set, else a new local cluster that stops with the run."""
    actors: int | None = Field(default=None, gt=0)
    """Actors, each with its own sandbox and ``max_concurrent_requests`` samples in flight;
    ``None`` = one per ``cpus_per_actor`` CPUs of each node (at least one per node)."""
    cpus_per_actor: int = Field(default=4, gt=0)
    """CPUs per actor for the default actor count (the actor's event loop, its sandbox's
    template and sessions); each actor reserves one Ray CPU."""


class GenerateConfig(BaseModel):
    """Every option of ``tir-agent generate`` (and ``solve``), with NeMo-Skills' names."""

    model_config = _FORBID

    # The model and its endpoint.
    model: str = "gpt-4o-mini"
    """Model name sent in requests (``local``: the embedded llama.cpp model, if installed)."""
    server_type: ServerType = "openai"
    """Kind of endpoint; every kind is spoken to through the OpenAI-compatible API."""
    server_address: str | None = None
    """Base URL of the OpenAI-compatible endpoint (``http://127.0.0.1:8000/v1``); ``None`` =
    ``OPENAI_BASE_URL`` or api.openai.com."""
    api_key: SecretStr | None = None
    """API key; ``None`` = the ``OPENAI_API_KEY`` environment variable."""
    format: Literal["tools", "tags"] = "tools"
    """How code is exchanged: native ``python_exec`` tool calls, or code between text tags."""
    api: Literal["chat", "completions", "responses"] = "chat"
    """Chat completions, plain completions with a chat template (tags only), or OpenAI's
    Responses API (tools only; reasoning carried across calls)."""
    store: bool = False
    """``api=responses``: store responses at OpenAI and chain them with ``previous_response_id``
    (default: nothing stored, reasoning resent encrypted)."""
    prices: str | dict[str, Any] | None = None
    """Model prices over the shipped table: a YAML file (or mapping) of
    ``{model: {input, cached_input, output}}`` in USD per 1M tokens."""
    code_tags: str | None = None
    """Tag preset for ``format=tags`` (``openmath``, ``qwen``, ``nemotron``, ``llama3``,
    ``gpt-oss``, ``tool-output``); ``None`` = the prompt's own ``code_tags`` or ``openmath``."""
    chat_template: str | None = None
    """``api=completions`` only: a built-in template name, a ``tokenizer_config.json`` or a
    ``.jinja`` file."""
    max_model_calls: int | None = Field(default=None, gt=0)
    """Bound on model calls per sample; ``None`` = the agent's default."""
    max_tool_calls: int | None = Field(default=None, ge=0)
    """Calls of the user's tools per sample (``generate(tools=...)``); ``None`` = unlimited."""
    tool_timeout: float | None = Field(default=None, gt=0)
    """Seconds one call of a user's tool may take; ``None`` = the agent's default (60)."""
    request_timeout: float | None = Field(default=None, gt=0)
    """Seconds before one model request is abandoned (and retried); ``None`` = client default."""
    max_retries: int | None = Field(default=None, ge=0)
    """Retries of a failed model request (429, 5xx, timeouts); ``None`` = client default."""

    # The prompt.
    prompt_config: str | None = None
    """Prompt config by name (``openmath/tir``, ``generic/math``, ...) or path to a YAML file;
    ``None`` = the agent's choice: ``generic/tool-calling`` (tools), ``generic/tool-output`` (tags
    in chat), ``openmath/tir`` (completions)."""
    prompt_format: Literal["ns", "openai"] = "ns"
    """``ns``: rows fill the prompt template; ``openai``: each row carries ``messages``, an OpenAI
    chat conversation sent as is."""
    system_message: str | None = None
    """Replaces the prompt's system message (literal text; ``""`` drops it)."""
    prompt_suffix: str = ""
    """Appended to the user message."""
    total_code_executions_in_prompt: int | tuple[int, int] | None = None
    """Fills ``{total_code_executions}``: an int, or ``[lo, hi]`` drawn per sample from its seed."""
    override_max_code_executions: bool = False
    """Make the value stated in the prompt the sample's enforced ``max_code_executions``."""

    # Execution.
    code_execution: bool = True
    """Run the code the model writes; ``false`` = plain generation (no executions)."""
    with_sandbox: bool = True
    """NeMo-Skills compatibility: a sandbox is always used when code runs (a local one, or the
    server(s) of ``sandbox.url``)."""
    server: ServerConfig = ServerConfig()
    """Execution budget and limits (``server.code_execution.*``)."""
    inference: InferenceConfig = InferenceConfig()
    """Sampling parameters (``inference.*``)."""
    sandbox: SandboxConfig = Field(default_factory=lambda: SandboxConfig.model_validate({}))
    """Sandbox options (memory, isolation, preloaded modules, ...; ``sandbox.url``: run code on
    remote tir-agent sandbox servers instead)."""

    # The batch.
    num_random_seeds: int | None = Field(default=None, gt=0)
    """Run every row with seeds ``starting_seed`` .. ``starting_seed + S - 1``, one output file
    per seed: ``<output stem>-rs{seed}.jsonl``."""
    starting_seed: int = Field(default=0, ge=0)
    """First seed of ``num_random_seeds``."""
    random_seeds: list[int] | None = None
    """An explicit list of seeds (instead of ``num_random_seeds``); one output file per seed."""
    max_samples: int | None = Field(default=None, gt=0)
    """Use only the first N rows of the input (of the chunk, with ``num_chunks``)."""
    num_chunks: int | None = Field(default=None, gt=0)
    """Split the input into this many contiguous chunks (NeMo-Skills' sharding, with
    ``chunk_id``): the run does one chunk, into ``<output stem>_chunk_K.jsonl``; the chunks are
    merged into the output when the last one finishes (or by ``tir-agent merge``)."""
    chunk_id: int | None = Field(default=None, ge=0)
    """Which chunk this run does, 0-based (with ``num_chunks``)."""
    ray: RayConfig = RayConfig()
    """Generation on a Ray cluster (``--ray``): actors, each with its own sandbox."""
    max_concurrent_requests: int = Field(default=256, gt=0)
    """Samples in flight at once."""
    requests_per_minute: float | None = Field(default=None, gt=0)
    """Start at most this many samples' model requests per minute (``None`` = no limit)."""
    tokens_per_minute: float | None = Field(default=None, gt=0)
    """Spend at most this many tokens (prompt + completion) per minute (``None`` = no limit)."""
    max_rpm: float | None = Field(default=None, gt=0)
    """Model requests per minute, paced per call and shared by every sample; ``None`` = the
    limit the endpoint states in its ``x-ratelimit-*`` headers (or none)."""
    max_tpm: float | None = Field(default=None, gt=0)
    """Tokens per minute, paced per call likewise; ``None`` = learned from the headers."""
    max_cost: float | None = Field(default=None, ge=0)
    """USD: start no new sample once the samples' cost reaches this (those in flight finish; a
    rerun with a higher cap resumes). ``None`` = no cap."""
    skip_filled: bool = True
    """Resume: samples already in the journal or output are not redone."""
    retry_errors: bool = False
    """On resume, redo the samples that were written with an ``error`` field."""
    keep_conversation: bool = False
    """Write the full conversation (``messages``) and the executions into each output row."""

    @field_validator("total_code_executions_in_prompt", mode="before")
    @classmethod
    def _range_from_list(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            if len(value) != 2:
                raise ValueError("must be an int or a [lo, hi] list of two ints")
            lo, hi = value
            if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
                raise ValueError(f"range [{lo}, {hi}] is empty: lo must be <= hi")
            return (lo, hi)
        return value

    def seeds(self) -> list[int | None]:
        """The seeds to run: ``[None]`` for a single unseeded pass."""
        if self.random_seeds is not None:
            return list(self.random_seeds)
        if self.num_random_seeds is not None:
            return list(range(self.starting_seed, self.starting_seed + self.num_random_seeds))
        return [None]

    def seeded(self) -> bool:
        """Whether this is a seed run (one output file per seed, sampling defaults 0.7 / 0.95)."""
        return self.random_seeds is not None or self.num_random_seeds is not None

    def sampling(self) -> tuple[float | None, float | None]:
        """Temperature and top_p, with the seed-run defaults (0.7, 0.95) filled in."""
        temperature, top_p = self.inference.temperature, self.inference.top_p
        if self.seeded():
            temperature = 0.7 if temperature is None else temperature
            top_p = 0.95 if top_p is None else top_p
        return temperature, top_p


ALIASES: dict[str, str] = {
    "max_code_executions": "server.code_execution.max_code_executions",
    "code_execution_timeout": "server.code_execution.code_execution_timeout",
    "max_code_output_characters": "server.code_execution.max_code_output_characters",
    "add_remaining_code_executions": "server.code_execution.add_remaining_code_executions",
    "tokens_to_generate": "inference.tokens_to_generate",
    "max_tokens": "inference.tokens_to_generate",
    "temperature": "inference.temperature",
    "top_p": "inference.top_p",
    "reasoning_effort": "inference.reasoning_effort",
    "base_url": "server_address",
    "tags": "code_tags",
    "prompt": "prompt_config",
    "concurrency": "max_concurrent_requests",
    "seeds": "random_seeds",
}
"""Short names accepted beside the NeMo-Skills ones (``max_tokens`` = ``inference.tokens_to_generate``)."""


def _walk(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, bool]]:
    for name, field in model.model_fields.items():
        path = prefix + name
        annotation = field.annotation
        nested = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        yield path, nested
        if nested:
            assert isinstance(annotation, type)
            yield from _walk(annotation, path + ".")


def config_keys() -> list[str]:
    """Every settable dotted key (``server.code_execution.max_code_executions``, ...)."""
    return [path for path, _ in _walk(GenerateConfig)]


_KEYS = dict(_walk(GenerateConfig))


def describe_options() -> list[tuple[str, str, str]]:
    """``(key, default, description)`` of every leaf option, for ``--list-options``."""
    rows: list[tuple[str, str, str]] = []

    def visit(model: type[BaseModel], instance: BaseModel, prefix: str) -> None:
        for name, field in model.model_fields.items():
            value = getattr(instance, name)
            if isinstance(value, BaseModel):
                visit(type(value), value, f"{prefix}{name}.")
                continue
            default = "null" if value is None else json.dumps(value, default=str)
            if name == "api_key":
                default = "null (OPENAI_API_KEY)"
            rows.append((prefix + name, default, (field.description or "").replace("\n", " ")))

    visit(GenerateConfig, GenerateConfig(), "")
    return rows


def _check_key(key: str, where: str) -> str:
    """The canonical dotted key for ``key``; unknown keys raise with the close matches."""
    key = ALIASES.get(key, key)
    if key in _KEYS:
        return key
    # A key below a dict-valued field (e.g. inference.extra_body.top_k) is free-form.
    parent = key
    while "." in parent:
        parent = parent.rsplit(".", 1)[0]
        if parent in _KEYS and not _KEYS[parent]:
            if parent.endswith(("extra_body", "env")):
                return key
            break
    candidates = [*_KEYS, *ALIASES]
    close = difflib.get_close_matches(key, candidates, n=3, cutoff=0.6)
    leaf = key.rsplit(".", 1)[-1]
    close += [c for c in candidates if c.rsplit(".", 1)[-1] == leaf and c not in close]
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ConfigError(
        f"Unknown option {key!r} ({where}).{hint} Run `tir-agent generate --list-options` to see "
        "every option."
    )


def parse_override(text: str) -> tuple[str, Any]:
    """``(key, value)`` from ``key=value``, ``+key=value`` or ``++key=value``; value parsed as YAML."""
    body = text.lstrip("+")
    if len(text) - len(body) > 2 or "=" not in body:
        raise ConfigError(
            f"Invalid override {text!r}: write key=value or ++key=value, e.g. "
            "++server.code_execution.max_code_executions=5"
        )
    key, raw = body.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"Invalid override {text!r}: the key is empty")
    stripped = raw.strip()
    value: Any
    if not stripped:
        value = ""  # Hydra: `key=` sets the empty string
    elif stripped in ("None", "none"):
        value = None  # Hydra users write None for "no limit"
    else:
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw  # not YAML: take the text as is (a prompt suffix with a colon, say)
    return key, value


def _set(target: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = target
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _flatten(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in data.items():
        path = f"{prefix}{key}"
        canonical = ALIASES.get(path, path)
        if isinstance(value, Mapping) and _KEYS.get(canonical, False):
            yield from _flatten(value, canonical + ".")
        else:
            yield path, value


def _read_file(path: Path) -> list[tuple[str, Any, str]]:
    """The ``(key, value, where)`` settings of a YAML config file (ours or a NeMo-Skills one)."""
    data = read_yaml(path, what="Config file")
    if data is None:
        return []
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {path} must hold a mapping of options")
    stages = data.get("stages")
    if isinstance(stages, dict):
        if "generate_solutions" in stages:
            data = stages["generate_solutions"]
        elif len(stages) == 1:
            data = next(iter(stages.values()))
        else:
            raise ConfigError(
                f"Config file {path} has several stages ({', '.join(stages)}) and none is named "
                "generate_solutions; keep only the generation stage"
            )
        if not isinstance(data, dict):
            raise ConfigError(f"Config file {path}: the stage must be a mapping")
    settings: list[tuple[str, Any, str]] = []
    if "inline_args" in data or "stage_kwargs" in data:
        kwargs = data.get("stage_kwargs") or {}
        if not isinstance(kwargs, dict):
            raise ConfigError(f"Config file {path}: stage_kwargs must be a mapping")
        settings += [(k, v, f"{path}: stage_kwargs") for k, v in _flatten(kwargs)]
        inline = data.get("inline_args") or ""
        for item in shlex.split(str(inline)):
            key, value = parse_override(item)
            settings.append((key, value, f"{path}: inline_args"))
        return settings
    return [(k, v, str(path)) for k, v in _flatten(data)]


def openai_api_key(env: Mapping[str, str] | None = None) -> str | None:
    """The ``OPENAI_API_KEY`` environment variable, or ``None`` when unset or empty."""
    return (os.environ if env is None else env).get("OPENAI_API_KEY") or None


def load_config(
    config_file: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    *,
    base: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> GenerateConfig:
    """The merged options: defaults, then the file, then ``base`` (CLI flags), then overrides.

    ``env`` defaults to ``os.environ``; it supplies ``api_key`` and ``server_address`` when neither
    the file nor the overrides set them. Every problem is a :class:`ConfigError` naming the option.
    """
    settings: list[tuple[str, Any, str]] = []
    if config_file is not None:
        settings += _read_file(Path(config_file))
    if base:
        settings += [(k, v, "command-line flag") for k, v in _flatten(base)]
    for item in overrides:
        key, value = parse_override(item)
        settings.append((key, value, f"override {item!r}"))

    merged: dict[str, Any] = {}
    for key, value, where in settings:
        canonical = _check_key(key, where)
        if isinstance(value, Mapping) and _KEYS.get(canonical, False):
            for sub, sub_value in _flatten(value, canonical + "."):
                _set(merged, _check_key(sub, where), sub_value)
        else:
            _set(merged, canonical, value)

    environ = os.environ if env is None else env
    if merged.get("api_key") is None and environ.get("OPENAI_API_KEY"):
        merged["api_key"] = environ["OPENAI_API_KEY"]
    if merged.get("server_address") is None and environ.get("OPENAI_BASE_URL"):
        merged["server_address"] = environ["OPENAI_BASE_URL"]
    ray_settings = merged.get("ray")
    if environ.get("RAY_ADDRESS") and not (
        isinstance(ray_settings, dict) and ray_settings.get("address") is not None
    ):
        _set(merged, "ray.address", environ["RAY_ADDRESS"])

    try:
        config = GenerateConfig.model_validate(merged)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
        )
        raise ConfigError(f"Invalid options: {problems}") from None
    if config.random_seeds is not None and config.num_random_seeds is not None:
        raise ConfigError("Set either num_random_seeds or random_seeds, not both")
    if config.prompt_format == "openai" and (
        config.system_message is not None or config.prompt_suffix
    ):
        raise ConfigError(
            "system_message and prompt_suffix apply to prompt templates; with prompt_format=openai "
            "the rows' messages are sent as they are: edit them instead"
        )
    if (config.num_chunks is None) != (config.chunk_id is None):
        raise ConfigError(
            "num_chunks and chunk_id go together: ++num_chunks=N ++chunk_id=K runs chunk K of N"
        )
    if (
        config.num_chunks is not None
        and config.chunk_id is not None
        and config.chunk_id >= config.num_chunks
    ):
        raise ConfigError(
            f"chunk_id={config.chunk_id} is outside 0..{config.num_chunks - 1} "
            f"(num_chunks={config.num_chunks})"
        )
    if config.override_max_code_executions and config.total_code_executions_in_prompt is None:
        raise ConfigError(
            "override_max_code_executions=true needs total_code_executions_in_prompt (an int or a "
            "[lo, hi] range)"
        )
    return config
