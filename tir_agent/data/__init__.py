"""Data shipped with tir-agent: a small problem set for demos and tests."""

from __future__ import annotations

from pathlib import Path

__all__ = ["problems_path"]


def problems_path() -> Path:
    """The bundled problem set: JSONL rows with ``id``, ``problem``, ``expected_answer``, ``level``.

    32 problems written for this project, from arithmetic (the sum of squares from 1 to 10) to
    competition style (lattice points in a circle, the Collatz steps of 27); answers were computed.
    """
    return Path(__file__).resolve().parent / "problems.jsonl"
