"""Pacing model calls with a shared requests/tokens-per-minute budget (tir_agent/pacing.py).

The pacer runs on a fake clock (its sleeps advance it), so these tests measure pacing exactly and
take no real time; throughput against a rate-limited endpoint is measured by
benchmarks/rate_limits.py. The last test goes through the real client and a scripted endpoint
that sends OpenAI's ``x-ratelimit-*`` headers.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.agent.scripted import Step
from tests.agent.scripted_responses import ScriptedResponses
from tir_agent.agent import Agent
from tir_agent.pacing import Pacer, parse_reset
from tir_agent.sandbox.base import Sandbox


class FakeClock:
    """Time that passes only when someone sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)
        await asyncio.sleep(0)


def test_parse_reset() -> None:
    assert parse_reset("1s") == 1.0 and parse_reset("6m0s") == 360.0
    assert parse_reset("20ms") == pytest.approx(0.02) and parse_reset("1h2m3.5s") == 3723.5
    assert parse_reset("0.5") == 0.5 and parse_reset("soon") is None


@pytest.mark.asyncio
async def test_given_limits_pace_requests_and_tokens() -> None:
    clock = FakeClock()
    pacer = Pacer(max_rpm=60, max_tpm=6000, clock=clock, sleep=clock.sleep)
    for _ in range(10):  # 100 tokens each: the token budget (100/s) and the request budget (1/s)
        assert await pacer.acquire(100) is False  # limits known: no probe
    assert clock.now == pytest.approx(9.0)  # the first is free (a second's burst), then 1 a second
    pacer.settle(100, 400)  # a call used 300 more than estimated: the next waits 3 s more
    before = clock.now
    await pacer.acquire(100)
    assert clock.now - before == pytest.approx(4.0)


@pytest.mark.asyncio
async def test_limits_are_learned_from_headers_after_one_probe() -> None:
    clock = FakeClock()
    pacer = Pacer(clock=clock, sleep=clock.sleep)
    assert await pacer.acquire(50) is True  # the first call goes alone
    waiting = asyncio.ensure_future(pacer.acquire(50))
    await asyncio.sleep(0)
    assert not waiting.done()  # held until the probe's reply has told the limits
    pacer.observe(
        {
            "x-ratelimit-limit-requests": "120",
            "x-ratelimit-limit-tokens": "3000",
            "x-ratelimit-remaining-tokens": "10",
            "x-ratelimit-reset-tokens": "1s",
        }
    )
    pacer.release(True)
    assert await waiting is False
    assert pacer.requests is not None and pacer.requests.rate == pytest.approx(2.0)
    assert pacer.tokens is not None and pacer.tokens.rate == pytest.approx(50.0)
    # Only 10 tokens remained at the server: the 50 just taken were waited for.
    assert clock.now == pytest.approx((50 - 10) / 50)


@pytest.mark.asyncio
async def test_no_headers_no_pacing() -> None:
    clock = FakeClock()
    pacer = Pacer(clock=clock, sleep=clock.sleep)
    assert pacer.may_pace_tokens  # limits unknown: callers waiting for the probe need estimates
    probe = await pacer.acquire(10**6)
    pacer.observe({"content-type": "application/json"})
    pacer.release(probe)
    assert not pacer.may_pace_tokens  # nothing to pace: no estimate is built
    for _ in range(100):
        await pacer.acquire(10**6)
    assert clock.now == 0.0 and pacer.tokens is None and pacer.requests is None


@pytest.mark.asyncio
async def test_a_429_pauses_every_caller() -> None:
    clock = FakeClock()
    pacer = Pacer(max_rpm=6000, max_tpm=10**9, clock=clock, sleep=clock.sleep)
    pacer.pause(2.5)
    await asyncio.gather(pacer.acquire(1), pacer.acquire(1))
    assert clock.now >= 2.5


@pytest.mark.asyncio(loop_scope="module")
async def test_the_client_learns_limits_from_a_real_reply(sandbox: Sandbox) -> None:
    headers = {"x-ratelimit-limit-requests": "500", "x-ratelimit-limit-tokens": "30000",
               "x-ratelimit-remaining-tokens": "29000", "x-ratelimit-reset-tokens": "2s"}  # fmt: skip
    server = ScriptedResponses([Step("\\boxed{1}")], headers=headers)
    agent = Agent(
        "gpt-4.1-paced-test", base_url="http://scripted.test/v1", api_key="k", api="responses",
        sandbox=sandbox, http_client=server.client(), user="{problem}",
    )  # fmt: skip
    await agent.asolve("p")
    pacer = agent.client.pacer()
    assert pacer.tokens is not None and pacer.tokens.rate * 60 == pytest.approx(30000)
    assert pacer.requests is not None and pacer.requests.rate * 60 == pytest.approx(500)
    limited = Agent("gpt-4.1-paced-test", api_key="k", max_rpm=10, max_tpm=1000)
    assert limited.client.max_rpm == 10 and limited.client.max_tpm == 1000
