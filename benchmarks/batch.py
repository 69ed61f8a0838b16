"""``tir-agent generate`` with the real default sandbox against the bare ``openai`` SDK (issue #14).

An instant OpenAI-compatible server (its own process) plays the model: each sample is two model
turns and one execution (a ``python_exec`` tool call printing a sum, then the boxed answer once the
tool result is in the conversation). In the same run we measure:

- ``bare``: the ``openai`` SDK alone, a hand-written loop making the same two calls per sample with
  no sandbox, ``--concurrency`` samples in flight, rows read from and written to JSONL;
- ``generate``: ``tir-agent generate`` (the real command, a subprocess) with its default sandbox
  (``LocalSandbox``, protected mode) and the same concurrency.

Both are timed as whole processes (start to exit, what a user waits for), alternating in
``--rounds`` rounds so a busy machine slows both alike; the best round of each counts. Then
``generate`` runs over ``--memory-sizes`` samples and its peak memory is reported: the peak RSS
of the ``tir-agent`` process (``wait4``) and the peak of its whole process tree (the sandbox's
template and sessions) as the kernel charged it to a memory cgroup around the run (cgroup v1;
also the peak of its PSS sampled every 0.5 s, a noisier cross-check). Each run also reports the
CPU of the whole machine per sample (``/proc/stat``, every process and kernel thread): the bare
SDK is bound by its one event loop (one core busy), ``generate`` by both cores.

Run: ``python benchmarks/batch.py`` (defaults: 2,000 samples, concurrency 64, memory at 1k and
10k samples). ``--profile FILE`` runs ``generate`` once under cProfile instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TOOL = {
    "type": "function",
    "function": {
        "name": "python_exec",
        "description": "Run Python code.",
        "parameters": {
            "type": "object",
            "properties": {"code": {"type": "string"}},
            "required": ["code"],
            "additionalProperties": False,
        },
    },
}

# -- the instant server (its own process) -----------------------------------------------------


def _reply(body: dict[str, Any]) -> bytes:
    """A chat completion: a tool call first, the boxed answer once a tool result is present."""
    messages = body["messages"]
    usage = {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
    if any(m.get("role") == "tool" for m in messages):
        message: dict[str, Any] = {"role": "assistant", "content": "So the answer is \\boxed{42}."}
        finish = "stop"
    else:
        code = json.dumps({"code": "print(6 * 7)\n"})
        call = {
            "id": "call_1",
            "type": "function",
            "function": {"name": "python_exec", "arguments": code},
        }
        message = {"role": "assistant", "content": "Let me compute.", "tool_calls": [call]}
        finish = "tool_calls"
    choice = {"index": 0, "message": message, "finish_reason": finish}
    reply = {
        "id": "x",
        "object": "chat.completion",
        "created": 1,
        "model": body.get("model", "m"),
        "choices": [choice],
        "usage": usage,
    }
    return json.dumps(reply).encode()


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            data = _reply(json.loads(await reader.readexactly(length)))
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                + str(len(data)).encode()
                + b"\r\n\r\n"
                + data
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def _serve(port: int) -> None:
    server = await asyncio.start_server(_handle, "127.0.0.1", port, backlog=4096)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


@contextlib.contextmanager
def instant_server() -> Iterator[str]:
    """Start the server process (uvloop when installed); yield its base URL; stop it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        process.wait(10)


# -- the bare SDK (its own process) ------------------------------------------------------------


async def _bare(base_url: str, source: Path, target: Path, concurrency: int) -> None:
    """Two calls per row with the SDK alone, ``concurrency`` rows in flight, rows in order."""
    import openai

    client = openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0)
    rows = [json.loads(line) for line in source.read_text().splitlines()]
    results: list[str | None] = [None] * len(rows)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(rows)):
        queue.put_nowait(i)

    async def solve(i: int) -> None:
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": "Solve with Python."},
            {"role": "user", "content": rows[i]["problem"]},
        ]
        first = await client.chat.completions.create(model="m", messages=messages, tools=[TOOL])  # type: ignore[arg-type,list-item]
        message = first.choices[0].message
        messages.append(message.model_dump(exclude_none=True))
        for call in message.tool_calls or ():
            messages.append({"role": "tool", "tool_call_id": call.id, "content": "42\n"})
        second = await client.chat.completions.create(model="m", messages=messages, tools=[TOOL])  # type: ignore[arg-type,list-item]
        results[i] = second.choices[0].message.content

    async def worker() -> None:
        while not queue.empty():
            await solve(queue.get_nowait())

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    with target.open("w") as f:
        for row, generation in zip(rows, results, strict=True):
            f.write(json.dumps({**row, "generation": generation}) + "\n")
    await client.close()


