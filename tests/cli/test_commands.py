"""``tir-agent solve``, ``evaluate`` and ``export`` in-process."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from tests.batch.server import HTTPModel, ReactiveServer
from tir_agent.budget import REMAINING_HINT
from tir_agent.cli import main, print_solution
from tir_agent.turn import CodeCall, Execution, SolveResult, Turn, Usage


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_solve_prints_the_answer(capsys: pytest.CaptureFixture[str]) -> None:
    with HTTPModel(ReactiveServer(direct=True)) as model:
        argv = ["solve", "What is 2 + 3?", "--model", "scripted", "--base-url", model.base_url,
                "++code_execution=false", "++max_retries=0"]  # fmt: skip
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert "So the answer is \\boxed{5}." in out and "answer: 5" in out
        assert "status finished · 0 executions · 1 model calls" in out
        assert main([*argv, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["answer"] == "5"


def test_solution_printout_shows_code_and_outputs() -> None:
    generation = (
        "Compute.\n<tool_call>\nprint(385)\n</tool_call>\n```output\n385\n```\n\\boxed{385}"
    )
    result = SolveResult(
        answer="385", generation=generation, messages=[],
        turns=[
            Turn(index=0, text="Compute.\n<tool_call>\nprint(385)\n</tool_call>",
                 calls=(CodeCall(code="print(385)\n"),)),
            Turn(index=1, text="\\boxed{385}"),
        ],
        executions=[Execution(code="print(385)\n", status="completed", stdout="385\n", turn=0)],
        usage=Usage(completion_tokens=12), generation_time=0.5, code_execution_time=0.01,
        status="finished", model="m", format="chat-tags", max_code_executions=8,
    )  # fmt: skip
    stream = io.StringIO()
    print_solution(result, "<tool_call>", stream)
    text = stream.getvalue()
    order = [
        "Compute.",
        "─ code ─",
        "print(385)",
        "─ output ─",
        "│ 385 ",
        "\\boxed{385}",
        "answer: 385",
    ]
    positions = [text.index(piece) for piece in order]
    assert positions == sorted(positions)
    assert "<tool_call>" not in text  # the code is shown once, in its panel
    assert "1 executions · 2 model calls · 12 tokens" in text


def seeds(tmp_path: Path) -> list[Path]:
    answers = [["3", "4", "7"], ["4", None, "4"]]  # per seed: problem answers
    expected = ["3", "4", "7"]
    paths = []
    for seed, row in enumerate(answers):
        rows = [
            {"problem": f"p{i}", "expected_answer": expected[i],
             "generation": f"so \\boxed{{{a}}}" if a is not None else "no idea",
             "num_generated_tokens": 10, "code_rounds_executed": 1}
            for i, a in enumerate(row)
        ]  # fmt: skip
        paths.append(write(tmp_path / f"out-rs{seed}.jsonl", rows))
    return paths


def test_evaluate_grades_in_place_and_prints_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = seeds(tmp_path)
    assert main(["evaluate", *map(str, paths), "--json", "--workers", "0"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["num_problems"] == 3 and metrics["samples_per_problem"] == 2
    # seed 0: 3/3 correct; seed 1: p0 wrong (4 vs 3), p1 no answer, p2 wrong (4 vs 7)
    assert metrics["pass_at_1_avg"]["1"]["mean"] == pytest.approx(1.0)
    assert metrics["pass_at_1_avg"]["2"]["mean"] == pytest.approx(0.5)
    assert metrics["pass_at_k"]["2"] == pytest.approx(1.0)
    assert metrics["no_answer"] == pytest.approx(1 / 6)
    graded = read(paths[1])
    assert [r["symbolic_correct"] for r in graded] == [False, False, False]
    assert [r["predicted_answer"] for r in graded] == ["4", None, "4"]


def test_evaluate_table_and_output_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = seeds(tmp_path)
    before = paths[0].read_text()
    assert (
        main(
            ["evaluate", str(paths[0]), "--output-dir", str(tmp_path / "graded"), "--workers", "0"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "pass@1[avg-of-1]" in out and "100.00%" in out and "no_answer" in out
    assert paths[0].read_text() == before
    assert read(tmp_path / "graded" / "out-rs0.jsonl")[0]["symbolic_correct"] is True


def test_evaluate_mismatched_seed_files_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = seeds(tmp_path)
    write(paths[1], read(paths[1])[:2])
    assert main(["evaluate", *map(str, paths), "--workers", "0"]) == 2
    assert "must be seeds of the same input" in capsys.readouterr().err


GOOD = (
    "Let me check.\n<tool_call>\nprint(2)\n</tool_call>\n```output\n2\n```\n"
    + REMAINING_HINT.format(remaining=3)
    + "**Final Answer** \\boxed{2} and more"
)


def export_input(tmp_path: Path) -> Path:
    rows = [
        {"problem": "a", "generation": GOOD, "symbolic_correct": True},
        {"problem": "b", "generation": "No code. **Final Answer** \\boxed{2}"},
        {"problem": "c", "generation": GOOD.replace("**Final Answer** ", "")},
        {
            "problem": "d",
            "generation": GOOD.replace("2\n```", "Traceback (most recent call last):\n```"),
        },
        {"problem": "e", "generation": None, "error": "ModelError: 500"},
    ]
    return write(tmp_path / "gen.jsonl", rows)


def test_export_filters_with_counts_and_converts_tags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "train.jsonl"
    assert main(["export", str(export_input(tmp_path)), "-o", str(out), "--tags", "qwen"]) == 0
    err = capsys.readouterr().err
    assert "kept 2 of 5 solutions" in err
    for line in (
        "dropped      1  no_error",
        "dropped      1  has_code",
        "dropped      1  final_answer",
    ):
        assert line in err
    rows = read(out)
    assert [r["problem"] for r in rows] == ["a", "d"]
    assert rows[0]["generation"].startswith(
        "Let me check.\n```python\nprint(2)\n```\n```output\n2\n```\n"
    )
    assert rows[0]["generation"].endswith("**Final Answer** \\boxed{2}")  # cut after the answer


def test_export_optional_filters_and_openai_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ft.jsonl"
    argv = ["export", str(export_input(tmp_path)), "-o", str(out), "--to", "openai",
            "--enable", "no_traceback"]  # fmt: skip
    assert main(argv) == 0
    assert "dropped      1  no_traceback" in capsys.readouterr().err
    (line,) = read(out)
    assert set(line) == {"messages", "tools"}
    roles = [m["role"] for m in line["messages"]]
    assert roles == ["user", "assistant", "tool", "assistant"]
    assert line["messages"][2]["content"] == "2\n" + REMAINING_HINT.format(remaining=3)
    assert main(["export", str(export_input(tmp_path)), "-o", str(out), "--enable", "nosuch"]) == 2
    assert "Unknown filter 'nosuch'" in capsys.readouterr().err


def test_export_messages_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "msgs.jsonl"
    back = tmp_path / "back.jsonl"
    src = export_input(tmp_path)
    assert main(["export", str(src), "-o", str(out), "--to", "messages", "--no-filters"]) == 0
    rows = read(out)
    assert rows[0]["messages"][1]["tool_calls"][0]["function"]["name"] == "python_exec"
    only_messages = write(tmp_path / "m.jsonl", [{"messages": r["messages"]} for r in rows[:1]])
    assert (
        main(["export", str(only_messages), "-o", str(back), "--from", "messages", "--no-filters"])
        == 0
    )
    assert read(back)[0]["generation"] == GOOD


@pytest.mark.slow  # starts the real sandbox
def test_solve_with_code_prints_code_and_output(capsys: pytest.CaptureFixture[str]) -> None:
    with HTTPModel(ReactiveServer()) as model:
        argv = ["solve", "What is 20 + 22?", "--model", "scripted", "--base-url", model.base_url,
                "++max_retries=0"]  # fmt: skip
        assert main(argv) == 0
    out = capsys.readouterr().out
    assert "print('RESULT=' + str(20 + 22))" in out
    assert "│ RESULT=42" in out
    assert "answer: 42" in out and "status finished · 1 executions · 2 model calls" in out
