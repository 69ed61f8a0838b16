"""``tir-agent demo`` (README's main job) and ``tir-agent doctor`` as wired into the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.batch.server import HTTPModel, ReactiveServer
from tir_agent.cli import demo_settings, main
from tir_agent.data import problems_path


def test_demo_uses_openai_with_a_key_and_the_local_model_without() -> None:
    assert demo_settings(None, "sk-test") == ["model=gpt-4o-mini"]
    local = demo_settings(None, None)
    assert local[0] == "model=local"
    assert "format=tags" in local and "api=completions" in local
    # one sample in flight: the single-worker server's prompt cache is reused turn after turn
    assert "max_concurrent_requests=1" in local
    assert demo_settings("my-model", None) == ["model=my-model"]


@pytest.mark.slow
def test_demo_solves_and_grades_the_bundled_problems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With a key and OPENAI_BASE_URL (here: a scripted server on loopback) the demo runs
    gpt-4o-mini over the bundled set, writes the graded file and prints the metrics."""
    with HTTPModel(ReactiveServer(direct=True)) as model:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", model.base_url)
        status = main(["demo", "--output-dir", str(tmp_path), "--max-samples", "3"])
        requests = model.scripted.requests
    assert status == 0
    rows = [json.loads(x) for x in (tmp_path / "demo.jsonl").read_text().splitlines()]
    bundled = [json.loads(x) for x in problems_path().read_text().splitlines()][:3]
    assert [r["problem"] for r in rows] == [b["problem"] for b in bundled]
    assert all("symbolic_correct" in r and "generation" in r for r in rows)
    assert {r["model"] for r in requests} == {"gpt-4o-mini"}
    out = capsys.readouterr().out
    assert "pass@1" in out and "no_answer" in out
    assert "graded results" in out and bundled[0]["id"] in out
    assert out.rstrip().endswith(f"{sum(r['symbolic_correct'] for r in rows)}/3 correct")


def test_doctor_is_a_subcommand_and_fails_on_a_dead_endpoint(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = main(["doctor", "--base-url", "http://127.0.0.1:9/v1", "--model", "x", "--no-solve"])
    assert status == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "Endpoint" in out