# -- the breakdown: generate in process with other sandboxes (its own process) -----------------


class ReusedSessions:
    """Hands out sessions of ``box`` again and again WITHOUT resetting them: an upper bound of what
    a pool of sessions could give. Unsafe (a sample sees the previous sample's state): only here."""

    def __init__(self, box: Any) -> None:
        self.box = box
        self.idle: list[Any] = []

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Any]:
        """A session of the pool, back to the pool afterwards."""
        session = self.idle.pop() if self.idle else await self.box.open_session()
        try:
            yield session
        finally:
            self.idle.append(session)

    async def run(self, code: str, **kwargs: Any) -> Any:
        """One-off code, in a fresh session."""
        return await self.box.run(code, **kwargs)


class NoSandbox:
    """Answers every cell with ``42`` without running it: the client's cost alone."""

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Any]:
        """A session that runs nothing."""
        yield self

    async def run(self, code: str, **kwargs: Any) -> Any:
        """The output ``print(6 * 7)`` would give."""
        from tir_agent.sandbox.result import ExecutionResult

        return ExecutionResult(status="completed", stdout="42\n")

    async def close(self) -> None:
        """Nothing to stop."""


async def _variant(name: str, base_url: str, source: Path, target: Path, concurrency: int) -> None:
    """``generate`` in this process with sandbox ``name``: new (a new session per sample), pool
    (what ``tir-agent generate`` uses: sessions reset and reused), reuse or none."""
    from tir_agent.batch import generate
    from tir_agent.config import load_config
    from tir_agent.sandbox.local import LocalSandbox
    from tir_agent.sandbox.pool import SessionPool

    config = load_config(
        overrides=["model=m", f"server_address={base_url}", "api_key=x", "max_retries=0",
                   f"max_concurrent_requests={concurrency}"],
        env={},
    )  # fmt: skip
    async with LocalSandbox(fork_ahead=False) as box:  # (as generate makes it)
        sandbox = {
            "new": box,
            "pool": SessionPool(box, concurrency),
            "reuse": ReusedSessions(box),
            "none": NoSandbox(),
        }[name]
        await generate(source, target, config, sandbox=sandbox)  # type: ignore[arg-type]


# -- measuring a process -----------------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _tree_pss_kib(root: int) -> int:
    """PSS of ``root`` and all its descendants, in KiB (shared pages counted once overall)."""
    tree, todo, total = _children(), [root], 0
    while todo:
        pid = todo.pop()
        todo += tree.get(pid, [])
        with contextlib.suppress(OSError, ValueError), open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    total += int(line.split()[1])
                    break
    return total


@dataclass
class Measured:
    """What one process run cost."""

    wall: float
    """Seconds from start to exit."""
    rss: float
    """Peak RSS of the process, MiB."""
    tree_pss: float
    """Peak PSS of the process and its descendants (sampled every 0.5 s), MiB. A cross-check:
    the walk over ~130 processes is not atomic (they fork, fault and exit while it reads them),
    so its maximum grows with the number of samples taken, that is with the run's length."""
    tree_windows: list[float]
    """Peak memory of the process and its descendants as charged by the kernel (the run's
    memory cgroup, see :func:`run_cgroups`), MiB, in each ``WINDOW`` of the run (about: they
    are read between two PSS samples; the last one shorter); empty without a v1 memory hierarchy."""

    @property
    def tree_peak(self) -> float:
        """Peak memory of the whole tree over the run, MiB (NaN if not measured)."""
        return max(self.tree_windows, default=float("nan"))

    cpu_self: float
    """CPU seconds of the process itself (user + system)."""
    machine: float
    """CPU seconds the whole machine was busy during the run (``/proc/stat``: every process,
    the model server and kernel threads included)."""
    cpu_children: float
    """CPU seconds of its descendants (the sandbox's processes): the process's cpuacct cgroup
    less its own time; NaN where no cgroup can be made (not root, no cgroup v1 cpuacct)."""


