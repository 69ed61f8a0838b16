"""The batch engine with a small real async solver: order, resume, torn journals, errors, seeds."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import pytest

from tir_agent.batch import (
    Job,
    SampleOutput,
    journal_path,
    output_path,
    run_batch,
    scan_input,
)
from tir_agent.errors import ConfigError, ModelError


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


class Stop(Exception):
    """Simulates the process being stopped mid-run."""


class Solver:
    """Squares ``x`` after a random short delay; fails for rows in ``fail``; counts calls."""

    def __init__(self, fail: set[int] = frozenset(), stop_after: int | None = None) -> None:  # type: ignore[assignment]
        self.calls: list[tuple[int, int | None]] = []
        self.fail = set(fail)
        self.stop_after = stop_after
        self.rng = random.Random(0)

    async def __call__(self, job: Job) -> SampleOutput:
        self.calls.append((job.index, job.seed))
        if self.stop_after is not None and len(self.calls) > self.stop_after:
            raise Stop
        await asyncio.sleep(self.rng.random() * 0.01)
        if job.index in self.fail:
            raise ModelError("scripted: 400 from the model endpoint")
        return SampleOutput(
            {
                "generation": f"\\boxed{{{job.row['x'] ** 2}}}",
                "seed": job.seed,
                "code_rounds_executed": 1,
            },
            tokens=10,
        )


@pytest.fixture
def rows(tmp_path: Path) -> Path:
    return write_rows(tmp_path / "in.jsonl", [{"x": i} for i in range(40)])


async def run(inp: Path, out: Path, solver: Solver, **kw: Any) -> Any:
    kw.setdefault("seeds", [None])
    scan = scan_input(inp)
    return await run_batch(inp, out, solver, scan=scan, **kw)


async def test_output_in_input_order_with_every_field(rows: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    summary = await run(rows, out, Solver(), concurrency=16)
    data = read(out)
    assert [r["x"] for r in data] == list(range(40))
    assert all(r["generation"] == f"\\boxed{{{r['x'] ** 2}}}" for r in data)
    assert summary.generated == 40 and summary.skipped == 0
    assert not journal_path(out).exists()


async def test_rerun_of_a_finished_output_does_nothing(rows: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    await run(rows, out, Solver())
    before = out.read_bytes()
    again = Solver()
    summary = await run(rows, out, again)
    assert again.calls == [] and summary.skipped == 40
    assert out.read_bytes() == before


async def test_interrupted_run_resumes_only_unfinished(rows: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    first = Solver(stop_after=15)
    with pytest.raises(Stop):
        await run(rows, out, first, concurrency=4)
    assert not out.exists()  # no half-written output
    finished = {int(line.split("\t")[0]) for line in journal_path(out).read_text().splitlines()[1:]}
    assert 0 < len(finished) < 40
    second = Solver()
    await run(rows, out, second, concurrency=4)
    assert {i for i, _ in second.calls} == set(range(40)) - finished
    assert [r["x"] for r in read(out)] == list(range(40))


async def test_torn_last_line_is_dropped_and_redone(rows: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with pytest.raises(Stop):
        await run(rows, out, Solver(stop_after=10), concurrency=1)
    journal = journal_path(out)
    lines = journal.read_text().splitlines(keepends=True)
    last = int(lines[-1].split("\t")[0])
    journal.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # crash mid-write
    second = Solver()
    await run(rows, out, second, concurrency=1)
    assert last in {i for i, _ in second.calls}
    data = read(out)
    assert [r["x"] for r in data] == list(range(40))


async def test_failed_samples_get_error_field_and_retry(rows: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    summary = await run(rows, out, Solver(fail={3, 7}))
    data = read(out)
    assert summary.errors == 2
    assert [i for i, r in enumerate(data) if r.get("error")] == [3, 7]
    assert data[3]["error"].startswith("ModelError: scripted") and data[3]["generation"] is None
    plain = Solver()
    summary = await run(rows, out, plain)
    assert plain.calls == [] and summary.errors == 2  # errors are kept unless retried
    retry = Solver()
    summary = await run(rows, out, retry, retry_errors=True)
    assert sorted(i for i, _ in retry.calls) == [3, 7] and summary.errors == 0
    data = read(out)
    assert not any("error" in r for r in data) and [r["x"] for r in data] == list(range(40))


async def test_seeds_write_one_file_each(rows: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    solver = Solver()
    summary = await run(rows, out, solver, seeds=[0, 1, 2])
    assert summary.outputs == [output_path(out, s) for s in (0, 1, 2)]
    assert output_path(out, 2).name == "out-rs2.jsonl"
    for seed in (0, 1, 2):
        data = read(tmp_path / f"out-rs{seed}.jsonl")
        assert [r["seed"] for r in data] == [seed] * 40
        assert [r["x"] for r in data] == list(range(40))
    assert len(solver.calls) == 120 and not out.exists()


async def test_journal_of_another_input_is_refused(rows: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with pytest.raises(Stop):
        await run(rows, out, Solver(stop_after=5))
    other = write_rows(tmp_path / "other.jsonl", [{"x": i + 1} for i in range(40)])
    with pytest.raises(ConfigError, match="different input"):
        await run(other, out, Solver())
    await run(other, out, Solver(), resume=False)  # skip_filled=false starts over
    assert [r["x"] for r in read(out)] == list(range(1, 41))


def test_malformed_line_is_reported_with_its_number(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"x": 1}\n\n{"x": 2}\n{"x": 3,}\n')
    with pytest.raises(ConfigError, match=r"bad.jsonl:4: not valid JSON"):
        scan_input(path)
    path.write_text('{"x": 1}\n[1, 2]\n')
    with pytest.raises(ConfigError, match=r"bad.jsonl:2: expected a JSON object"):
        scan_input(path)


def test_validation_failure_names_the_line(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "in.jsonl", [{"problem": "a"}, {"question": "b"}])

    def validate(row: dict[str, Any]) -> None:
        if "problem" not in row:
            raise ConfigError("the row lacks problem")

    with pytest.raises(ConfigError, match=r"in.jsonl:2: the row lacks problem"):
        scan_input(path, validate)


async def test_max_samples_limits_rows(rows: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    scan = scan_input(rows, max_samples=5)
    await run_batch(rows, out, Solver(), scan=scan, seeds=[None], max_samples=5)
    assert [r["x"] for r in read(out)] == [0, 1, 2, 3, 4]


async def test_existing_complete_output_is_adopted(rows: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    await run(rows, out, Solver(fail={5}))
    retry = Solver()
    await run(rows, out, retry, retry_errors=True)  # no journal: the output is read back
    assert retry.calls == [(5, None)]
    assert "error" not in read(out)[5]


async def test_output_of_another_input_is_not_adopted(rows: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    await run(rows, out, Solver())
    other = write_rows(tmp_path / "other.jsonl", [{"x": i + 100} for i in range(40)])
    with pytest.raises(ConfigError, match=r"out.jsonl:1 does not hold input row 1"):
        await run(other, out, Solver())
    assert not journal_path(out).exists()


async def test_temporary_file_of_a_crashed_final_write_is_removed(
    rows: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    stale = tmp_path / ".out.jsonl.tmp-99999"
    stale.write_text('{"x": 0}\n')  # what kill -9 during the final write leaves behind
    await run(rows, out, Solver())
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl"]
