"""What the per-session protections of issue 12 cost, each measured against itself switched off.

1. ``prepare_session`` (a session's own mount and IPC namespace with its tmpfs) inside the real
   sandbox: the time it takes in a forked child, and the time from that child's exit to its
   parent's ``waitpid`` (the kernel tearing the namespaces down), against a child that does not
   make them.
2. LocalSandbox with ``session_files``/``session_ipc``/``session_memory`` on and off, in
   alternating rounds (same load): a new session with a first numpy/sympy cell, a warm
   ``print(1+1)``, both modes, and the CPU time the whole sandbox spent per new session (the
   template's own and its reaped children's, from /proc: less sensitive to load than wall time).
3. The memory watchdog's CPU time while 32 sessions sit idle (and while they run cells).

Run: ``python benchmarks/isolation.py`` (about a minute; ``--rounds N`` for more).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tir_agent.sandbox import isolation
from tir_agent.sandbox.config import SandboxConfig
from tir_agent.sandbox.local import LocalSandbox

FIRST_CELL = "import numpy as np\nimport sympy as sp\nprint(np.arange(4).sum(), sp.factorint(360))"

NAMESPACE_TIMING = """
import json, sys, time
def timed(make, n):
    made, gone = [], []
    for _ in range(n):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            t = time.perf_counter()
            if make:
                private_session_namespace("/sandbox", 1 << 30, 65536)
            os.write(w, repr(time.perf_counter() - t).encode())
            os._exit(0)
        os.close(w)
        made.append(float(os.read(r, 100)))
        os.close(r)
        t = time.perf_counter()
        os.waitpid(pid, 0)  # the child exited right after writing: this is its teardown
        gone.append(time.perf_counter() - t)
    return made, gone
n = int(sys.argv[1])
timed(True, 5)
out = {}
for make in (False, True, False, True):
    made, gone = timed(make, n)
    out.setdefault(str(make), [[], []])
    out[str(make)][0] += made
    out[str(make)][1] += gone
print(json.dumps(out))
"""


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def ms(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return f"median {statistics.median(values) * 1000:7.3f} ms  p90 {p90 * 1000:7.3f} ms  (n={len(values)})"


def namespace_cost(n: int) -> None:
    config = SandboxConfig()
    protections = isolation.detect_protections(config)
    source = (Path(isolation.__file__).parent / "_sessionfs.py").read_text() + NAMESPACE_TIMING
    argv = [config.python, "-I", "-S", "-c", source, str(n)]
    out = subprocess.run(
        isolation.template_command(argv, config, protections),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    result = json.loads(out)
    print(f"\n[prepare_session inside the sandbox ({protections.mechanism}), forked child]")
    print(f"  {'own namespaces + tmpfs':<34} {ms(result['True'][0])}")
    print(f"  {'exit -> waitpid, with them':<34} {ms(result['True'][1])}")
    print(f"  {'exit -> waitpid, without':<34} {ms(result['False'][1])}")


def without_session_protections(p: isolation.Protections) -> isolation.Protections:
    return dataclasses.replace(
        p, session_files=False, session_ipc=False, session_memory=False, memory_enforcement="rlimit"
    )


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and of all its children it has reaped (closed sessions, spares)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


async def one_round(on: bool, protect: bool, n_new: int, n_warm: int) -> tuple[float, float, float]:
    sandbox = LocalSandbox(protect_state=protect, max_sessions=None, idle_timeout=None)
    detected = isolation.detect_protections(sandbox.config)
    sandbox._protections = detected if on else without_session_protections(detected)
    async with sandbox:
        new = []
        template = sandbox.template_pid
        assert template is not None
        await asyncio.sleep(0.3)  # spares in place
        cpu = tree_cpu_seconds(template)
        for _ in range(n_new):
            t = time.perf_counter()
            async with sandbox.session() as s:
                r = await s.run(FIRST_CELL)
                new.append(time.perf_counter() - t)
                assert r.status == "completed", r
        await asyncio.sleep(0.3)  # the closed sessions' supervisors reaped, spares replaced
        cpu = (tree_cpu_seconds(template) - cpu) / n_new
        async with sandbox.session() as s:
            for _ in range(20):
                await s.run("print(1+1)")
            warm = []
            for _ in range(n_warm):
                t = time.perf_counter()
                await s.run("print(1+1)")
                warm.append(time.perf_counter() - t)
    return statistics.median(new), statistics.median(warm), cpu


def watchdog_pid(sandbox: LocalSandbox) -> int | None:
    assert sandbox._proc is not None
    todo = [sandbox._proc.pid]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() == "tir-memwatch":
                    return pid
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                todo += [int(p) for p in f.read().split()]
        except OSError:
            continue
    return None


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def watchdog_cost(seconds: float) -> None:
    print("\n[memory watchdog CPU time, 32 sessions]")
    # the watchdog runs only where it is asked for or there is no memory cgroup
    async with LocalSandbox(
        max_sessions=None, idle_timeout=None, memory_enforcement="watchdog"
    ) as sandbox:
        sessions = [await sandbox.open_session() for _ in range(32)]
        for s in sessions:
            await s.run("import numpy")
        pid = watchdog_pid(sandbox)
        assert pid is not None, "no watchdog running (session_memory inactive?)"
        for busy in (False, True):
            before, t = cpu_seconds(pid), time.perf_counter()
            stop = t + seconds
            if busy:

                async def loop(s: object, stop: float = stop) -> None:
                    while time.perf_counter() < stop:
                        await s.run("x = sum(range(10000))")  # type: ignore[attr-defined]

                await asyncio.gather(*(loop(s) for s in sessions))
            else:
                await asyncio.sleep(seconds)
            used = cpu_seconds(pid) - before
            share = used / (time.perf_counter() - t) * 100
            what = "running cells" if busy else "idle"
            print(f"  {what:<14} {used:6.2f} CPU s in {seconds:.0f} s = {share:.1f}% of one core")
        for s in sessions:
            await s.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternating on/off rounds")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, load average {load()}")
    namespace_cost(100)
    for protect in (False, True):
        print(f"\n[LocalSandbox protect_state={protect}: per-session protections on vs off]")
        figures: dict[bool, list[tuple[float, float, float]]] = {True: [], False: []}
        for _ in range(args.rounds):
            for on in (False, True):
                figures[on].append(await one_round(on, protect, 30, 300))
        for on in (False, True):
            new = statistics.median(f[0] for f in figures[on]) * 1000
            warm = statistics.median(f[1] for f in figures[on]) * 1000
            cpu = statistics.median(f[2] for f in figures[on]) * 1000
            print(
                f"  {'on ' if on else 'off'}  new session + first cell {new:7.2f} ms   "
                f"warm print(1+1) {warm:6.3f} ms   sandbox CPU per session {cpu:5.1f} ms   "
                f"(medians of {args.rounds} rounds)"
            )
    await watchdog_cost(10.0)
    print(f"\nload average at the end: {load()}")


if __name__ == "__main__":
    asyncio.run(main())
