"""Batch generation over JSONL: concurrency, rate limits, crash-safe resume, progress.

The engine knows nothing about models: it feeds :class:`Job` values (one input row and one seed)
to a *solver*, an async function returning the fields to add to the row (``generation`` and the
statistics of REFERENCE.md §7). :class:`AgentSolver` is the solver built on an ``Agent``, and
:func:`generate` the whole ``tir-agent generate`` run.

Restartability. Every finished sample is appended to a journal beside its output file
(``<output>.journal``) and flushed at once, as one line ``<row index>\\t<json record>``. A rerun
reads the journal, drops a torn last line (a crash mid-write), skips the samples it holds, and
redoes only the others. When every sample is done, the output is written in input order to a
temporary file and renamed over the output (``os.replace``), then the journal is removed: the
output file is either absent, the previous complete one, or the new complete one, never half
written. A sample whose model call fails for good is recorded with an ``error`` field; a rerun
with ``retry_errors`` redoes those.

Seeds: with ``num_random_seeds`` (or ``random_seeds``) every row runs once per seed, and each seed
gets its own output file ``<stem>-rs{seed}<suffix>`` (NeMo-Skills' convention), each with its own
journal. All seeds share one pool of concurrent tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO, cast

import structlog

from tir_agent._log import get_logger
from tir_agent.config import GenerateConfig
from tir_agent.errors import AuthenticationError, ConfigError, ModelError, SandboxError
from tir_agent.ratelimit import RateLimiter
from tir_agent.sandbox.base import Sandbox
from tir_agent.sandbox.config import SandboxConfig

if TYPE_CHECKING:
    from tir_agent.agent import Agent

__all__ = [
    "AgentSolver",
    "BatchSummary",
    "Job",
    "Journal",
    "PlainProgress",
    "Progress",
    "RichProgress",
    "SampleOutput",
    "Solver",
    "agent_options",
    "build_agent",
    "generate",
    "journal_path",
    "make_progress",
    "output_path",
    "read_rows",
    "run_batch",
    "scan_input",
]

log = get_logger(__name__)

_HEADER = "#tir-agent-journal "
_MISSING = object()
_WRITTEN = frozenset(
    {
        "generation", "predicted_answer", "symbolic_correct", "error", "messages", "prompt",
        "code_rounds_executed", "num_code_timeouts", "num_generated_tokens", "generation_time",
        "code_execution_time", "finish_status", "num_model_calls", "total_code_executions",
    }
)  # fmt: skip
"""Fields a run writes (an input may carry them from an earlier run: not compared on resume)."""


@dataclass(frozen=True, slots=True)
class Job:
    """One sample to generate: an input row and the seed to run it with."""

    index: int
    """0-based position of the row in the input (blank lines not counted)."""
    seed: int | None
    """The sample's seed (``None`` in an unseeded run)."""
    row: dict[str, Any]
    """The input row as read."""


@dataclass(frozen=True, slots=True)
class SampleOutput:
    """What a solver returns for one job."""

    fields: dict[str, Any]
    """Fields added to the row (``generation``, statistics, ``error`` on failure, ...)."""
    tokens: int = 0
    """Prompt plus completion tokens the sample used (for ``tokens_per_minute``)."""
    requests: int = 1
    """Model calls the sample made (for ``requests_per_minute``)."""


Solver = Callable[[Job], Awaitable[SampleOutput]]
"""An async function generating one sample."""


@dataclass(frozen=True, slots=True)
class InputScan:
    """What a validating pass over the input found."""

    rows: int
    """Number of rows (after ``max_samples``)."""
    sha256: str
    """Digest of the rows used, so a journal is never resumed against another input."""


def read_rows(
    path: Path, max_samples: int | None = None
) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """``(row index, line number, row)`` for each non-blank line of a JSONL file, streamed."""
    try:
        handle = path.open(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"Cannot read input file {path}: {e.strerror or e}") from None
    with handle:
        index = 0
        for line_no, line in enumerate(handle, start=1):
            if max_samples is not None and index >= max_samples:
                return
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(
                    f"{path}:{line_no}: not valid JSON ({e.msg} at column {e.colno}); each line "
                    "must be one JSON object"
                ) from None
            if not isinstance(row, dict):
                raise ConfigError(
                    f"{path}:{line_no}: expected a JSON object, got {type(row).__name__}"
                )
            yield index, line_no, row
            index += 1


