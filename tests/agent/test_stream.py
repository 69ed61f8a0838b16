"""stream(): typed events as they happen, in every format; events round-trip through JSON."""

from __future__ import annotations

import pytest

from tests.agent.conftest import Harness
from tests.agent.scripted import Step
from tir_agent.turn import (
    EVENT_ADAPTER,
    CodeComplete,
    CodeStart,
    ExecutionDone,
    Finished,
    TextDelta,
    TurnEnd,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_event_sequence(fmt: Harness) -> None:
    fmt.streamed = True
    agent, server = fmt.agent(
        [Step("Let me compute 6*7.\n", ["print(6 * 7)\n"]), Step("It is \\boxed{42}.")]
    )
    result = await fmt.solve(agent, "p")
    assert all(
        r["stream"] and r["stream_options"] == {"include_usage": True} for r in server.requests
    )
    kinds = [type(e).__name__ for e in fmt.events]
    first_turn = kinds[: kinds.index("TurnEnd") + 1]
    assert first_turn[0] == "TextDelta" and "CodeStart" in first_turn
    assert first_turn[-2:] == ["CodeComplete", "TurnEnd"]
    assert kinds[kinds.index("TurnEnd") + 1] == "ExecutionDone"
    assert kinds[-2:] == ["TurnEnd", "Finished"]
    deltas = "".join(e.text for e in fmt.events if isinstance(e, TextDelta) and e.turn == 1)
    assert deltas == "It is \\boxed{42}."
    starts = [e for e in fmt.events if isinstance(e, CodeStart)]
    assert [e.turn for e in starts] == [0]
    complete = next(e for e in fmt.events if isinstance(e, CodeComplete))
    assert complete.call.code == "print(6 * 7)\n"
    done = next(e for e in fmt.events if isinstance(e, ExecutionDone))
    assert done.execution.stdout == "42\n"
    ends = [e.turn for e in fmt.events if isinstance(e, TurnEnd)]
    assert ends == result.turns
    # The usage chunk is read: tokens are counted when streaming too.
    assert result.usage.completion_tokens > 0 and result.usage.prompt_tokens > 0
    assert isinstance(fmt.events[-1], Finished)
    for event in fmt.events:
        assert EVENT_ADAPTER.validate_json(EVENT_ADAPTER.dump_json(event)) == event


async def test_stream_raises_the_solve_error(fmt: Harness) -> None:
    from tests.agent.scripted import Fail
    from tir_agent.errors import AuthenticationError

    fmt.streamed = True
    agent, _ = fmt.agent([Fail(401, "bad key")])
    with pytest.raises(AuthenticationError):
        await fmt.solve(agent, "p")


async def test_closing_the_stream_early_cancels_the_solve(fmt: Harness) -> None:
    import contextlib

    fmt.streamed = True
    agent, server = fmt.agent([Step("Compute.\n", ["print(1)\n"]), Step("\\boxed{1}")])
    async with contextlib.aclosing(agent.stream("p")) as events:
        async for event in events:
            if isinstance(event, TurnEnd):
                break
    assert len(server.requests) == 1  # nothing more was asked of the model
    again, _ = fmt.agent([Step("\\boxed{2}")])
    assert (await again.asolve("p")).answer == "2"
