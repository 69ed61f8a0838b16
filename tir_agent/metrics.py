"""Evaluation metrics over S graded samples per problem (REFERENCE.md §9).

Input: for every problem, its samples in seed order, each a record with ``predicted_answer``
(``None`` when no answer was extracted) and ``symbolic_correct`` (see
:func:`tir_agent.grading.grade_records`), plus the statistics ``generate`` writes
(``num_generated_tokens``, ``code_rounds_executed``, ``num_code_timeouts``; optional).

For each k in ``ks`` (default 1, 2, 4, ... up to S, and S):

- ``pass@k``: the unbiased estimator ``1 - C(n-c, k) / C(n, k)`` per problem (n samples, c
  correct), averaged over problems;
- ``pass@1[avg-of-k]``: the accuracy of each of the first k seeds, averaged, with the standard
  deviation across those seeds (sample std, ``ddof=1``; 0 for k = 1) and its standard error
  ``std / sqrt(k)``, as NeMo-Skills' ``std_dev_across_runs`` / ``std_err_across_runs``;
- ``majority@k``: per problem, the most common non-empty answer among its first k samples
  (answers grouped by :func:`~tir_agent.grading.normalize_answer`); a tie scores the mean
  correctness of the tied answers; no answer at all scores 0.

``no_answer`` is the fraction of all samples without an extracted answer (``None`` or empty). Accuracies are fractions
in JSON and percentages in the table.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict
from rich.table import Table
from rich.text import Text

from tir_agent.errors import ConfigError
from tir_agent.grading import normalize_answer

__all__ = [
    "EvaluationMetrics",
    "MeanStd",
    "compute_metrics",
    "default_ks",
    "majority_score",
    "pass_at_k",
]


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k estimate for one problem: ``1 - C(n-c, k) / C(n, k)``."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def _answer(sample: Mapping[str, Any]) -> str | None:
    """The sample's normalized answer; ``None`` when it has none (or an empty one)."""
    answer = sample.get("predicted_answer")
    if answer is None:
        return None
    return normalize_answer(str(answer)) or None


def majority_score(samples: Sequence[Mapping[str, Any]]) -> float:
    """majority@len(samples) for one problem: the correctness of the most common answer."""
    counts: Counter[str] = Counter()
    correct: dict[str, bool] = {}
    for sample in samples:
        key = _answer(sample)
        if key is None:
            continue
        counts[key] += 1
        correct.setdefault(key, bool(sample.get("symbolic_correct")))
    if not counts:
        return 0.0
    top = max(counts.values())
    tied = [answer for answer, count in counts.items() if count == top]
    return sum(correct[answer] for answer in tied) / len(tied)


def default_ks(samples: int) -> list[int]:
    """1, 2, 4, ... up to ``samples``, and ``samples`` itself."""
    ks = [1 << i for i in range(samples.bit_length()) if 1 << i <= samples]
    if samples not in ks:
        ks.append(samples)
    return ks


