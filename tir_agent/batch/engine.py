"""The batch engine: every (row, seed) sample through a solver, concurrently, resumably.

The engine knows nothing about models: it feeds :class:`Job` values (one input row and one seed)
to a *solver*, an async function returning the fields to add to the row. Finished samples go to
the :class:`~tir_agent.batch.journal.Journal` of their seed's output file as they end.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from tir_agent._log import get_logger
from tir_agent.batch.chunks import Chunk
from tir_agent.batch.journal import InputScan, Journal, output_path, read_rows
from tir_agent.batch.progress import Progress, _NoProgress
from tir_agent.errors import AuthenticationError, ModelError, SandboxError
from tir_agent.ratelimit import RateLimiter

__all__ = ["BatchSummary", "Job", "SampleOutput", "Solver", "run_batch"]

log = get_logger(__name__)


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
    """Samples in the output with an ``error`` field (from this run or an earlier one)."""
    spent: float = 0.0
    """USD of the samples' ``cost`` over this run and earlier ones (money spent)."""
    not_started: int = 0
    """Samples not started because ``max_cost`` was reached; the journals stay for a rerun."""


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
    max_cost: float | None = None,
    chunk: Chunk | None = None,
) -> BatchSummary:
    """Generate every (row, seed) sample of ``input_path`` into ``output`` (see module docs).

    ``scan`` comes from :func:`scan_input` over the same file (the rows were validated there).
    With ``max_cost`` (USD), no sample starts once the ``cost`` of the samples in the journals
    (this run's and earlier runs') reaches it; those in flight finish, the journals stay, and a
    rerun with a higher cap resumes. With ``chunk``, only that chunk's rows run, into its own
    files (:mod:`.chunks`).
    """
    progress = progress if progress is not None else _NoProgress()
    select = None if chunk is None else chunk.rows

    def target(seed: int | None) -> Path:
        path = output_path(output, seed)
        return path if chunk is None else chunk.path(path)

    journals = {seed: Journal(target(seed), scan) for seed in seeds}
    for journal in journals.values():
        journal.load(
            resume=resume,
            rows=lambda: (row for _, _, row in read_rows(input_path, max_samples, select)),
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
    spent = sum(journal.spent for journal in journals.values())
    not_started = 0
    queue: asyncio.Queue[Job | None] = asyncio.Queue(maxsize=2 * concurrency)

    async def produce(workers: int) -> None:
        for index, _, row in read_rows(input_path, max_samples, select):
            for seed, journal in journals.items():
                if journal.pending(index, retry_errors=retry_errors):
                    await queue.put(Job(index=index, seed=seed, row=row))
        for _ in range(workers):
            await queue.put(None)

    async def work() -> None:
        nonlocal errors, spent, not_started
        while (job := await queue.get()) is not None:
            if max_cost is not None and spent >= max_cost:
                not_started += 1  # drained, not run: still pending for a rerun
                continue
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
                out = SampleOutput({"generation": None, "error": f"{type(e).__name__}: {e}"})
            if rpm is not None and out.requests > 1:
                rpm.charge(out.requests - 1)
            if tpm is not None:
                tpm.charge(out.tokens)
            record = {**job.row, **out.fields}
            if isinstance(cost := record.get("cost"), int | float):
                spent += cost
            journals[job.seed].append(job.index, record)
            if record.get("error") is not None:
                errors += 1
                log.warning("sample.failed", index=job.index, seed=job.seed, error=record["error"])
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
    failed = sum(len(journal.errors) for journal in journals.values())
    if not_started:
        log.warning("batch.max_cost", spent=round(spent, 6), max_cost=max_cost, left=not_started)
    else:
        for journal in journals.values():
            journal.finalize()
    log.info("batch.done", generated=todo - not_started, errors=errors, failed=failed)
    return BatchSummary(
        outputs=[j.output for j in journals.values()],
        total=total,
        skipped=total - todo,
        generated=todo - not_started,
        errors=failed,
        spent=spent,
        not_started=not_started,
    )
