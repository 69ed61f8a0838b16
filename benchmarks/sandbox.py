"""Speed and memory of :class:`~tir_agent.sandbox.local.LocalSandbox`, both state-protection modes.

Measured in one run, each against its baseline:

1. warm execution of ``print(1+1)`` in a session, against a fresh ``python -I -c`` subprocess:
   back to back, and in the agent's pattern (a pause of 5-50 ms before each cell, as while the
   model writes the next one: protected mode forks the next cell's runner in such a pause);
   and against the least a round trip to a warm interpreter costs here, with and without those
   pauses (a plain Python child compiling the cell and returning its output from a pipe);
2. a new session running a first cell that uses numpy and sympy, against a fresh subprocess doing
   the same;
3. trivial executions per second with 32 concurrent sessions;
4. memory per idle session not shared with the template: USS (``Private_Clean + Private_Dirty``
   of ``/proc/PID/smaps_rollup``) of the session's supervisor, holder and pre-forked runner;
5. protected mode only: the floor its copies set, measured in a cell of a session (so on the
   same interpreter, numpy and sympy loaded): how long ``os.fork()`` takes the parent, and the
   CPU of a fork and the exit of the child (the process's and its reaped children's). A
   protected cell costs at least one of each, so the number of cpus divided by that CPU bounds
   its executions/s, and a cell sent right after the previous result waits at least for a fork.

Run: ``python benchmarks/sandbox.py`` (quick, under a minute) or ``--full`` (more samples).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tir_agent.sandbox.local import LocalSandbox

FIRST_CELL = "import numpy as np\nimport sympy as sp\nprint(np.arange(4).sum(), sp.factorint(360))"


FORK_FLOOR = """\
import os, resource, statistics, time
def cpu():
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
took, n, start, until = [], 0, cpu(), time.perf_counter() + {seconds}
while time.perf_counter() < until:
    t = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    took.append(time.perf_counter() - t)
    os.waitpid(pid, 0)
    n += 1
print(statistics.median(took), (cpu() - start) / n, n)
"""
"""A cell that forks the session's interpreter (a child that exits at once) for ``seconds``:
prints the parent's median fork time, the CPU per fork and exit, and the count."""


BARE_CHILD = """\
import os, socket, sys
sock = socket.socket(fileno=int(sys.argv[1]))
read_end, write_end = os.pipe()
os.set_blocking(read_end, False)
os.dup2(write_end, 1)
sys.stdout = open(1, "w", buffering=1)
namespace = {}
while True:
    code = sock.recv(65536).decode()
    if not code:
        break
    exec(compile(code, "<cell>", "exec"), namespace)
    sock.send(os.read(read_end, 65536))
"""
"""The least a warm session can do for a cell: a plain Python child that reads the code from a
socket, compiles and runs it with its output into a pipe, and sends back what the pipe holds."""


async def bare_round_trips(n: int, pauses: random.Random | None) -> list[float]:
    """``print(1+1)`` through :data:`BARE_CHILD`, back to back or after the pauses drawn from
    ``pauses`` (5-50 ms, as in the sandbox's paced figure): what this machine charges for a
    round trip to a warm interpreter, with nothing of the sandbox in it."""
    host, child = socket.socketpair()
    proc = subprocess.Popen(
        [sys.executable, "-I", "-c", BARE_CHILD, str(child.fileno())], pass_fds=[child.fileno()]
    )
    child.close()
    host.setblocking(False)
    loop = asyncio.get_running_loop()
    took = []
    try:
        for i in range(n + 20):
            if pauses is not None:
                await asyncio.sleep(pauses.uniform(0.005, 0.05))
            t = time.perf_counter()
            await loop.sock_sendall(host, b"print(1+1)")
            assert await loop.sock_recv(host, 65536) == b"2\n"
            if i >= 20:  # the first ones warm it up
                took.append(time.perf_counter() - t)
    finally:
        host.close()
        proc.wait()
    return took