def _exit_cpu(pid: int) -> tuple[float, float]:
    """(own, children's) CPU seconds of an exited, not yet reaped process (its zombie's stat)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime) / tick, (cutime + cstime) / tick


CPUACCT = Path("/sys/fs/cgroup/cpuacct")
MEMORY = Path("/sys/fs/cgroup/memory")
WINDOW = 5.0
"""The tree's peak memory is read (and the kernel's peak reset) every 5 s:
the peaks of successive windows of a long run show whether memory grows with the samples done,
or only reaches a higher maximum because a longer run has more windows to reach it in."""


@contextlib.contextmanager
def run_cgroups() -> Iterator[tuple[Path | None, Path | None]]:
    """Fresh cgroups (v1) for one run: (cpuacct, memory), each None where we cannot make it;
    removed afterwards.

    The memory cgroup is made below this process's own (where ``LocalSandbox`` makes the
    sessions' memory cgroups too: below the cgroup of the process that starts it), so with
    ``memory.use_hierarchy`` its ``memory.max_usage_in_bytes`` is the kernel's own peak of
    everything the run's processes are charged for, taken at every charge: their anonymous
    memory (a page shared copy-on-write counts once), the files they write, their kernel memory.
    """
    groups: list[Path | None] = []
    own = _own_memory_cgroup()
    for parent, prefix in ((CPUACCT, "tir-bench"), (own, "tir-bench-mem")):
        if parent is not None:
            _remove_stale(parent, prefix)
        group = None if parent is None else parent / f"{prefix}-{os.getpid()}-{time.monotonic_ns()}"
        try:
            if group is not None:
                group.mkdir()
        except OSError:
            group = None
        groups.append(group)
    try:
        yield groups[0], groups[1]
    finally:
        for group in groups:
            if group is None:
                continue
            # the sandbox removes its sessions' cgroups below ours as it closes: wait for that
            deadline = time.monotonic() + 10
            while True:
                try:
                    group.rmdir()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        print(f"left behind: {group}", file=sys.stderr)
                        break
                    time.sleep(0.05)


def _remove_stale(parent: Path, prefix: str) -> None:
    """Remove the cgroups a killed run of this benchmark left below ``parent`` (named
    ``<prefix>-<pid>-<ns>`` after a process that is gone), with whatever its sandbox made below
    them, deepest first; a group that still has processes stays."""
    with contextlib.suppress(OSError):
        for entry in parent.iterdir():
            rest = entry.name.removeprefix(prefix + "-").split("-")
            if entry.name == rest[0] or len(rest) != 2 or not rest[0].isdigit():
                continue
            if Path(f"/proc/{rest[0]}").exists() or not entry.is_dir():
                continue
            for root, _, _ in sorted(os.walk(entry), key=lambda w: -w[0].count("/")):
                with contextlib.suppress(OSError):
                    os.rmdir(root)


def _own_memory_cgroup() -> Path | None:
    """This process's directory in the v1 memory hierarchy, if it uses hierarchical
    accounting; None otherwise (cgroup v2 only, or not mounted)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if "memory" in controllers.split(","):
                own = MEMORY / path.lstrip("/")
                if (own / "memory.use_hierarchy").read_text().strip() == "1":
                    return own
    return None


