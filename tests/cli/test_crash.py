"""``tir-agent generate`` killed with SIGKILL at random moments, then rerun to the end.

A real subprocess talks to a scripted model on a loopback port that counts requests per problem.
After each kill the journal says which samples had finished; the final output must hold every
sample exactly once, in input order, and no finished sample may be requested again.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.batch.server import HTTPModel, ReactiveServer, problems
from tir_agent.batch import journal_path

ROOT = Path(__file__).resolve().parents[2]
N = 120


def finished(journal: Path) -> set[int]:
    """Indices of complete journal lines (a torn last line does not count)."""
    if not journal.exists():
        return set()
    done = set()
    for raw in journal.read_bytes().splitlines(keepends=True)[1:]:
        if raw.endswith(b"\n"):
            try:
                json.loads(raw.split(b"\t", 1)[1])
            except ValueError:
                continue
            done.add(int(raw.split(b"\t", 1)[0]))
    return done


@pytest.mark.slow
@pytest.mark.parametrize("code", [False, True], ids=["no-code", "with-sandbox"])
def test_kill_9_at_random_moments_then_rerun(tmp_path: Path, code: bool) -> None:
    n = N  # with code: two model calls and one real execution per sample
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in problems(n)))
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rng = random.Random(1234)
    with HTTPModel(ReactiveServer(direct=not code, delay=0.03)) as model:
        argv = [
            sys.executable, "-m", "tir_agent.cli", "generate", "--input", str(inp),
            "--output", str(out), "--model", "scripted", "--base-url", model.base_url,
            f"++code_execution={str(code).lower()}", "++prompt_config=generic/math",
            "--concurrency", "6",
            "--no-progress",
        ]  # fmt: skip
        counts = model.scripted.per_problem
        snapshots: list[tuple[set[int], Counter[str]]] = []
        mid_run_kills = 0
        for _ in range(8):
            before = len(finished(journal_path(out)))
            proc = subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL)
            # wait until this run has finished a sample of its own (its start, the sandbox's
            # included, takes seconds on a loaded machine), then kill it at a random moment
            start = time.monotonic()
            while time.monotonic() - start < 60 and len(finished(journal_path(out))) <= before:
                if proc.poll() is not None:
                    break
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.4) if code else rng.uniform(0.0, 0.1))
            proc.kill()
            proc.wait()
            done = finished(journal_path(out))
            snapshots.append((done, Counter(counts)))
            mid_run_kills += 0 < len(done) < n
            if mid_run_kills >= 4 or out.exists():
                break
        assert mid_run_kills >= 2, "the kills did not land mid-run; adjust the timing"
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr

    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == list(range(n))  # each exactly once, in input order
    assert all(r["predicted_answer"] == r["expected_answer"] for r in rows)
    assert all(r["code_rounds_executed"] == int(code) for r in rows)
    assert not journal_path(out).exists()
    names = {r["id"]: r["problem"] for r in rows}
    for done, seen in snapshots:
        for index in done:  # finished before a kill: never requested again
            assert counts[names[index]] == seen[names[index]], index
    assert all(counts[p] >= 1 for p in names.values())
