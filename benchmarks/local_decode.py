"""Decoding speed of the embedded model under each OpenMP spin setting, interleaved.

llama.cpp (built with OpenMP, as llama-cpp-python builds it) meets its threads at a barrier
after every operation of the graph; how long a thread busy-waits there before it sleeps is
libgomp's ``GOMP_SPINCOUNT`` (default 300,000 iterations: milliseconds). The embedded server runs
with :data:`tir_agent.local_model.SPIN_COUNT` (1,000). This measures, for each setting, the time
of one decoded token after a 300-token context, with the server's thread count (every CPU):
median and mean ms per token and CPU ms per token (all threads). Each setting runs in its own
process (libgomp reads its environment at start), one after the other, ``--rounds`` times, so
the settings see the same load; quote ``uptime`` with the figures.

Run: ``python benchmarks/local_decode.py [--tokens 40] [--rounds 2] [--spin 1000 300000 ...]``
(``passive`` for ``OMP_WAIT_POLICY=passive``). Needs the default model (scripts/setup.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from tir_agent.local_model import SPIN_COUNT, default_threads, find_gguf


def measure(tokens: int) -> dict[str, float]:
    """In this process: decode ``tokens`` single tokens after a 300-token context."""
    import llama_cpp

    threads = default_threads()
    llm = llama_cpp.Llama(
        str(find_gguf()), n_ctx=4096, n_threads=threads, n_threads_batch=threads, verbose=False
    )
    context = llm.tokenize(("The quick brown fox jumps over the lazy dog. " * 40).encode())[:300]
    llm.eval(context)
    times = []
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(tokens):
        start = time.perf_counter()
        llm.eval([context[i % 50]])
        times.append((time.perf_counter() - start) * 1000)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "median_ms": statistics.median(times),
        "mean_ms": wall / tokens * 1000,
        "cpu_ms": cpu / tokens * 1000,
    }


def run(setting: str, tokens: int) -> dict[str, float]:
    """:func:`measure` in a child process whose environment has ``setting``."""
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    if setting == "passive":
        env["OMP_WAIT_POLICY"] = "passive"
    elif setting != "default":
        env["GOMP_SPINCOUNT"] = setting
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(tokens)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=40, help="decoded tokens per measurement")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--spin",
        nargs="+",
        default=[str(SPIN_COUNT), "default"],
        help="GOMP_SPINCOUNT values, 'default' (libgomp's) or 'passive'",
    )
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child)))
        return
    print(f"load average at start: {os.getloadavg()}, threads: {default_threads()}")
    for round_ in range(1, args.rounds + 1):
        for setting in args.spin:
            r = run(setting, args.tokens)
            print(
                f"round {round_}  spin {setting:>8}: median {r['median_ms']:7.1f} ms/token, "
                f"mean {r['mean_ms']:7.1f}, CPU {r['cpu_ms']:7.1f} ms/token"
            )
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
