"""Pacing model calls against an endpoint that enforces a tokens-per-minute limit.

A mock OpenAI chat endpoint (an in-process httpx2 transport; every reply after ``--latency``
seconds) enforces ``--tpm`` like OpenAI: a token bucket refilled at ``tpm / 60`` tokens a second
that holds at most ``--burst`` seconds of them; a request takes its prompt plus completion tokens
on arrival, or is refused with 429, ``retry-after-ms`` and the ``x-ratelimit-*`` headers (limit,
remaining, reset), which every reply also carries. ``--callers`` tasks send requests through one
:class:`~tir_agent.client.ModelClient` each (all sharing the endpoint's pacer, as the samples of a
batch do) for ``--seconds``.

Two runs, same load: ``paced`` (the client as shipped: limits learned from the headers, every call
paced, a 429 pauses every caller) and ``unpaced`` (pacing switched off: only the retry loop with
``retry-after``). Reported: accepted tokens per minute over the run and over its second half
(steady state), as a fraction of the limit, and the number of 429s.

    PYTHONPATH=. python benchmarks/rate_limits.py --tpm 60000 --seconds 40 --callers 64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx2

from tir_agent.client import ModelClient
from tir_agent.formats.base import ModelRequest
from tir_agent.pacing import Pacer

PROMPT_WORDS = 240
COMPLETION_TOKENS = 60


@dataclass
class LimitedEndpoint:
    """The mock endpoint: a TPM token bucket, 429s with OpenAI's headers."""

    tpm: float
    burst: float
    latency: float
    level: float = 0.0
    updated: float = field(default_factory=time.monotonic)
    accepted: list[tuple[float, int]] = field(default_factory=list)
    refused: int = 0

    def __post_init__(self) -> None:
        self.level = self.capacity

    @property
    def rate(self) -> float:
        return self.tpm / 60.0

    @property
    def capacity(self) -> float:
        return self.rate * self.burst

    def _headers(self) -> dict[str, str]:
        missing = max(0.0, self.capacity - self.level)
        return {
            "x-ratelimit-limit-tokens": str(int(self.tpm)),
            "x-ratelimit-remaining-tokens": str(max(0, int(self.level))),
            "x-ratelimit-reset-tokens": f"{missing / self.rate:.3f}s",
            "x-ratelimit-limit-requests": "100000",
            "x-ratelimit-remaining-requests": "99999",
            "x-ratelimit-reset-requests": "1ms",
        }

    async def handle(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        prompt = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
        cost = prompt + COMPLETION_TOKENS
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now
        if self.level < cost:
            self.refused += 1
            wait_ms = (cost - self.level) / self.rate * 1000
            error = {"message": "Rate limit reached for tokens per min (TPM)", "type": "tokens",
                     "param": None, "code": "rate_limit_exceeded"}  # fmt: skip
            headers = {**self._headers(), "retry-after-ms": f"{wait_ms:.0f}"}
            return httpx2.Response(429, headers=headers, json={"error": error})
        self.level -= cost
        self.accepted.append((now, cost))
        await asyncio.sleep(self.latency)
        reply = {
            "id": "c", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "ok " * COMPLETION_TOKENS}}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": COMPLETION_TOKENS,
                      "total_tokens": cost},
        }  # fmt: skip
        return httpx2.Response(200, headers=self._headers(), json=reply)


async def run(args: argparse.Namespace, paced: bool) -> dict[str, Any]:
    endpoint = LimitedEndpoint(args.tpm, args.burst, args.latency)
    http = httpx2.AsyncClient(transport=httpx2.MockTransport(endpoint.handle))
    model = f"bench-{'paced' if paced else 'unpaced'}"  # its own pacer per run
    if not paced:  # no pacing at all: the retry loop with retry-after is all there is
        Pacer.observe = lambda self, headers: None  # type: ignore[method-assign]
        Pacer.pause = lambda self, seconds: None  # type: ignore[method-assign]
    prompt = " ".join(["word"] * PROMPT_WORDS)
    started = time.monotonic()
    deadline = started + args.seconds

    async def caller() -> None:
        client = ModelClient(
            model=model, base_url="http://limited.test/v1", api_key="k", max_retries=50,
            http_client=http,
        )  # fmt: skip
        while time.monotonic() < deadline:
            request = ModelRequest("chat", {"messages": [{"role": "user", "content": prompt}]})
            await client.request(request)

    await asyncio.gather(*(caller() for _ in range(args.callers)))
    elapsed = time.monotonic() - started
    half = started + elapsed / 2
    total = sum(cost for _, cost in endpoint.accepted)
    late = sum(cost for at, cost in endpoint.accepted if at >= half)
    return {
        "mode": "paced" if paced else "unpaced",
        "tpm": round(total / elapsed * 60),
        "of_limit": round(total / elapsed * 60 / args.tpm, 3),
        "second_half_of_limit": round(late / (elapsed / 2) * 60 / args.tpm, 3),
        "requests": len(endpoint.accepted),
        "429s": endpoint.refused,
    }


def main() -> None:
    """Parse the options, run paced then unpaced, print one JSON line each."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tpm", type=float, default=60000)
    parser.add_argument(
        "--burst", type=float, default=2.0, help="seconds of tokens the bucket holds"
    )
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per reply")
    parser.add_argument("--seconds", type=float, default=40)
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--only", choices=["paced", "unpaced"])
    args = parser.parse_args()
    import logging

    logging.getLogger("tir_agent").setLevel(logging.ERROR)  # the retries' warnings
    for paced in (True, False):
        if args.only and args.only != ("paced" if paced else "unpaced"):
            continue
        print(json.dumps(asyncio.run(run(args, paced))), flush=True)


if __name__ == "__main__":
    main()