def load() -> str:
    """The load average: the figures move with whatever else runs on the machine."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def line(name: str, values: list[float], unit: str = "ms", scale: float = 1000.0) -> float:
    med = statistics.median(values) * scale
    print(
        f"  {name:<44} median {med:9.3f} {unit}   p90 {pct(values, 0.9) * scale:9.3f} {unit}   (n={len(values)})"
    )
    return med


def subprocess_times(code: str, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-I", "-c", code], check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t)
    return times


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    stack = [pid]
    while stack:
        p = stack.pop()
        for task in os.listdir(f"/proc/{p}/task"):
            try:
                with open(f"/proc/{p}/task/{task}/children") as f:
                    kids = [int(x) for x in f.read().split()]
            except OSError:
                kids = []
            out.extend(kids)
            stack.extend(kids)
    return out


def uss_kib(pid: int) -> int:
    total = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for row in f:
            if row.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(row.split()[1])
    return total


async def measure_mode(protect: bool, n_warm: int, n_new: int, seconds: float) -> dict[str, float]:
    mode = "protect_state=True " if protect else "protect_state=False"
    print(f"\n[{mode}]")
    out: dict[str, float] = {}
    async with LocalSandbox(protect_state=protect, max_sessions=None, idle_timeout=None) as sandbox:
        async with sandbox.session() as s:
            for _ in range(20):
                await s.run("print(1+1)")
            warm = []
            for _ in range(n_warm):
                t = time.perf_counter()
                r = await s.run("print(1+1)")
                warm.append(time.perf_counter() - t)
                assert r.stdout == "2\n", r
            out["warm"] = line("warm print(1+1)", warm)
            pauses = random.Random(13)  # the same pauses in every run
            paced = []
            for _ in range(max(50, n_warm // 5)):
                await asyncio.sleep(pauses.uniform(0.005, 0.05))
                t = time.perf_counter()
                r = await s.run("print(1+1)")
                paced.append(time.perf_counter() - t)
                assert r.stdout == "2\n", r
            out["paced"] = line("warm print(1+1), 5-50 ms pauses", paced)
            if protect:
                r = await s.run(FORK_FLOOR.format(seconds=seconds / 2), timeout=30)
                assert r.status == "completed", r
                fork, cpu, n = (float(v) for v in r.stdout.split())
                cores = os.cpu_count() or 1
                out["fork"], out["ceiling"] = fork * 1000, cores / cpu
                print(
                    f"  {'fork + exit of the session interpreter':<44} median {fork * 1000:9.3f} ms "
                    f"to fork, {cpu * 1000:.2f} ms CPU per fork and exit (n={n:.0f})\n"
                    f"  {'  so: back to back waits at least':<44} {fork * 1000:9.3f} ms, "
                    f"and at most {cores / cpu:.0f} executions/s on {cores} cpus"
                )

        new = []
        for _ in range(n_new):
            t = time.perf_counter()
            async with sandbox.session() as s:
                r = await s.run(FIRST_CELL)
                new.append(time.perf_counter() - t)
                assert r.status == "completed", r
        out["new"] = line("new session + first numpy/sympy cell", new)

        sessions = [await sandbox.open_session() for _ in range(32)]
        count = 0
        stop = time.perf_counter() + seconds

        async def loop(s: object) -> None:
            nonlocal count
            while time.perf_counter() < stop:
                await s.run("x = 1 + 1")  # type: ignore[attr-defined]
                count += 1

        started = time.perf_counter()
        await asyncio.gather(*(loop(s) for s in sessions))
        rate = count / (time.perf_counter() - started)
        print(f"  {'executions/s, 32 concurrent sessions':<44} {rate:9.0f} /s")
        out["rate"] = rate

        await asyncio.sleep(0.3)  # idle: pre-forked runners are in place
        zygote = sandbox.template_pid
        assert zygote is not None
        supervisors = _children(zygote)
        per_session = [sum(uss_kib(p) for p in [sv, *descendants(sv)]) for sv in supervisors]
        procs = statistics.median([1 + len(descendants(sv)) for sv in supervisors])
        rss_template = uss_kib(zygote)
        mib = [k / 1024 for k in per_session]
        print(
            f"  {'unshared memory per idle session':<44} median {statistics.median(mib):9.2f} MiB   "
            f"p90 {pct(mib, 0.9):9.2f} MiB   ({procs:.0f} processes each; template USS {rss_template / 1024:.0f} MiB)"
        )
        out["mem"] = statistics.median(mib)
        for s in sessions:
            await s.close()
    return out


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            kids.extend(int(x) for x in f.read().split())
    return kids


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="more samples (a few minutes)")
    args = parser.parse_args()
    n_warm, n_new, seconds, n_sub = (3000, 200, 5.0, 30) if args.full else (500, 40, 2.0, 10)
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, load average {load()}; "
        f"command: python benchmarks/sandbox.py{' --full' if args.full else ''}"
    )
    print("\n[baselines]")
    base_warm = line("fresh `python -I -c 'print(1+1)'`", subprocess_times("print(1+1)", n_sub))
    bare = line("warm bare interpreter, print(1+1)", await bare_round_trips(n_warm, None))
    bare_paced = line("  the same, 5-50 ms pauses", await bare_round_trips(100, random.Random(13)))
    base_new = line(
        "fresh subprocess importing numpy+sympy", subprocess_times(FIRST_CELL, max(3, n_sub // 3))
    )
    results = {p: await measure_mode(p, n_warm, n_new, seconds) for p in (False, True)}
    print(f"\nload average at the end: {load()} (1, 5, 15 min; {os.cpu_count()} cpus)")
    print("\n[ratios: baseline / sandbox, higher is better]")
    print(
        f"  (a warm bare interpreter: {bare:.3f} ms back to back, {bare_paced:.3f} ms after 5-50 ms "
        f"pauses: the least a round trip costs on this machine)"
    )
    for p, r in results.items():
        print(
            f"  protect_state={p!s:<5}  warm x{base_warm / r['warm']:.0f}   new session x{base_new / r['new']:.0f}"
            f"   targets: warm<=0.3ms {'ok' if r['warm'] <= 0.3 else 'MISSED'}, "
            f"paced<=0.3ms {'ok' if r['paced'] <= 0.3 else 'MISSED'}, new<=15ms "
            f"{'ok' if r['new'] <= 15 else 'MISSED'}, >=3000/s {'ok' if r['rate'] >= 3000 else 'MISSED'}, "
            f"<=10MiB {'ok' if r['mem'] <= 10 else 'MISSED'}"
        )
        if "fork" in r:  # how close protected mode comes to the floor of a fork per cell
            print(
                f"  {'':<20} against its floor: back to back {r['warm'] / r['fork']:.1f}x the fork, "
                f"{r['rate'] / r['ceiling']:.0%} of the {r['ceiling']:.0f}/s that a fork and an exit "
                f"per cell allow"
            )


if __name__ == "__main__":
    asyncio.run(main())
