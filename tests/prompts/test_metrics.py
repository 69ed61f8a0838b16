"""Metrics on a hand-computed example: 3 problems × 4 seeds (values worked out in comments)."""

from __future__ import annotations

import itertools
import math

import pytest
from rich.console import Console

from tir_agent.errors import ConfigError
from tir_agent.grading import grade_records
from tir_agent.metrics import (
    EvaluationMetrics,
    compute_metrics,
    default_ks,
    majority_score,
    pass_at_k,
)


def sample(answer: str | None, correct: bool, **stats: int) -> dict[str, object]:
    return {"predicted_answer": answer, "symbolic_correct": correct, **stats}


# correct per seed:  P1 T T F F (c=2)   P2 T F F T (c=2)   P3 F F F T (c=1)
PROBLEMS = [
    [sample("5", True), sample("5", True), sample("3", False), sample(None, False)],
    [sample("2", True), sample("7", False), sample("7", False), sample("2", True)],
    [sample(None, False), sample(None, False), sample("4", False), sample("1/2", True)],
]


def test_pass_at_k_estimator() -> None:
    assert pass_at_k(4, 2, 1) == pytest.approx(0.5)  # 1 - C(2,1)/C(4,1)
    assert pass_at_k(4, 2, 2) == pytest.approx(5 / 6)  # 1 - C(2,2)/C(4,2)
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2)
    assert pass_at_k(4, 1, 4) == 1.0
    assert pass_at_k(4, 0, 4) == 0.0
    with pytest.raises(ValueError, match="pass@k needs"):
        pass_at_k(4, 5, 1)


@pytest.mark.parametrize(("n", "c"), [(5, 2), (6, 1), (6, 3), (7, 0)])
def test_pass_at_k_equals_the_fraction_of_k_subsets_with_a_correct_sample(n: int, c: int) -> None:
    flags = [True] * c + [False] * (n - c)
    for k in range(1, n + 1):
        subsets = list(itertools.combinations(flags, k))
        expected = sum(any(s) for s in subsets) / len(subsets)
        assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_metrics_by_hand() -> None:
    metrics = compute_metrics(PROBLEMS)
    assert (metrics.num_problems, metrics.samples_per_problem, metrics.num_samples) == (3, 4, 12)
    # pass@1 = (0.5 + 0.5 + 0.25) / 3; pass@2 = (5/6 + 5/6 + 1/2) / 3 = 13/18; pass@4 = 1
    assert metrics.pass_at_k == pytest.approx({1: 1.25 / 3, 2: 13 / 18, 4: 1.0})
    # per-seed accuracy: 2/3, 1/3, 0, 2/3
    assert metrics.pass_at_1_avg[1].mean == pytest.approx(2 / 3)
    assert metrics.pass_at_1_avg[1].std == 0.0
    assert metrics.pass_at_1_avg[2].mean == pytest.approx(0.5)
    assert metrics.pass_at_1_avg[2].std == pytest.approx(math.sqrt(2) / 6)
    assert metrics.pass_at_1_avg[4].mean == pytest.approx(5 / 12)
    assert metrics.pass_at_1_avg[4].std == pytest.approx(math.sqrt(44 / 144 / 3))
    assert metrics.pass_at_1_avg[4].std_err == pytest.approx(math.sqrt(44 / 144 / 3) / 2)
    # majority@1: 1, 1, 0 (no answer); @2: 1, tie 2/7 -> 0.5, 0; @4: 1, 0.5, tie 4 vs 1/2 -> 0.5
    assert metrics.majority_at_k == pytest.approx({1: 2 / 3, 2: 0.5, 4: 2 / 3})
    assert metrics.no_answer == pytest.approx(3 / 12)
    assert metrics.mean_generated_tokens is None and metrics.num_errors == 0


def test_majority_groups_normalized_answers_and_ignores_empty_ones() -> None:
    samples = [
        sample("$10$", True),
        sample("10.", True),
        sample("11", False),
        sample("", False),
        sample("", False),
        sample("", False),
    ]
    assert majority_score(samples) == 1.0
    assert majority_score([sample(None, False), sample("", False)]) == 0.0
    assert compute_metrics([samples]).no_answer == pytest.approx(3 / 6)


