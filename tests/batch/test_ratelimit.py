"""The per-minute limiter, on a virtual clock, and wired into a batch run."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from tir_agent.batch import Job, SampleOutput, run_batch, scan_input
from tir_agent.ratelimit import RateLimiter


class Clock:
    """A virtual clock: sleeping advances it instantly."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


async def test_requests_are_spaced_at_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(120, clock=clock, sleep=clock.sleep)  # 2 per second, burst of 2
    starts = []
    for _ in range(6):
        await limiter.acquire()
        starts.append(clock.now)
    assert starts == [0.0, 0.0, 0.5, 1.0, 1.5, 2.0]


async def test_charged_tokens_put_the_bucket_in_debt() -> None:
    clock = Clock()
    limiter = RateLimiter(6000, clock=clock, sleep=clock.sleep)  # 100 tokens per second
    await limiter.acquire(0)
    limiter.charge(300)  # a call used 300 tokens: 2 s of debt beyond the 100 of burst
    await limiter.acquire(0)
    assert clock.now == 2.0
    clock.now += 10  # idle time refills only up to the burst capacity
    limiter.charge(100)
    await limiter.acquire(0)
    assert clock.now == 12.0


async def test_requests_per_minute_throttles_a_batch(tmp_path: Path) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"x": i}) + "\n" for i in range(15)))
    starts: list[float] = []

    async def solver(job: Job) -> SampleOutput:
        starts.append(time.monotonic())
        await asyncio.sleep(0)
        return SampleOutput({"generation": "g"})

    began = time.monotonic()
    await run_batch(
        inp, tmp_path / "out.jsonl", solver, scan=scan_input(inp), seeds=[None],
        concurrency=15, requests_per_minute=600,
    )  # fmt: skip
    # 10 per second with a burst of one second (10): the last 5 starts wait 0.1 s each
    assert starts[-1] - began >= 0.45


async def test_tokens_per_minute_throttles_a_batch(tmp_path: Path) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"x": i}) + "\n" for i in range(4)))
    starts: list[float] = []

    async def solver(job: Job) -> SampleOutput:
        starts.append(time.monotonic())
        return SampleOutput({"generation": "g"}, tokens=100)

    await run_batch(
        inp, tmp_path / "out.jsonl", solver, scan=scan_input(inp), seeds=[None],
        concurrency=1, tokens_per_minute=60_000,
    )  # fmt: skip
    # 1000 tokens/s with a burst of 1000: the first sample's 100 tokens fit, later ones wait
    # until the debt is paid; four samples of 100 tokens each fit in the burst: no wait
    assert starts[-1] - starts[0] < 0.05
    starts.clear()
    await run_batch(
        inp, tmp_path / "out2.jsonl", solver, scan=scan_input(inp), seeds=[None],
        concurrency=1, tokens_per_minute=12_000,
    )  # fmt: skip
    # 200 tokens/s, burst 200: samples 1-3 spend 300 (100 of debt), sample 4 waits 0.5 s for it
    assert 0.4 <= starts[-1] - starts[0] < 1.0