def run_measured(argv: list[str], env: dict[str, str]) -> Measured:
    """Run ``argv`` and measure it (wall time, memory, CPU of the process and its tree)."""
    with tempfile.TemporaryFile("w+") as err, run_cgroups() as (group, memory):
        procs = [str(g / "cgroup.procs") for g in (group, memory) if g is not None]

        def enter() -> None:
            for path in procs:
                Path(path).write_text(str(os.getpid()))

        started, busy = time.perf_counter(), _machine_busy()
        proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.DEVNULL, stderr=err, preexec_fn=enter
        )
        peak_tree = 0
        stop = threading.Event()

        windows: list[float] = []
        peak_file = None if memory is None else memory / "memory.max_usage_in_bytes"

        def sample() -> None:
            nonlocal peak_tree
            window_end = time.monotonic() + WINDOW
            while not stop.wait(0.5):
                peak_tree = max(peak_tree, _tree_pss_kib(proc.pid))
                if peak_file is not None and time.monotonic() >= window_end:
                    window_end += WINDOW
                    with contextlib.suppress(OSError):  # the peak of the window, then a new one
                        windows.append(int(peak_file.read_text()) / 2**20)
                        peak_file.write_text("0")

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        cpu_self, _ = _exit_cpu(proc.pid)
        _, status, usage = os.wait4(proc.pid, 0)
        cpu_children = float("nan")
        if group is not None:
            # the sandbox's last processes may still be on their way out
            deadline = time.monotonic() + 10
            while (group / "cgroup.procs").read_text().strip() and time.monotonic() < deadline:
                time.sleep(0.05)
            total = int((group / "cpuacct.usage").read_text()) / 1e9
            cpu_children = max(0.0, total - cpu_self)
        wall, busy = time.perf_counter() - started, _machine_busy() - busy
        stop.set()
        sampler.join()  # (before the last window: it must not reset the peak after it)
        if peak_file is not None:
            windows.append(int(peak_file.read_text()) / 2**20)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read()
    if proc.returncode != 0:
        raise SystemExit(f"{argv[:4]} failed with {proc.returncode}:\n{text[-3000:]}")
    return Measured(
        wall, usage.ru_maxrss / 1024, peak_tree / 1024, windows, cpu_self, busy, cpu_children
    )


