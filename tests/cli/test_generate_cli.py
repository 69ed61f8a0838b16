"""``tir-agent generate`` in-process (``main(argv)``) against a scripted model on a loopback port.

These runs use ``code_execution=false`` with a server that answers directly, so they need no
sandbox; code execution through ``generate`` is covered by tests/batch/test_generate.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.batch.server import HTTPModel, ReactiveServer, problems
from tir_agent.cli import main


@pytest.fixture
def model() -> Iterator[HTTPModel]:
    with HTTPModel(ReactiveServer(direct=True)) as server:
        yield server


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def base_args(model: HTTPModel, tmp_path: Path, n: int = 4) -> list[str]:
    inp = write(tmp_path / "in.jsonl", problems(n))
    return [
        "generate", "--input", str(inp), "--output", str(tmp_path / "out.jsonl"),
        "--model", "scripted", "--base-url", model.base_url, "++code_execution=false",
        "++prompt_config=generic/math", "++max_retries=0",
    ]  # fmt: skip


def test_generate_writes_output_and_plain_progress(
    model: HTTPModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(base_args(model, tmp_path)) == 0
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["predicted_answer"] for r in rows] == ["0", "3", "6", "9"]
    err = capsys.readouterr().err
    assert "generate: 4 samples" in err  # not a terminal: plain lines
    assert "4/4 samples" in err and "0 errors" in err
    assert "4 samples generated, 0 kept" in err
    assert main(base_args(model, tmp_path)) == 0  # a rerun keeps everything
    assert "0 samples generated, 4 kept" in capsys.readouterr().err
    assert sum(model.scripted.per_problem.values()) == 4


def test_seed_document_arguments_are_accepted(model: HTTPModel, tmp_path: Path) -> None:
    args = [
        *base_args(model, tmp_path, 2),
        "++inference.tokens_to_generate=16384",
        "++server.code_execution.max_code_executions=null",
        "++server.code_execution.add_remaining_code_executions=true",
        "++server.code_execution.code_execution_timeout=15.0",
        "++server.code_execution.max_code_output_characters=2000",
        "++total_code_executions_in_prompt=[1, 8]",
        "++override_max_code_executions=true",
        "++num_random_seeds=2", "++server_type=openai", "++with_sandbox=true",
    ]  # fmt: skip
    assert main(args) == 0
    assert (tmp_path / "out-rs0.jsonl").exists() and (tmp_path / "out-rs1.jsonl").exists()
    first = model.scripted.requests[0]
    assert first["max_tokens"] == 16384 and first["temperature"] == 0.7


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["++server.code_execution.max_code_execution=5"],
         "Did you mean: server.code_execution.max_code_executions"),
        (["++prompt_config=no/such"], "Unknown prompt 'no/such'"),
        (["--format", "tags", "--tags", "nosuch"], "Unknown tag preset 'nosuch'"),
        (["++num_random_seeds=many"], "num_random_seeds"),
    ],
)  # fmt: skip
def test_invalid_options_exit_2_without_output(
    model: HTTPModel, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    extra: list[str], message: str,
) -> None:  # fmt: skip
    assert main([*base_args(model, tmp_path), *extra]) == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]
    assert model.scripted.requests == []


def test_malformed_line_exits_2_naming_the_line(
    model: HTTPModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = base_args(model, tmp_path)
    with (tmp_path / "in.jsonl").open("a") as f:
        f.write('{"problem": "What is 1 + 1?"\n')
    assert main(args) == 2
    assert "in.jsonl:5: not valid JSON" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_row_missing_template_key_exits_2(
    model: HTTPModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = base_args(model, tmp_path)
    with (tmp_path / "in.jsonl").open("a") as f:
        f.write('{"question": "What is 1 + 1?"}\n')
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "in.jsonl:5: the row lacks problem, which prompt generic/math needs" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_dry_run_prints_prompt_and_request_and_sends_nothing(
    model: HTTPModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*base_args(model, tmp_path), "--dry-run", "++inference.temperature=0.3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# 4 rows x 1 seeds; first row's prompt:\n--- user\n")
    assert "What is 0 + 0?" in out
    assert f"# request: POST {model.base_url}/chat/completions" in out
    request = json.loads(out[out.index("\n{", out.index("# request")) :])
    assert request["model"] == "scripted" and request["temperature"] == 0.3
    assert "tools" in request
    assert model.scripted.requests == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_list_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--list-options"]) == 0
    out = capsys.readouterr().out
    assert "server.code_execution.max_code_executions = 8\n    Executions allowed per sample" in out
    assert "num_random_seeds = null\n" in out and "sandbox.memory_limit = " in out


def test_failed_samples_are_reported_and_retried(
    model: HTTPModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = base_args(model, tmp_path, 2)
    with (tmp_path / "in.jsonl").open("a") as f:
        f.write('{"problem": "FAIL", "expected_answer": "1"}\n')
    assert main(args) == 0
    assert "1 samples failed" in capsys.readouterr().err
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert "error" in rows[2]
    before = len(model.scripted.requests)
    assert main([*args, "--retry-errors"]) == 0
    assert len(model.scripted.requests) == before + 1  # only the failed sample is redone


def test_config_file_then_flags_then_overrides(
    model: HTTPModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(
        "stages:\n  generate_solutions:\n"
        "    inline_args: >-\n      ++inference.temperature=0.1 ++inference.top_p=0.5\n"
        "    stage_kwargs:\n      model: from-file\n      num_random_seeds: 2\n"
    )
    args = [*base_args(model, tmp_path, 1), "--config", str(config), "--dry-run"]
    args[args.index("--model") + 1] = "from-flag"
    assert main([*args, "++inference.top_p=0.9"]) == 0
    out = capsys.readouterr().out
    request = json.loads(out[out.index("\n{", out.index("# request")) :])
    assert request["model"] == "from-flag"  # a flag beats the file
    assert request["temperature"] == 0.1  # the file beats the seed-run default 0.7
    assert request["top_p"] == 0.9  # an override beats the file
    assert request["seed"] == 0 and out.startswith("# 1 rows x 2 seeds")


def test_solve_problem_with_equals_sign(capsys: pytest.CaptureFixture[str]) -> None:
    with HTTPModel(ReactiveServer(direct=True)) as server:
        argv = ["solve", "Let x = 3. What is 1 + 2?", "--model", "m", "--base-url",
                server.base_url, "++code_execution=false"]  # fmt: skip
        assert main(argv) == 0
        sent = server.scripted.requests[0]["messages"][-1]["content"]
    assert "Let x = 3. What is 1 + 2?" in sent
    assert "answer: 3" in capsys.readouterr().out


def test_generate_then_evaluate(
    model: HTTPModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*base_args(model, tmp_path), "++num_random_seeds=2", "--evaluate"]) == 0
    out = capsys.readouterr().out
    assert "pass@1[avg-of-2]" in out and "100.00%" in out
    graded = [json.loads(line) for line in (tmp_path / "out-rs1.jsonl").read_text().splitlines()]
    assert all(r["symbolic_correct"] for r in graded)


def test_max_cost_stops_says_so_and_a_higher_cap_resumes(
    model: HTTPModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text("models:\n  scripted: {input: 1000, output: 4000}\n")  # USD per 1M tokens
    args = [*base_args(model, tmp_path, 6), f"++prices={prices}", "--concurrency", "1"]
    assert main([*args, "++max_cost=0.000001"]) == 0
    err = capsys.readouterr().err
    assert "stopped at max_cost=1e-06" in err and "5 samples not started" in err
    assert "rerun with a higher ++max_cost to resume" in err and "spent" in err
    assert not (tmp_path / "out.jsonl").exists()
    assert main([*args, "++max_cost=50"]) == 0
    err = capsys.readouterr().err
    assert "5 samples generated, 1 kept" in err
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(r["cost"] > 0 and r["usage"]["input_tokens"] > 0 for r in rows)
