"""Execution budgets and the hint texts models were trained on (REFERENCE.md §4), byte-exact."""

from __future__ import annotations

import random

REMAINING_HINT = (
    "```system\nRemaining code executions: {remaining}. You will not be able to call code when "
    "you run out of executions, so use it wisely. Note that you can still continue solving the "
    "problem without code after that.\n```\n"
)
"""Appended after an execution while ``remaining`` > 0."""

RUN_OUT_HINT = (
    "```system\nYou have run out of code executions! You can no longer write or execute code. "
    "Now you should continue solving the problem by relying on your mathematical reasoning and "
    "analytical skills.\n```\n"
)
"""Appended after the last allowed execution."""


def hint_after(executed: int, budget: int | None) -> str:
    """The hint after the ``executed``-th execution (1-based) of ``budget``; empty if unlimited."""
    if budget is None:
        return ""
    remaining = budget - executed
    if remaining > 0:
        return REMAINING_HINT.format(remaining=remaining)
    return RUN_OUT_HINT


def draw_total_code_executions(
    spec: int | tuple[int, int] | list[int] | None, seed: int
) -> int | None:
    """The per-sample budget stated in the prompt: an int, or one drawn from ``[lo, hi]`` inclusive.

    The draw depends only on ``seed``, so a rerun of the same sample gets the same budget.
    """
    if spec is None or isinstance(spec, int):
        return spec
    lo, hi = spec
    return random.Random(seed).randint(lo, hi)
