"""NeMo-Skills' manual sharding: ``++num_chunks=N ++chunk_id=K``, the automatic merge, ``merge``.

The runs go through ``tir-agent generate`` in-process against the scripted model on a loopback
port (``code_execution=false``: the chunking is the engine's, not the sandbox's business).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.batch.server import HTTPModel, ReactiveServer, problems
from tir_agent.batch.chunks import chunk_path, chunk_rows, merge_chunks
from tir_agent.batch.journal import journal_path
from tir_agent.cli import main


@pytest.fixture
def model() -> Iterator[HTTPModel]:
    with HTTPModel(ReactiveServer(direct=True)) as server:
        yield server


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def args(model: HTTPModel, inp: Path, out: Path, *extra: str) -> list[str]:
    return [
        "generate", "--input", str(inp), "--output", str(out), "--model", "scripted",
        "--base-url", model.base_url, "++code_execution=false", "++prompt_config=generic/math",
        "++max_retries=0", "--no-progress", *extra,
    ]  # fmt: skip


def write_input(tmp_path: Path, n: int) -> Path:
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in problems(n)))
    return inp


def test_chunk_rows_are_nemo_skills_contiguous_slices() -> None:
    # calculate_chunk_indices: the first (rows % N) chunks get one row more
    assert [chunk_rows(10, 3, k) for k in range(3)] == [range(0, 4), range(4, 7), range(7, 10)]
    assert [chunk_rows(2, 4, k) for k in range(4)] == [
        range(0, 1), range(1, 2), range(2, 2), range(2, 2),
    ]  # fmt: skip
    assert chunk_rows(5, 1, 0) == range(0, 5)
    for total, n in [(0, 3), (7, 7), (100, 8), (101, 8)]:
        parts = [chunk_rows(total, n, k) for k in range(n)]
        assert [i for part in parts for i in part] == list(range(total))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert chunk_path(Path("/x/out-rs3.jsonl"), 2) == Path("/x/out-rs3_chunk_2.jsonl")


def test_chunks_run_separately_and_merge_when_the_last_finishes(
    model: HTTPModel, tmp_path: Path
) -> None:
    inp, out = write_input(tmp_path, 7), tmp_path / "out.jsonl"
    for k in (2, 0):
        assert main(args(model, inp, out, "++num_chunks=3", f"++chunk_id={k}")) == 0
        assert not out.exists()
    assert [r["id"] for r in read(tmp_path / "out_chunk_2.jsonl")] == [5, 6]
    assert [r["id"] for r in read(tmp_path / "out_chunk_0.jsonl")] == [0, 1, 2]
    assert main(args(model, inp, out, "++num_chunks=3", "++chunk_id=1")) == 0
    rows = read(out)
    assert [r["id"] for r in rows] == list(range(7))
    assert all(r["predicted_answer"] == r["expected_answer"] for r in rows)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl"]
    assert set(model.scripted.per_problem.values()) == {1}  # every sample exactly once
    # a chunk rerun after the merge does nothing (NeMo-Skills skips when the output exists)
    assert main(args(model, inp, out, "++num_chunks=3", "++chunk_id=1")) == 0
    assert sum(model.scripted.per_problem.values()) == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl"]


def test_seeds_are_chunked_and_merged_per_seed(model: HTTPModel, tmp_path: Path) -> None:
    inp, out = write_input(tmp_path, 5), tmp_path / "out.jsonl"
    seeds = "++num_random_seeds=2"
    assert main(args(model, inp, out, seeds, "++num_chunks=2", "++chunk_id=1")) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["in.jsonl", "out-rs0_chunk_1.jsonl", "out-rs1_chunk_1.jsonl"]
    assert main(args(model, inp, out, seeds, "++num_chunks=2", "++chunk_id=0")) == 0
    for seed in (0, 1):
        assert [r["id"] for r in read(tmp_path / f"out-rs{seed}.jsonl")] == list(range(5))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "in.jsonl", "out-rs0.jsonl", "out-rs1.jsonl",
    ]  # fmt: skip


def test_a_chunk_with_no_rows_still_completes_the_merge(model: HTTPModel, tmp_path: Path) -> None:
    inp, out = write_input(tmp_path, 2), tmp_path / "out.jsonl"
    for k in range(3):
        assert main(args(model, inp, out, "++num_chunks=3", f"++chunk_id={k}")) == 0
    assert [r["id"] for r in read(out)] == [0, 1]


def test_max_samples_applies_within_the_chunk(model: HTTPModel, tmp_path: Path) -> None:
    inp, out = write_input(tmp_path, 9), tmp_path / "out.jsonl"
    assert main(args(model, inp, out, "++num_chunks=3", "++chunk_id=1", "++max_samples=2")) == 0
    assert [r["id"] for r in read(tmp_path / "out_chunk_1.jsonl")] == [3, 4]


def test_an_interrupted_chunk_resumes_from_its_own_journal(
    model: HTTPModel, tmp_path: Path
) -> None:
    inp, out = write_input(tmp_path, 6), tmp_path / "out.jsonl"
    chunk = tmp_path / "out_chunk_0.jsonl"
    first = [*problems(6)[:3]]
    done = {**first[1], "generation": "\\boxed{3}", "predicted_answer": "3"}
    journal = journal_path(chunk)
    assert main(args(model, inp, out, "++num_chunks=2", "++chunk_id=1")) == 0
    # what a crashed run of chunk 0 leaves: its journal with row 1 finished, no chunk file
    from tir_agent.batch.journal import Journal, scan_input

    j = Journal(chunk, scan_input(inp, select=range(0, 3)))
    j.load(resume=False)
    j.append(1, done)
    j.close()
    before = sum(model.scripted.per_problem.values())
    assert main(args(model, inp, out, "++num_chunks=2", "++chunk_id=0")) == 0
    assert sum(model.scripted.per_problem.values()) - before == 2  # rows 0 and 2 only
    rows = read(out)
    assert [r["id"] for r in rows] == list(range(6)) and rows[1]["generation"] == "\\boxed{3}"
    assert not journal.exists()


def test_merge_command(
    model: HTTPModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inp, out = write_input(tmp_path, 4), tmp_path / "out.jsonl"
    for k in (0, 1):
        assert main(args(model, inp, out, "++num_chunks=3", f"++chunk_id={k}")) == 0
    assert main(["merge", str(out), "--num-chunks", "3"]) == 2
    assert "chunks 2 of 3 are not done" in capsys.readouterr().err
    # chunk 2 ran elsewhere (another file system, say) and its file was copied here
    other = tmp_path / "elsewhere"
    other.mkdir()
    assert main(args(model, inp, other / "out.jsonl", "++num_chunks=3", "++chunk_id=2")) == 0
    (other / "out_chunk_2.jsonl").rename(tmp_path / "out_chunk_2.jsonl")
    assert main(["merge", str(out), "--num-chunks", "3"]) == 0
    assert "merged 3 chunks into" in capsys.readouterr().err
    assert [r["id"] for r in read(out)] == [0, 1, 2, 3]
    assert not list(tmp_path.glob("out_chunk_*"))
    assert main(["merge", str(out), "--num-chunks", "3"]) == 0
    assert "merged already" in capsys.readouterr().err


def test_merge_is_idempotent_when_two_jobs_race(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    for k in range(2):
        chunk_path(out, k).write_text(f'{{"k": {k}}}\n')
    assert merge_chunks(out, 2) and merge_chunks(out, 2)  # the second finds it merged
    assert read(out) == [{"k": 0}, {"k": 1}]
    assert not merge_chunks(tmp_path / "other.jsonl", 2)  # nothing there: not merged


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["++chunk_id=1"], "num_chunks and chunk_id go together"),
        (["++num_chunks=2", "++chunk_id=2"], "chunk_id=2 is outside 0..1"),
        (["++num_chunks=0", "++chunk_id=0"], "num_chunks"),
    ],
)
def test_invalid_chunk_options(
    model: HTTPModel,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    inp, out = write_input(tmp_path, 3), tmp_path / "out.jsonl"
    assert main(args(model, inp, out, *extra)) == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]
