"""Answer equivalence: the reference pairs of REFERENCE.md §9, normalization, multiple choice,
and grading from worker threads and worker processes (real math-verify, real processes)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator

import pytest

from tir_agent import grading
from tir_agent.grading import (
    GradingPool,
    choice_letter,
    close_pools,
    grade_many,
    is_equivalent,
    normalize_answer,
)


@pytest.fixture(autouse=True, scope="module")
def _stop_shared_workers() -> Iterator[None]:
    yield
    close_pools()


EQUAL = [
    ("5", "5.0"),
    ("1/2", "0.5"),
    ("\\frac{1}{2}", "0.5"),
    ("918\\frac{1}{2}", "918.5"),
    ("x^2+2x+1", "x^2 + 2*x - (-1)"),
    ("10%", "10"),
    ("\\frac13", "\\dfrac13"),
    ("(r+5)(r+5)", "(r+5)^2"),
    ("\\$10", "10"),
    ("17\\text{ any text}", "17"),
]
DIFFERENT = [
    ("5", "5.001"),
    ("x^2+2x+1", "x^3+2x+1"),
    ("\\sqrt{67},-\\sqrt{85}", "\\sqrt{67}"),
]


@pytest.mark.parametrize(("a", "b"), EQUAL)
def test_reference_pairs_are_equal_both_ways(a: str, b: str) -> None:
    assert is_equivalent(a, b)
    assert is_equivalent(b, a)


@pytest.mark.parametrize(("a", "b"), DIFFERENT)
def test_reference_pairs_differ_both_ways(a: str, b: str) -> None:
    assert not is_equivalent(a, b)
    assert not is_equivalent(b, a)


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("10%", "10"),
        ("10\\%", "10"),
        ("\\$10", "10"),
        ("$\\frac{1}{2}$", "\\frac{1}{2}"),
        ("  42. ", "42"),
        ("\\$10\\%.", "10"),
        ("5.0", "5.0"),
        ("x+1", "x+1"),
    ],
)
def test_normalize_answer(raw: str, normalized: str) -> None:
    assert normalize_answer(raw) == normalized


@pytest.mark.parametrize(
    ("predicted", "expected", "equal"),
    [
        ("C", "C", True),
        ("(C)", "C", True),
        ("\\text{(B)}", "B", True),
        ("\\textbf{J}", "(J)", True),
        ("C", "D", False),
        ("3", "C", False),  # a number is not a letter answer
        ("K", "K", True),  # beyond J: plain string equality still holds
    ],
)
def test_multiple_choice_letters(predicted: str, expected: str, equal: bool) -> None:
    assert is_equivalent(predicted, expected) is equal


def test_choice_letter() -> None:
    assert choice_letter(" (E) ") == "E"
    assert choice_letter("e") is None
    assert choice_letter("AB") is None


@pytest.mark.parametrize(
    ("predicted", "expected"), [(None, "5"), ("5", None), ("", "5"), ("$ $", "5"), ("5", "")]
)
def test_missing_answers_are_never_equal(predicted: str | None, expected: str | None) -> None:
    assert not is_equivalent(predicted, expected)


def test_integers_and_malformed_latex() -> None:
    assert is_equivalent("007", "7")
    assert not is_equivalent("12", "13")
    assert not is_equivalent("\\frac{1}{", "1")


def test_a_callers_alarm_survives_inline_grading() -> None:
    # math-verify's own signal.alarm would otherwise cancel it (pytest-timeout uses one).
    previous = signal.signal(signal.SIGALRM, signal.SIG_IGN)
    try:
        signal.setitimer(signal.ITIMER_REAL, 50.0)
        assert is_equivalent("x^2+2x+1", "(x+1)^2")
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 45.0 < remaining <= 50.0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_grade_many_inline_keeps_order_and_duplicates() -> None:
    pairs = [*EQUAL, *DIFFERENT, *EQUAL[:3], (None, "1")]
    expected = [True] * len(EQUAL) + [False] * len(DIFFERENT) + [True] * 3 + [False]
    assert grade_many(pairs, workers=0) == expected


@pytest.mark.slow
def test_grade_many_with_worker_processes_matches_inline() -> None:
    pairs = [(f"\\frac{{{i}}}{{4}}", f"{i / 4}") for i in range(80)]
    pairs += [(f"{i}/3", f"{i / 3:.1f}") for i in range(1, 41)]  # 0.3 != 1/3: differ
    pairs += [*EQUAL, *DIFFERENT]
    inline = grade_many(pairs, workers=0)
    assert inline[:80] == [True] * 80
    assert inline[80:120].count(True) == 13  # multiples of 3 only: i/3 is an integer
    with GradingPool(2) as pool:
        assert pool.grade(pairs) == inline
        processes = [worker.process for worker in pool._all]
        assert processes and all(p.poll() is None for p in processes)
    assert all(p.poll() is not None for p in processes)  # closed: no worker left behind


@pytest.mark.slow
def test_is_equivalent_from_worker_threads() -> None:
    pairs = [*EQUAL, *DIFFERENT]
    results: dict[int, bool] = {}

    def grade(index: int) -> None:
        results[index] = is_equivalent(*pairs[index])

    threads = [threading.Thread(target=grade, args=(i,)) for i in range(len(pairs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [results[i] for i in range(len(pairs))] == [True] * len(EQUAL) + [False] * len(DIFFERENT)


@pytest.mark.slow
def test_grade_many_from_a_worker_thread_uses_processes() -> None:
    pairs = [(f"\\frac{{{i}}}{{2}}", f"{i / 2}") for i in range(40)]
    out: list[list[bool]] = []
    thread = threading.Thread(target=lambda: out.append(grade_many(pairs, workers=1)))
    thread.start()
    thread.join(60)
    assert out == [[True] * 40]


@pytest.mark.slow
def test_a_stuck_worker_is_killed_and_its_pair_counts_as_different() -> None:
    with GradingPool(1) as pool:
        assert pool.grade([("\\frac{1}{2}", "0.5")]) == [True]
        first = next(iter(pool._all)).process
        # Make every verdict overdue: the worker is killed, the pair counts as not equivalent,
        # and the next pair goes to a new worker.
        pool._deadline, pool.startup_grace = 0.0, 0.0
        assert pool.grade([("\\frac{1}{3}", "1/3"), ("\\frac{2}{3}", "2/3")]) == [False, False]
        assert first.poll() is not None
        pool._deadline, pool.startup_grace = 10.0, 60.0
        assert pool.grade([("\\frac{1}{4}", "0.25")]) == [True]


@pytest.mark.slow
def test_shared_workers_stay_warm_between_calls_until_closed() -> None:
    first = [(f"\\frac{{{i}}}{{5}}", f"{i / 5}") for i in range(70)]
    second = [(f"\\frac{{{i}}}{{8}}", f"{i / 8}") for i in range(70)]
    assert grade_many(first, workers=1) == [True] * 70
    pool = grading._shared[(grading.DEFAULT_TIMEOUT, 1)]
    (process,) = [worker.process for worker in pool._all]
    assert grade_many(second, workers=1) == [True] * 70
    assert [worker.process for worker in pool._all] == [process]  # the same, warm worker
    close_pools()
    assert process.poll() is not None
    assert grading._shared == {}
