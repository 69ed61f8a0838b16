"""Cost in batch output: a ``cost`` and ``usage`` per row, the ``max_cost`` cap and its resume,
the progress line, and the totals of ``evaluate``.

The model is the scripted OpenAI-compatible server of tests/batch/server.py (real wire format);
``model=scripted`` is priced through ``prices=`` (USD per 1M tokens) so every sample has a cost.
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.batch.server import ReactiveServer, problems
from tir_agent.batch import PlainProgress, generate, journal_path
from tir_agent.cli import evaluate_files
from tir_agent.config import load_config
from tir_agent.sandbox.local import LocalSandbox

pytestmark = pytest.mark.asyncio(loop_scope="module")

PRICE = "prices={scripted: {input: 1000, output: 4000}}"
"""USD per 1M tokens: a few cents per sample, so caps are easy to reason about."""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sandbox() -> AsyncIterator[Any]:
    async with LocalSandbox() as box:
        yield box


def config(*overrides: str) -> Any:
    return load_config(
        overrides=["model=scripted", "server_address=http://scripted.test/v1", "api_key=k",
                   "prompt_config=generic/math", "max_retries=0", PRICE, *overrides],
        env={},
    )  # fmt: skip


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_rows_carry_cost_and_usage(tmp_path: Path, sandbox: Any) -> None:
    inp, out = write(tmp_path / "in.jsonl", problems(4)), tmp_path / "out.jsonl"
    stream = io.StringIO()
    progress = PlainProgress(stream, interval=0.0)
    await generate(
        inp,
        out,
        config(),
        sandbox=sandbox,
        http_client=ReactiveServer().client(),
        progress=progress,
    )
    rows = read(out)
    for row in rows:
        usage = row["usage"]
        expected = (usage["input_tokens"] * 1000 + usage["output_tokens"] * 4000) / 1e6
        assert row["cost"] == pytest.approx(expected) and row["cost"] > 0
        assert usage["output_tokens"] == row["num_generated_tokens"]
    total = sum(r["cost"] for r in rows)
    assert f"${total:.4f} spent" in stream.getvalue().splitlines()[-1]
    evaluated = evaluate_files_output([out])
    assert f"{total:.4f}" in evaluated and "cost (USD)" in evaluated


def evaluate_files_output(paths: list[Path]) -> str:
    import contextlib

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        evaluate_files(paths)
    return buffer.getvalue()


async def test_max_cost_stops_new_samples_and_a_higher_cap_resumes(
    tmp_path: Path, sandbox: Any
) -> None:
    inp, out = write(tmp_path / "in.jsonl", problems(8)), tmp_path / "out.jsonl"
    server = ReactiveServer()
    first = await generate(
        inp, out, config("max_concurrent_requests=1", "max_cost=0.0000001"),
        sandbox=sandbox, http_client=server.client(),
    )  # fmt: skip
    # One sample ran (the cap was not reached before it), then no other started.
    assert first.generated == 1 and first.not_started == 7 and first.spent > 0
    assert not out.exists() and journal_path(out).exists()
    calls = len(server.requests)
    again = await generate(
        inp, out, config("max_concurrent_requests=1", "max_cost=0.0000001"),
        sandbox=sandbox, http_client=server.client(),
    )  # fmt: skip
    assert again.generated == 0 and again.not_started == 7 and len(server.requests) == calls
    done = await generate(
        inp, out, config("max_concurrent_requests=2", "max_cost=100"),
        sandbox=sandbox, http_client=server.client(),
    )  # fmt: skip
    assert done.generated == 7 and done.skipped == 1 and done.not_started == 0
    rows = read(out)
    assert len(rows) == 8 and all(r["cost"] > 0 for r in rows)
    assert done.spent == pytest.approx(sum(r["cost"] for r in rows))


async def test_a_responses_batch(tmp_path: Path, sandbox: Any) -> None:
    """``api=responses`` through ``generate``: rows carry the Responses usage (cached and
    reasoning tokens) and its cost at the shipped o4-mini price."""
    from tests.agent.scripted import Step
    from tests.agent.scripted_responses import ScriptedResponses
    from tir_agent.pricing import default_prices

    rows = [{"problem": f"What is {i} + {i}?", "expected_answer": str(2 * i)} for i in (1, 2)]
    steps: list[Any] = []
    for i in (1, 2):
        steps += [Step("Compute.", [f"print({i} + {i})\n"]), Step(f"\\boxed{{{2 * i}}}")]
    server = ScriptedResponses(steps, reasoning=True)
    inp, out = write(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl"
    cfg = load_config(
        overrides=["model=o4-mini", "server_address=http://scripted.test/v1", "api_key=k",
                   "api=responses", "max_concurrent_requests=1", "max_retries=0"],
        env={},
    )  # fmt: skip
    await generate(inp, out, cfg, sandbox=sandbox, http_client=server.client())
    price = default_prices().models["o4-mini"]
    for row, expected in zip(read(out), ("2", "4"), strict=True):
        assert row["predicted_answer"] == expected and row["code_rounds_executed"] == 1
        usage = row["usage"]
        assert usage["reasoning_tokens"] == 100 and usage["cached_tokens"] >= 0
        cached = usage["cached_tokens"]
        cost = (
            (usage["input_tokens"] - cached) * price.input
            + cached * (price.cached_input or 0)
            + usage["output_tokens"] * price.output
        ) / 1e6
        assert row["cost"] == pytest.approx(cost)
    assert all(r["include"] == ["reasoning.encrypted_content"] for r in server.requests)
