"""Results: JSON round trip, the batch record, notebook display."""

from __future__ import annotations

import json

import pytest

from tests.agent.conftest import Harness
from tests.agent.scripted import Step
from tir_agent.turn import SolveResult

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_result_round_trips_and_displays(fmt: Harness) -> None:
    agent, _ = fmt.agent([Step("Use code.", ["print('```')\n"]), Step("So \\boxed{x<1}.")])
    result = await fmt.solve(agent, "p")
    again = SolveResult.model_validate_json(result.model_dump_json())
    assert again == result
    record = result.to_record()
    assert json.loads(json.dumps(record)) == record
    assert set(record) >= {
        "generation",
        "code_rounds_executed",
        "num_code_timeouts",
        "num_generated_tokens",
        "generation_time",
        "code_execution_time",
    }
    markdown = result._repr_markdown_()
    assert (
        "**answer:** `x<1`" in markdown and "````text\n" in markdown
    )  # fence longer than any inside
    html = result._repr_html_()
    assert "x&lt;1" in html and "<pre" in html
    assert result.format == fmt.name
