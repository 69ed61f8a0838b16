"""What holding sessions to ``memory_limit`` costs: a memory cgroup per session against the
memory watchdog, measured in one run, in alternating rounds, in both state-protection modes.

For each (enforcement, mode): the median of warm ``print(1+1)`` executions back to back in one
session, and executions per second with 32 concurrent sessions. Both enforcements must be
available (root, with a writable memory cgroup: see docs/isolation.md).

Run: ``python benchmarks/memory_enforcement.py [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tir_agent.sandbox.local import LocalSandbox, LocalSession


async def measure(how: str, protect: bool) -> tuple[float, float]:
    """(median warm latency in ms, executions/s with 32 sessions)."""
    async with LocalSandbox(memory_enforcement=how, protect_state=protect) as sandbox:
        async with sandbox.session() as session:
            for _ in range(50):
                await session.run("print(1+1)")
            times = []
            for _ in range(300):
                start = time.perf_counter()
                await session.run("print(1+1)")
                times.append(time.perf_counter() - start)
        async with contextlib.AsyncExitStack() as stack:
            sessions = [await stack.enter_async_context(sandbox.session()) for _ in range(32)]
            for s in sessions:
                await s.run("1")

            async def loop(s: LocalSession) -> None:
                for _ in range(40):
                    await s.run("print(1+1)")

            start = time.perf_counter()
            await asyncio.gather(*(loop(s) for s in sessions))
            elapsed = time.perf_counter() - start
    return statistics.median(times) * 1000, 32 * 40 / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[tuple[str, bool], list[tuple[float, float]]] = {}
    for r in range(args.rounds):
        for how in ("cgroup", "watchdog"):
            for protect in (False, True):
                warm, rate = await measure(how, protect)
                results.setdefault((how, protect), []).append((warm, rate))
                print(
                    f"round {r} {how:<8} protect_state={protect!s:<5} warm {warm:7.3f} ms"
                    f"  {rate:6.0f} exec/s  load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
    print("\nmedians over the rounds, cgroup / watchdog:")
    for protect in (False, True):
        cg, wd = results[("cgroup", protect)], results[("watchdog", protect)]
        warm = statistics.median(w for w, _ in cg) / statistics.median(w for w, _ in wd)
        rate = statistics.median(x for _, x in cg) / statistics.median(x for _, x in wd)
        print(f"  protect_state={protect!s:<5} warm latency x{warm:.2f}   exec/s x{rate:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