class MeanStd(BaseModel):
    """A mean with its standard deviation across seeds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mean: float
    """Mean of the per-seed accuracies."""
    std: float
    """Sample standard deviation of the per-seed accuracies (0 for a single seed)."""
    std_err: float
    """Standard error of the mean: ``std / sqrt(number of seeds)``."""


class EvaluationMetrics(BaseModel):
    """The metrics of one evaluated run; renders as a rich table and as JSON."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_problems: int
    """Problems evaluated."""
    samples_per_problem: int
    """S: samples per problem (the smallest count when problems differ)."""
    num_samples: int
    """All samples."""
    pass_at_k: dict[int, float]
    """pass@k (unbiased estimator), by k."""
    pass_at_1_avg: dict[int, MeanStd]
    """pass@1[avg-of-k] with the std across seeds, by k."""
    majority_at_k: dict[int, float]
    """majority@k, by k."""
    no_answer: float
    """Fraction of samples without an extracted answer."""
    num_errors: int = 0
    """Samples whose generation failed (an ``error`` field)."""
    mean_generated_tokens: float | None = None
    """Mean ``num_generated_tokens`` per sample (``None`` if no sample has it)."""
    mean_code_executions: float | None = None
    """Mean ``code_rounds_executed`` per sample."""
    mean_code_timeouts: float | None = None
    """Mean ``num_code_timeouts`` per sample."""
    total_cost: float | None = None
    """Sum of the samples' ``cost`` in USD (``None`` if no sample has one)."""
    unpriced_samples: int = 0
    """Samples without a ``cost`` (their model had no price), not in ``total_cost``."""

    def rows(self) -> list[tuple[str, float, float | None]]:
        """``(metric, value, std)`` in display order (accuracies as fractions)."""
        rows: list[tuple[str, float, float | None]] = []
        for k in sorted(self.pass_at_k):
            avg = self.pass_at_1_avg[k]
            rows.append((f"pass@1[avg-of-{k}]", avg.mean, avg.std))
            rows.append((f"majority@{k}", self.majority_at_k[k], None))
            rows.append((f"pass@{k}", self.pass_at_k[k], None))
        return rows

    def to_table(self, title: str | None = None) -> Table:
        """A rich table: accuracies in percent, then the per-sample statistics."""
        table = Table(title=title)
        table.add_column("metric")
        table.add_column("value", justify="right")
        table.add_column("± std", justify="right")
        for name, value, std in self.rows():
            # Text, not markup: "[avg-of-k]" would be read as a style tag.
            table.add_row(
                Text(name), f"{100 * value:.2f}%", "" if std is None else f"{100 * std:.2f}"
            )
        table.add_section()
        table.add_row("no_answer", f"{100 * self.no_answer:.2f}%", "")
        table.add_row("problems × samples", f"{self.num_problems} × {self.samples_per_problem}", "")
        if self.num_errors:
            table.add_row("errors", str(self.num_errors), "")
        for name, mean in (
            ("tokens / sample", self.mean_generated_tokens),
            ("executions / sample", self.mean_code_executions),
            ("timeouts / sample", self.mean_code_timeouts),
        ):
            if mean is not None:
                table.add_row(name, f"{mean:.2f}", "")
        if self.total_cost is not None:
            unpriced = f" ({self.unpriced_samples} unpriced)" if self.unpriced_samples else ""
            table.add_row("cost (USD)", f"{self.total_cost:.4f}{unpriced}", "")
            table.add_row("cost / sample", f"{self.total_cost / self.num_samples:.6f}", "")
        return table

    def to_json(self, *, indent: int | None = 2) -> str:
        """The metrics as JSON (accuracies as fractions)."""
        return self.model_dump_json(indent=indent)

    def __rich__(self) -> Table:
        return self.to_table()


def _mean_field(samples: Sequence[Mapping[str, Any]], field: str) -> float | None:
    values = [float(s[field]) for s in samples if isinstance(s.get(field), int | float)]
    return statistics.fmean(values) if values else None


def compute_metrics(
    problems: Sequence[Sequence[Mapping[str, Any]]], *, ks: Sequence[int] | None = None
) -> EvaluationMetrics:
    """The metrics of graded samples, given per problem in seed order (see the module docs)."""
    if not problems:
        raise ConfigError("no problems to evaluate")
    counts = [len(samples) for samples in problems]
    smallest = min(counts)
    if smallest == 0:
        raise ConfigError(f"problem {counts.index(0)} has no samples")
    ks = sorted(set(ks)) if ks else default_ks(smallest)
    if ks[0] < 1 or ks[-1] > smallest:
        raise ConfigError(f"k must be between 1 and the samples per problem ({smallest}), got {ks}")

    for index, samples in enumerate(problems):
        for seed, sample in enumerate(samples):
            if "symbolic_correct" not in sample:
                raise ConfigError(
                    f"problem {index}, sample {seed} has no symbolic_correct: grade the samples "
                    "first (tir_agent.grading.grade_records)"
                )
    correct = [[bool(s["symbolic_correct"]) for s in samples] for samples in problems]
    seed_accuracy = [statistics.fmean(flags[seed] for flags in correct) for seed in range(smallest)]
    pass_k: dict[int, float] = {}
    avg: dict[int, MeanStd] = {}
    majority: dict[int, float] = {}
    for k in ks:
        pass_k[k] = statistics.fmean(pass_at_k(len(f), sum(f), k) for f in correct)
        accuracies = seed_accuracy[:k]
        std = statistics.stdev(accuracies) if k > 1 else 0.0
        avg[k] = MeanStd(mean=statistics.fmean(accuracies), std=std, std_err=std / math.sqrt(k))
        majority[k] = statistics.fmean(majority_score(samples[:k]) for samples in problems)

    every = [sample for samples in problems for sample in samples]
    costs = [float(s["cost"]) for s in every if isinstance(s.get("cost"), int | float)]
    return EvaluationMetrics(
        num_problems=len(problems),
        samples_per_problem=smallest,
        num_samples=len(every),
        pass_at_k=pass_k,
        pass_at_1_avg=avg,
        majority_at_k=majority,
        no_answer=statistics.fmean(_answer(s) is None for s in every),
        num_errors=sum(1 for s in every if s.get("error")),
        mean_generated_tokens=_mean_field(every, "num_generated_tokens"),
        mean_code_executions=_mean_field(every, "code_rounds_executed"),
        mean_code_timeouts=_mean_field(every, "num_code_timeouts"),
        total_cost=math.fsum(costs) if costs else None,
        unpriced_samples=len(every) - len(costs) if costs else 0,
    )
