"""structlog events: one per model call and per execution, bound to the problem, no bodies."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest
import structlog
from structlog.testing import LogCapture

from tests.agent.conftest import Harness
from tests.agent.scripted import Step

pytestmark = pytest.mark.asyncio(loop_scope="module")


@contextlib.contextmanager
def capture_logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """Captured events, with context variables merged as the default configuration does."""
    capture = LogCapture()
    old = structlog.get_config()
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, capture])
    try:
        yield capture.entries
    finally:
        structlog.configure(**old)


async def test_events_per_call_and_execution(
    fmt: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tir_agent.agent")
    agent, _ = fmt.agent([Step("Compute.\n", ["print(6 * 7)\n"]), Step("\\boxed{42}")])
    with capture_logs() as events:
        await fmt.solve(agent, "What is 6*7?", seed=3)
    mine = [e for e in events if e["event"] in ("model.call", "code.execute", "solve.finish")]
    assert [e["event"] for e in mine] == [
        "model.call",
        "code.execute",
        "model.call",
        "solve.finish",
    ]
    first = mine[0]
    assert first["turn"] == 0 and first["completion_tokens"] > 0 and first["latency"] >= 0
    assert first["finish_reason"] in ("stop", "tool_calls")
    assert mine[1]["status"] == "completed" and mine[1]["duration"] > 0
    assert {e["seed"] for e in mine} == {3} and len({e["problem"] for e in mine}) == 1
    assert not any("print(6 * 7)" in repr(e) or "What is 6*7?" in repr(e) for e in mine)


async def test_silent_when_info_is_off(fmt: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="tir_agent.agent")
    agent, _ = fmt.agent([Step("\\boxed{1}")])
    with capture_logs() as events:
        await fmt.solve(agent, "p")
    assert not [e for e in events if e["event"] == "model.call"]


async def test_events_below_the_level_are_not_built(caplog: pytest.LogCaptureFixture) -> None:
    """An event the stdlib logger would drop never reaches structlog's processors (which render
    it at a cost), whatever the level method; one at or above the level does."""
    from tir_agent._log import get_logger

    log = get_logger("tir_agent.test_levels")
    caplog.set_level(logging.WARNING, logger="tir_agent.test_levels")
    with capture_logs() as events:
        log.debug("quiet.debug")
        log.info("quiet.info", sample=1)
        log.warning("loud.warning")
        log.error("loud.error")
    assert [e["event"] for e in events] == ["loud.warning", "loud.error"]
    caplog.set_level(logging.DEBUG, logger="tir_agent.test_levels")
    with capture_logs() as events:
        log.debug("now.debug")
    assert [(e["event"], e["log_level"]) for e in events] == [("now.debug", "debug")]