def scan_input(
    path: Path,
    validate: Callable[[dict[str, Any]], None] | None = None,
    max_samples: int | None = None,
) -> InputScan:
    """Check every row (``validate`` raises :class:`ConfigError`) and count and digest them."""
    digest = hashlib.sha256()
    rows = 0
    for _, line_no, row in read_rows(path, max_samples):
        if validate is not None:
            try:
                validate(row)
            except ConfigError as e:
                raise ConfigError(f"{path}:{line_no}: {e}") from None
        digest.update(json.dumps(row, sort_keys=True).encode())
        digest.update(b"\n")
        rows += 1
    if rows == 0:
        raise ConfigError(f"Input file {path} has no rows")
    return InputScan(rows=rows, sha256=digest.hexdigest())


def output_path(output: Path, seed: int | None) -> Path:
    """The output file of ``seed``: ``out.jsonl`` -> ``out-rs3.jsonl``; unseeded: ``output``."""
    if seed is None:
        return output
    return output.with_name(f"{output.stem}-rs{seed}{output.suffix}")


def journal_path(output: Path) -> Path:
    """Where the journal of ``output`` lives while a run is unfinished."""
    return output.with_name(output.name + ".journal")


class Journal:
    """The append-only record of finished samples of one output file."""

    def __init__(self, output: Path, scan: InputScan) -> None:
        self.output = output
        self.path = journal_path(output)
        self.scan = scan
        self.done: set[int] = set()
        """Indices with a finished record (including errors)."""
        self.errors: set[int] = set()
        """Indices whose latest record has an ``error`` field."""
        self._handle: TextIO | None = None

    def load(
        self, *, resume: bool, rows: Callable[[], Iterator[dict[str, Any]]] | None = None
    ) -> None:
        """Read what an earlier run finished (or start afresh when ``resume`` is false).

        ``rows`` streams the input rows; an existing output is adopted only if it matches them.
        """
        if not resume:
            self.path.unlink(missing_ok=True)
        elif self.path.exists():
            self._read_existing()
        elif self.output.exists():
            self._adopt_output(rows() if rows is not None else None)
        if not self.path.exists():
            self._write_header()

    def _header(self) -> str:
        meta = {"input_sha256": self.scan.sha256, "rows": self.scan.rows}
        return _HEADER + json.dumps(meta) + "\n"

    def _write_header(self) -> None:
        with self.path.open("w", encoding="utf-8") as f:
            f.write(self._header())

    def _read_existing(self) -> None:
        good_end = 0
        with self.path.open("rb") as f:
            first = f.readline()
            if first.decode("utf-8", "replace") != self._header():
                raise ConfigError(
                    f"{self.path} belongs to a run over different input rows; remove it (or pass "
                    "--overwrite) to start over"
                )
            good_end = f.tell()
            for raw in f:
                parsed = _parse_journal_line(raw)
                if parsed is None:
                    break  # a torn line from a crash mid-write: drop it and what follows
                index, record = parsed
                if index >= self.scan.rows:
                    break
                self._note(index, record)
                good_end = f.tell()
        with self.path.open("r+b") as f:
            f.truncate(good_end)

    def _adopt_output(self, rows: Iterator[dict[str, Any]] | None) -> None:
        """A complete output from an earlier run: treat its rows as finished samples."""
        lines = 0
        with self.output.open(encoding="utf-8") as src:
            for _ in src:
                lines += 1
        fix = "pass --overwrite (skip_filled=false) to regenerate it"
        if lines != self.scan.rows:
            raise ConfigError(
                f"{self.output} exists with {lines} rows but the input has {self.scan.rows}; {fix}"
            )
        self._write_header()
        try:
            with (
                self.output.open(encoding="utf-8") as src,
                self.path.open("a", encoding="utf-8") as f,
            ):
                for index, line in enumerate(src):
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        raise ConfigError(
                            f"{self.output}:{index + 1} is not valid JSON; {fix}"
                        ) from None
                    row = next(rows) if rows is not None else {}
                    if any(
                        record.get(k, _MISSING) != v for k, v in row.items() if k not in _WRITTEN
                    ):
                        raise ConfigError(
                            f"{self.output}:{index + 1} does not hold input row {index + 1} (an "
                            f"output of another input?); {fix}"
                        )
                    self._note(index, record)
                    f.write(f"{index}\t{line.rstrip(chr(10))}\n")
        except ConfigError:
            self.path.unlink(missing_ok=True)
            raise

    def _note(self, index: int, record: Mapping[str, Any]) -> None:
        self.done.add(index)
        if record.get("error") is not None:
            self.errors.add(index)
        else:
            self.errors.discard(index)

    def pending(self, index: int, *, retry_errors: bool) -> bool:
        """Whether the sample at ``index`` still has to run."""
        return index not in self.done or (retry_errors and index in self.errors)

    def append(self, index: int, record: Mapping[str, Any]) -> None:
        """Record a finished sample durably (written and flushed before returning)."""
        if self._handle is None:
            self._handle = self.path.open("a", encoding="utf-8")
        line = f"{index}\t{json.dumps(record, ensure_ascii=False)}\n"
        self._handle.write(line)
        self._handle.flush()
        self._note(index, record)

    def close(self) -> None:
        """Close the journal file (it stays on disk)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def finalize(self) -> None:
        """Write the output in input order, atomically, and remove the journal."""
        self.close()
        offsets: dict[int, tuple[int, int]] = {}
        with self.path.open("rb") as f:
            f.readline()
            while True:
                start = f.tell()
                raw = f.readline()
                if not raw:
                    break
                tab = raw.index(b"\t")
                offsets[int(raw[:tab])] = (start + tab + 1, len(raw) - tab - 1)
        missing = [i for i in range(self.scan.rows) if i not in offsets]
        if missing:
            raise RuntimeError(f"{self.path}: samples {missing[:10]} never finished")
        tmp = self.output.with_name(f".{self.output.name}.tmp-{os.getpid()}")
        try:
            with self.path.open("rb") as src, tmp.open("wb") as dst:
                for index in range(self.scan.rows):
                    start, length = offsets[index]
                    src.seek(start)
                    dst.write(src.read(length))
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(tmp, self.output)
        finally:
            tmp.unlink(missing_ok=True)
        self.path.unlink()


def _parse_journal_line(raw: bytes) -> tuple[int, dict[str, Any]] | None:
    if not raw.endswith(b"\n"):
        return None
    tab = raw.find(b"\t")
    if tab < 0:
        return None
    try:
        index = int(raw[:tab])
        record = json.loads(raw[tab + 1 :])
    except ValueError:
        return None
    return (index, record) if isinstance(record, dict) and index >= 0 else None


class Progress(Protocol):
    """Receives the progress of a batch run."""

    def start(self, total: int, done: int) -> None:
        """``total`` samples, of which ``done`` were finished by an earlier run."""

    def update(self, record: Mapping[str, Any]) -> None:
        """One sample finished."""

    def close(self) -> None:
        """The run ended (or stopped)."""


@dataclass
class _Counts:
    total: int = 0
    done: int = 0
    new: int = 0
    executions: int = 0
    timeouts: int = 0
    errors: int = 0
    started: float = field(default_factory=time.monotonic)

    def add(self, record: Mapping[str, Any]) -> None:
        self.done += 1
        self.new += 1
        self.executions += int(record.get("code_rounds_executed") or 0)
        self.timeouts += int(record.get("num_code_timeouts") or 0)
        self.errors += record.get("error") is not None

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.new / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        rate = self.rate()
        left = self.total - self.done
        eta = f"{left / rate:.0f}s" if rate > 0 else "?"
        return (
            f"{self.done}/{self.total} samples, {rate:.1f}/s, ETA {eta}, "
            f"{self.executions} executions, {self.timeouts} timeouts, {self.errors} errors"
        )


class PlainProgress:
    """Progress as plain lines (for logs and pipes): at most one line every ``interval`` s."""

    def __init__(self, stream: TextIO | None = None, interval: float = 10.0) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.counts = _Counts()
        self._last = 0.0

    def start(self, total: int, done: int) -> None:
        self.counts = _Counts(total=total, done=done)
        self._last = time.monotonic()
        resumed = f" ({done} already done)" if done else ""
        print(f"generate: {total} samples{resumed}", file=self.stream, flush=True)

    def update(self, record: Mapping[str, Any]) -> None:
        self.counts.add(record)
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            print(f"generate: {self.counts.line()}", file=self.stream, flush=True)

    def close(self) -> None:
        print(f"generate: {self.counts.line()}", file=self.stream, flush=True)


class RichProgress:
    """A live progress bar with rate, ETA, executions, timeouts and errors (for terminals)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )

        self.counts = _Counts()
        self._bar = Progress(
            TextColumn("generate"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[stats]}"),
            console=Console(file=stream if stream is not None else sys.stderr),
        )
        self._task = self._bar.add_task("generate", total=None, rate="", stats="")

    def start(self, total: int, done: int) -> None:
        self.counts = _Counts(total=total, done=done)
        self._bar.update(self._task, total=total, completed=done)
        self._bar.start()

    def update(self, record: Mapping[str, Any]) -> None:
        self.counts.add(record)
        c = self.counts
        stats = f"exec {c.executions} · timeouts {c.timeouts} · errors {c.errors}"
        self._bar.update(self._task, completed=c.done, rate=f"{c.rate():.1f}/s", stats=stats)

    def close(self) -> None:
        self._bar.stop()