def _machine_busy() -> float:
    """CPU seconds all cores have spent busy (not idle or waiting for I/O) since boot."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def write_input(path: Path, n: int) -> Path:
    """``n`` rows ``{"id", "problem"}``."""
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"id": i, "problem": f"What is {i} + {2 * i}?"}) + "\n")
    return path


def generate_argv(base_url: str, source: Path, target: Path, concurrency: int) -> list[str]:
    """``tir-agent generate`` as a new user runs it, against the instant server."""
    return [
        sys.executable, "-m", "tir_agent.cli", "generate", "-i", str(source), "-o", str(target),
        "--model", "m", "--base-url", base_url, "--concurrency", str(concurrency),
        "++max_retries=0",
    ]  # fmt: skip


def check_output(path: Path, n: int) -> None:
    """Every sample done, in order, with one execution and the answer."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["id"] for r in rows] == list(range(n)), "rows missing or out of order"
    bad = [r for r in rows if "42" not in (r.get("generation") or "")]
    assert not bad, f"{len(bad)} samples without the answer, e.g. {bad[0]}"
    if "code_rounds_executed" in rows[0]:
        assert all(r["code_rounds_executed"] == 1 for r in rows), "an execution is missing"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("-n", type=int, default=2000, help="samples per throughput run")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; best counts")
    parser.add_argument(
        "--memory-sizes", default="1000,10000", help="sample counts for peak memory ('' = none)"
    )
    parser.add_argument("--profile", metavar="FILE", help="run generate once under cProfile")
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also run generate in process with a new session per sample, with the pool of "
        "reset sessions generate uses, with sessions reused without reset (unsafe) and with "
        "no sandbox",
    )
    parser.add_argument("--variant", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--bare", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        with contextlib.suppress(ImportError):
            import uvloop

            uvloop.install()
        asyncio.run(_serve(args.serve))
        return
    if args.variant:
        name, base_url, source, target = args.variant
        asyncio.run(_variant(name, base_url, Path(source), Path(target), args.concurrency))
        return
    if args.bare:
        base_url, source, target = args.bare
        asyncio.run(_bare(base_url, Path(source), Path(target), args.concurrency))
        return

    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    print(f"load average before: {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp, instant_server() as base_url:
        work = Path(tmp)
        source = write_input(work / "in.jsonl", args.n)
        if args.profile:
            argv = generate_argv(base_url, source, work / "out.jsonl", args.concurrency)
            argv[1:3] = ["-m", "cProfile", "-o", args.profile, "-m", "tir_agent.cli"]
            m = run_measured(argv, env)
            print(
                f"profiled generate: {args.n / m.wall:.1f} samples/s under cProfile -> {args.profile}"
            )
            return
        best: dict[str, float] = {"bare": 0.0, "generate": 0.0}
        for r in range(args.rounds):
            for name in ("bare", "generate"):
                out = work / f"{name}.jsonl"
                out.unlink(missing_ok=True)
                if name == "bare":
                    argv = [sys.executable, __file__, "--concurrency", str(args.concurrency),
                            "--bare", base_url, str(source), str(out)]  # fmt: skip
                else:
                    argv = generate_argv(base_url, source, out, args.concurrency)
                m = run_measured(argv, env)
                check_output(out, args.n)
                rate = args.n / m.wall
                best[name] = max(best[name], rate)
                print(
                    f"round {r + 1} {name:8s} {rate:7.1f} samples/s  ({m.wall:.1f} s; CPU ms per "
                    f"sample: {1e3 * m.cpu_self / args.n:.1f} client, "
                    f"{1e3 * m.cpu_children / args.n:.1f} sandbox, "
                    f"{1e3 * m.machine / args.n:.1f} machine; peak RSS {m.rss:.0f} MiB, "
                    f"tree {m.tree_peak:.0f} MiB (PSS sampled {m.tree_pss:.0f}); "
                    f"load {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
        ratio = best["generate"] / best["bare"] if args.rounds else float("nan")
        print(
            f"\nbest: bare {best['bare']:.1f} samples/s, generate {best['generate']:.1f} "
            f"samples/s, ratio {ratio:.2f} (goal >= 0.5)"
        )
        if args.breakdown:
            print("\nin process, by sandbox (CPU ms per sample: client, sandbox processes):")
            for r in range(args.rounds):
                for name in ("new", "pool", "reuse", "none"):
                    out = work / f"{name}.jsonl"
                    out.unlink(missing_ok=True)
                    argv = [sys.executable, __file__, "--concurrency", str(args.concurrency),
                            "--variant", name, base_url, str(source), str(out)]  # fmt: skip
                    m = run_measured(argv, env)
                    check_output(out, args.n)
                    print(
                        f"round {r + 1} {name:8s} {args.n / m.wall:7.1f} samples/s  "
                        f"{1e3 * m.cpu_self / args.n:5.1f} client, "
                        f"{1e3 * m.cpu_children / args.n:5.1f} sandbox; "
                        f"load {os.getloadavg()[0]:.1f}",
                        flush=True,
                    )
        sizes = [int(s) for s in args.memory_sizes.split(",") if s]
        peaks: list[tuple[int, float, float, float]] = []
        windows: list[float] = []
        for size in sizes:
            sized = write_input(work / f"in-{size}.jsonl", size)
            out = work / f"mem-{size}.jsonl"
            m = run_measured(generate_argv(base_url, sized, out, args.concurrency), env)
            check_output(out, size)
            peaks.append((size, m.rss, m.tree_peak, m.tree_pss))
            windows = m.tree_windows
            print(
                f"generate {size:6d} samples: peak RSS {m.rss:.0f} MiB, tree {m.tree_peak:.0f} "
                f"MiB (PSS sampled {m.tree_pss:.0f}), {size / m.wall:.1f} samples/s, load "
                f"{os.getloadavg()[0]:.1f}; tree peak of each {WINDOW:.0f} s: "
                + " ".join(f"{w:.0f}" for w in m.tree_windows),
                flush=True,
            )
        if len(peaks) >= 2:
            (n0, rss0, tree0, pss0), (n1, rss1, tree1, pss1) = peaks[0], peaks[-1]
            print(
                f"peak {n1} vs {n0} samples: RSS of tir-agent {rss1 / rss0:.2f}x, its tree "
                f"{tree1 / tree0:.2f}x (goal: within 10%); PSS sampled {pss1 / pss0:.2f}x"
            )
        steady = windows[1:-1]  # without the start (sessions still opening) and the last bit
        if len(steady) >= 6:
            third = len(steady) // 3
            first, last = statistics.median(steady[:third]), statistics.median(steady[-third:])
            print(
                f"growth within the {sizes[-1]}-sample run: median window peak {first:.0f} MiB "
                f"in its first third, {last:.0f} MiB in its last ({last / first:.2f}x)"
            )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
