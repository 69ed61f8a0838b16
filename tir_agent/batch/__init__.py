"""Batch generation over JSONL: concurrency, rate limits, crash-safe resume, progress.

The engine knows nothing about models: it feeds :class:`Job` values (one input row and one seed)
to a *solver*, an async function returning the fields to add to the row (``generation`` and the
statistics of REFERENCE.md §7). :class:`AgentSolver` is the solver built on an ``Agent``, and
:func:`generate` the whole ``tir-agent generate`` run.

Modules: ``engine`` (jobs, concurrency, rate limits), ``journal`` (resume and the ordered output),
``progress`` (bar and plain lines), ``solver`` (the agent as a solver, ``generate``), ``chunks``
(NeMo-Skills' ``num_chunks``/``chunk_id`` sharding and the merge), ``cluster`` (``--ray``: the
samples on Ray actors, imported only then).

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

from tir_agent.batch.engine import BatchSummary, Job, SampleOutput, Solver, run_batch
from tir_agent.batch.journal import (
    InputScan,
    Journal,
    journal_path,
    output_path,
    read_rows,
    scan_input,
)
from tir_agent.batch.progress import PlainProgress, Progress, RichProgress, make_progress
from tir_agent.batch.solver import AgentSolver, agent_options, build_agent, generate, open_agent

__all__ = [
    "AgentSolver",
    "BatchSummary",
    "InputScan",
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
    "open_agent",
    "output_path",
    "read_rows",
    "run_batch",
    "scan_input",
]