def test_statistics_per_sample() -> None:
    problems = [
        [
            sample(
                "1", True, num_generated_tokens=100, code_rounds_executed=1, num_code_timeouts=0
            ),
            sample(
                "1", True, num_generated_tokens=300, code_rounds_executed=3, num_code_timeouts=1
            ),
        ],
        [
            {**sample(None, False), "error": "model failed", "num_generated_tokens": 0},
            sample("2", False, num_generated_tokens=200, code_rounds_executed=2),
        ],
    ]
    metrics = compute_metrics(problems)
    assert metrics.mean_generated_tokens == pytest.approx(150)  # (100+300+0+200)/4
    assert metrics.mean_code_executions == pytest.approx(2)  # (1+3+2)/3: only where present
    assert metrics.mean_code_timeouts == pytest.approx(0.5)  # (0+1)/2
    assert metrics.num_errors == 1


def test_default_ks() -> None:
    assert default_ks(1) == [1]
    assert default_ks(4) == [1, 2, 4]
    assert default_ks(6) == [1, 2, 4, 6]
    assert default_ks(16) == [1, 2, 4, 8, 16]


def test_uneven_samples_and_explicit_ks() -> None:
    problems = [PROBLEMS[0], PROBLEMS[1][:2]]
    metrics = compute_metrics(problems, ks=[2, 1])
    assert metrics.samples_per_problem == 2
    assert sorted(metrics.pass_at_k) == [1, 2]
    # pass@2: P1 n=4 c=2 -> 5/6; P2 n=2 c=1 -> 1
    assert metrics.pass_at_k[2] == pytest.approx((5 / 6 + 1) / 2)
    with pytest.raises(ConfigError, match="k must be between 1 and the samples per problem"):
        compute_metrics(problems, ks=[4])
    with pytest.raises(ConfigError, match="no problems"):
        compute_metrics([])
    with pytest.raises(ConfigError, match="problem 1 has no samples"):
        compute_metrics([PROBLEMS[0], []])
    with pytest.raises(ConfigError, match="problem 0, sample 1 has no symbolic_correct"):
        compute_metrics([[sample("1", True), {"predicted_answer": "1"}]])


def test_table_and_json() -> None:
    metrics = compute_metrics(PROBLEMS)
    console = Console(record=True, width=100)
    console.print(metrics)
    text = console.export_text()
    assert "pass@1[avg-of-4]" in text and "41.67%" in text and "31.91" in text
    assert "majority@2" in text and "50.00%" in text
    assert "no_answer" in text and "25.00%" in text
    assert [name for name, _, _ in metrics.rows()][:3] == [
        "pass@1[avg-of-1]",
        "majority@1",
        "pass@1",
    ]
    assert EvaluationMetrics.model_validate_json(metrics.to_json()) == metrics


def test_grade_records_then_metrics() -> None:
    records = [
        {"id": 1, "expected_answer": "0.5", "generation": "so \\boxed{\\frac{1}{2}}."},
        {"id": 1, "expected_answer": "0.5", "generation": "no answer here"},
        {"id": 2, "expected_answer": "12", "generation": "\\boxed{12} then \\boxed{13}"},
        {"id": 2, "expected_answer": "12", "error": "model call failed"},
    ]
    graded = grade_records(records, workers=0)
    assert [(r["predicted_answer"], r["symbolic_correct"]) for r in graded] == [
        ("\\frac{1}{2}", True),
        (None, False),
        ("13", False),
        (None, False),
    ]
    assert graded[0]["id"] == 1 and "predicted_answer" not in records[0]
    metrics = compute_metrics([graded[:2], graded[2:]])
    assert metrics.pass_at_k[2] == pytest.approx(0.5)
    assert metrics.no_answer == pytest.approx(0.5)
    with pytest.raises(ConfigError, match="record 0 has no 'answer'"):
        grade_records(records, expected_key="answer")