class _NoProgress:
    def start(self, total: int, done: int) -> None:
        pass

    def update(self, record: Mapping[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def make_progress(stream: TextIO | None = None, *, enabled: bool = True) -> Progress:
    """A rich bar on a terminal, plain lines otherwise, nothing when disabled."""
    stream = stream if stream is not None else sys.stderr
    if not enabled:
        return _NoProgress()
    if stream.isatty():
        return RichProgress(stream)
    return PlainProgress(stream)


@dataclass(frozen=True, slots=True)
class BatchSummary:
    """What a batch run did."""

    outputs: list[Path]
    """The output files written (one per seed)."""
    total: int
    """Samples over all seeds."""
    skipped: int
    """Samples finished by an earlier run and not redone."""
    generated: int
    """Samples generated in this run."""
    errors: int
    """Samples of this run recorded with an ``error`` field."""


async def run_batch(
    input_path: Path,
    output: Path,
    solver: Solver,
    *,
    scan: InputScan,
    seeds: list[int | None],
    concurrency: int = 256,
    max_samples: int | None = None,
    resume: bool = True,
    retry_errors: bool = False,
    requests_per_minute: float | None = None,
    tokens_per_minute: float | None = None,
    progress: Progress | None = None,
) -> BatchSummary:
    """Generate every (row, seed) sample of ``input_path`` into ``output`` (see module docs).

    ``scan`` comes from :func:`scan_input` over the same file (the rows were validated there).
    """
    progress = progress if progress is not None else _NoProgress()
    journals = {seed: Journal(output_path(output, seed), scan) for seed in seeds}
    for journal in journals.values():
        journal.load(
            resume=resume, rows=lambda: (row for _, _, row in read_rows(input_path, max_samples))
        )
    total = scan.rows * len(seeds)
    todo = sum(
        journal.pending(i, retry_errors=retry_errors)
        for journal in journals.values()
        for i in range(scan.rows)
    )
    rpm = RateLimiter(requests_per_minute) if requests_per_minute else None
    tpm = RateLimiter(tokens_per_minute) if tokens_per_minute else None
    log.info("batch.start", total=total, todo=todo, seeds=len(seeds), concurrency=concurrency)
    progress.start(total, total - todo)
    errors = 0
    queue: asyncio.Queue[Job | None] = asyncio.Queue(maxsize=2 * concurrency)

    async def produce(workers: int) -> None:
        for index, _, row in read_rows(input_path, max_samples):
            for seed, journal in journals.items():
                if journal.pending(index, retry_errors=retry_errors):
                    await queue.put(Job(index=index, seed=seed, row=row))
        for _ in range(workers):
            await queue.put(None)

    async def work() -> None:
        nonlocal errors
        while (job := await queue.get()) is not None:
            if rpm is not None:
                await rpm.acquire()
            if tpm is not None:
                await tpm.acquire(0)
            try:
                with structlog.contextvars.bound_contextvars(sample=job.index):
                    out = await solver(job)
            except AuthenticationError:
                raise  # every sample would fail the same way: stop the run
            except (ModelError, SandboxError) as e:
                log.warning("sample.failed", index=job.index, seed=job.seed, error=str(e))
                out = SampleOutput({"generation": None, "error": f"{type(e).__name__}: {e}"})
            if rpm is not None and out.requests > 1:
                rpm.charge(out.requests - 1)
            if tpm is not None:
                tpm.charge(out.tokens)
            record = {**job.row, **out.fields}
            journals[job.seed].append(job.index, record)
            errors += record.get("error") is not None
            progress.update(record)

    count = max(1, min(concurrency, todo))
    tasks = [asyncio.create_task(work()) for _ in range(count)]
    tasks.append(asyncio.create_task(produce(count)))
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*tasks, return_exceptions=True)
        for journal in journals.values():
            journal.close()
        progress.close()
    for journal in journals.values():
        journal.finalize()
    log.info("batch.done", generated=todo, errors=errors)
    return BatchSummary(
        outputs=[j.output for j in journals.values()],
        total=total,
        skipped=total - todo,
        generated=todo,
        errors=errors,
    )


# -- the agent as a solver ------------------------------------------------------------------


def _literal(text: str) -> str:
    """``text`` as a ``str.format`` template that renders to itself."""
    return text.replace("{", "{{").replace("}", "}}")


def agent_options(config: GenerateConfig) -> dict[str, Any]:
    """The :class:`~tir_agent.agent.Agent` options for ``config`` (NeMo-Skills names mapped)."""
    execution = config.server.code_execution
    temperature, top_p = config.sampling()
    options: dict[str, Any] = {
        "base_url": config.server_address,
        "format": config.format,
        "api": config.api,
        "tags": config.code_tags,
        "max_code_executions": execution.max_code_executions if config.code_execution else 0,
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
        "override_max_code_executions": config.override_max_code_executions
        and config.code_execution,
    }
    if config.max_model_calls is not None:
        options["max_model_calls"] = config.max_model_calls
    if config.request_timeout is not None:
        options["timeout"] = config.request_timeout
    if config.max_retries is not None:
        options["max_retries"] = config.max_retries
    return options


def build_agent(
    config: GenerateConfig, *, sandbox: Sandbox | None = None, http_client: Any = None
) -> Agent:
    """An :class:`~tir_agent.agent.Agent` configured from ``config`` (prompt overrides applied)."""
    from tir_agent.agent import Agent

    api_key = config.api_key.get_secret_value() if config.api_key is not None else None
    options = agent_options(config)
    agent = Agent(
        config.model, api_key=api_key, sandbox=sandbox, http_client=http_client, **options
    )
    if config.system_message is not None or config.prompt_suffix:
        prompt = agent.prompt
        update: dict[str, Any] = {"user": prompt.user + _literal(config.prompt_suffix)}
        if config.system_message is not None:
            update["system"] = _literal(config.system_message) or None
        options["prompt"] = prompt.model_copy(update=update)
        agent = Agent(
            config.model, api_key=api_key, sandbox=sandbox, http_client=http_client, **options
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
        if self.config.keep_conversation:
            record["messages"] = result.messages
            if result.prompt is not None:
                record["prompt"] = result.prompt
        return SampleOutput(record, tokens=result.usage.total_tokens, requests=len(result.turns))


async def generate(
    input_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    config: GenerateConfig,
    *,
    progress: Progress | None = None,
    sandbox: Sandbox | None = None,
    http_client: Any = None,
) -> BatchSummary:
    """``tir-agent generate`` as a function: every row of ``input_path`` (times every seed)."""
    source, target = Path(input_path), Path(output)
    agent = build_agent(
        config, sandbox=sandbox or _configured_sandbox(config), http_client=http_client
    )
    try:
        solver = AgentSolver(config, agent)
        scan = scan_input(source, solver.validate, config.max_samples)
        return await run_batch(
            source,
            target,
            solver,
            scan=scan,
            seeds=config.seeds(),
            concurrency=config.max_concurrent_requests,
            max_samples=config.max_samples,
            resume=config.skip_filled,
            retry_errors=config.retry_errors,
            requests_per_minute=config.requests_per_minute,
            tokens_per_minute=config.tokens_per_minute,
            progress=progress,
        )
    finally:
        await agent.aclose()


def _configured_sandbox(config: GenerateConfig) -> Sandbox | None:
    """A sandbox with the configured options, or ``None`` for the agent's default one."""
    if config.sandbox == SandboxConfig.model_validate({}):
        return None
    from tir_agent.sandbox.local import LocalSandbox  # type: ignore[import-not-found,unused-ignore]

    return cast(Sandbox, LocalSandbox(config.sandbox))
