"""SessionPool: sessions reset and handed to the next user, who waits for a reset under way
rather than opening a session of its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tir_agent.sandbox.local import LocalSandbox, LocalSession
from tir_agent.sandbox.pool import SessionPool

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def box() -> AsyncIterator[LocalSandbox]:
    async with LocalSandbox(preload=(), fork_ahead=False) as sandbox:
        yield sandbox


@pytest.fixture
def opened(box: LocalSandbox, monkeypatch: pytest.MonkeyPatch) -> list[LocalSession]:
    """The sessions opened through ``box`` during the test (real ones, counted)."""
    sessions: list[LocalSession] = []
    real = box.open_session

    async def open_session() -> LocalSession:
        session = await real()
        sessions.append(session)
        return session

    monkeypatch.setattr(box, "open_session", open_session)
    return sessions


async def test_users_take_turns_on_one_reset_session(
    box: LocalSandbox, opened: list[LocalSession]
) -> None:
    pool = SessionPool(box, 1)

    async def user(i: int) -> str:
        async with pool.session() as s:
            seen = (await s.run("print('x' in globals())")).stdout
            await s.run(f"x = {i}")
            return seen

    assert await user(0) == "False\n"
    # seven users at once while its reset is under way: they take turns on that one session,
    # each waiting for its predecessor's reset, none opening a session of its own
    seen = await asyncio.gather(*(user(i) for i in range(1, 8)))
    assert len(opened) == 1
    assert seen == ["False\n"] * 7  # nobody saw a predecessor's variable
    await pool.close()
    assert opened[0].closed


async def waiting_for_a_reset(box: LocalSandbox) -> tuple[SessionPool, asyncio.Task[LocalSession]]:
    """A pool of one session, used (``x = 1``) and being reset, and a user waiting for it."""
    pool = SessionPool(box, 1)
    async with pool.session() as s:
        await s.run("x = 1")
    waiter = asyncio.create_task(pool._acquire())
    await asyncio.sleep(0)
    assert pool._waiters and not waiter.done()
    return pool, waiter


async def test_a_cancelled_waiter_loses_no_session(
    box: LocalSandbox, opened: list[LocalSession]
) -> None:
    pool, waiter = await waiting_for_a_reset(box)
    waiter.cancel()  # while it waits
    with pytest.raises(asyncio.CancelledError):
        await waiter
    async with pool.session() as s:  # the reset session goes to the next user
        assert (await s.run("print('x' in globals())")).stdout == "False\n"
    assert len(opened) == 1
    await pool.close()


async def test_a_waiter_of_a_failed_reset_opens_a_session(
    box: LocalSandbox, opened: list[LocalSession]
) -> None:
    pool, waiter = await waiting_for_a_reset(box)
    await opened[0].close()  # under the reset's feet: the reset fails
    got = await asyncio.wait_for(waiter, 30)
    assert got is not opened[0] and not got.closed
    assert len(opened) == 2
    await pool._release(got)
    await pool.close()
