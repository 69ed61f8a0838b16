"""Speed of the sandbox service over loopback HTTP, against the local sandbox in the same run.

For each state-protection mode (fast ``--no-protect-state`` and the default ``protect_state``),
one ``tir-agent sandbox serve`` subprocess is started, and measured in alternating rounds
against :class:`LocalSandbox` in this process with the same options (so a busy shared machine
slows both alike and the ratios stay fair):

1. warm ``print(1+1)`` latency at concurrency 1 (median, p90): ``LocalSandbox``,
   :class:`RemoteSandbox` over HTTP, and a raw keep-alive socket sending pre-built requests
   (tir-agent API and NeMo-Skills' ``/execute``), which shows the server's own cost without any
   client library;
2. trivial executions per second with 32 concurrent sessions: ``LocalSandbox``,
   ``RemoteSandbox``, and 32 raw keep-alive connections (median of the rounds).

``LocalSandbox`` is measured with plain cells and with IPython cells (``ipython=True``, what the
NeMo-Skills API's ``ipython`` language runs: IPython's ``run_cell``), and the raw-socket client
measures NeMo-Skills' ``/execute`` (IPython cells) beside the v1 API (plain cells).

With ``--nemo-skills``, NeMo-Skills' own server (``local_sandbox_server.py``, one Flask process,
threaded, from ``$NEMO_SKILLS_SRC``, default /tmp/nemo-skills, in ``$NEMO_VENV``, default
/tmp/nemo-venv: ``scripts/nemo_skills_compat.sh`` prepares both) is measured with the same
raw-socket ``/execute`` client in the same alternating rounds as the fast mode.

With ``--nginx``, the fast mode is also measured through a real nginx in front of two servers
(``render_nginx_config``), the layout NeMo-Skills deploys. Targets over loopback HTTP (issue #6):
warm median <= 0.6 ms and >= 1500 executions/s at 32 sessions; the NeMo-Skills service does
0.8 ms and 800-1000/s on this machine kind (REFERENCE.md §5).

Run: ``python benchmarks/sandbox_service.py`` (about a minute), ``--full`` (more rounds),
``--nginx`` (adds the nginx figures). The load average is printed before and after: on a shared
machine, compare runs made at a similar load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.scaleout.nginxproc import start_nginx
from tests.servers import start_server
from tir_agent.sandbox.config import SandboxConfig
from tir_agent.sandbox.local import LocalSandbox
from tir_agent.sandbox.remote import RemoteSandbox

TARGET_WARM_MS = 0.6
TARGET_RATE = 1500.0
SESSIONS = 32
API = {"X-TIR-Agent-API": "1"}

Runner = Callable[[], Awaitable[object]]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def machine() -> str:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cpus, load average {load}"


def build(method: str, path: str, headers: dict[str, str], body: Any) -> bytes:
    """A complete HTTP/1.1 request, built once and sent many times."""
    data = json.dumps(body).encode() if body is not None else b""
    head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    if body is not None:
        head.append("Content-Type: application/json")
    head.append(f"Content-Length: {len(data)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + data


def parse_head(head: bytes) -> tuple[int, int]:
    """(status, content length) of a reply head."""
    lines = head.split(b"\r\n")
    length = next(
        int(h.split(b":", 1)[1]) for h in lines[1:] if h.lower().startswith(b"content-length:")
    )
    return int(lines[0].split()[1]), length


class RawConnection:
    """One keep-alive connection on asyncio streams, sending pre-built requests."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> RawConnection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def send(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        status, length = parse_head(await self.reader.readuntil(b"\r\n\r\n"))
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


class RawSession:
    """A session of the v1 API (or of the NeMo-Skills API) driven by pre-built requests.
    ``one_shot``: a new connection per request, for NeMo-Skills' own server (Flask's development
    server closes every connection after its reply, and the shell process it forked for the
    session holds the socket open, so a reused connection would wait forever)."""

    def __init__(self, conn: RawConnection, sid: str, nemo: bool, code: str, port: int = 0) -> None:
        self.conn, self.sid, self.nemo, self.port = conn, sid, nemo, port
        self.conn_port = port
        if nemo:
            body = {"generated_code": code, "language": "ipython", "timeout": 10}
            self.request = build("POST", "/execute", {"X-Session-ID": sid}, body)
        else:
            headers = {**API, "X-Session-ID": sid}
            self.request = build("POST", f"/v1/sessions/{sid}/run", headers, {"code": code})

    @classmethod
    async def open(
        cls, port: int, sid: str, *, nemo: bool, code: str, one_shot: bool = False
    ) -> RawSession:
        conn = await RawConnection.open(port)
        if not nemo:
            status, body = await conn.send(
                build("POST", "/v1/sessions", {**API, "X-Session-ID": sid}, None)
            )
            assert status == 201, (status, body)
        if one_shot:
            conn.close()
        session = cls(conn, sid, nemo, code, port if one_shot else 0)
        session.conn_port = port
        return session

    async def send(self, request: bytes) -> tuple[int, bytes]:
        if not self.port:
            return await self.conn.send(request)
        conn = await RawConnection.open(self.port)
        try:
            return await conn.send(request)
        finally:
            conn.close()

    async def run(self) -> bytes:
        status, body = await self.send(self.request)
        assert status == 200, (status, body)
        return body

    async def close(self) -> None:
        path = f"/sessions/{self.sid}" if self.nemo else f"/v1/sessions/{self.sid}"
        request = build("DELETE", path, {**API, "X-Session-ID": self.sid}, None)
        try:
            await self.send(request)
        except (asyncio.IncompleteReadError, ConnectionError):
            # idle longer than the server's keep-alive while other pools ran: a new connection
            self.conn = await RawConnection.open(self.conn_port)
            await self.conn.send(request)
        if not self.port:
            self.conn.close()


# -- the two measurements, in rounds


async def warm_rounds(
    runners: dict[str, Runner], rounds: int, block: int
) -> dict[str, list[float]]:
    """Seconds per warm call of each runner; each round runs a block of each, in turn."""
    times: dict[str, list[float]] = {name: [] for name in runners}
    for run in runners.values():  # warm-up
        for _ in range(50):
            await run()
    for r in range(rounds):
        names = list(runners)
        names = names[r % len(names) :] + names[: r % len(names)]
        for name in names:
            run = runners[name]
            for _ in range(block):
                t = time.perf_counter()
                await run()
                times[name].append(time.perf_counter() - t)
    return times


async def rate_rounds(
    pools: dict[str, list[Runner]], rounds: int, seconds: float
) -> dict[str, list[float]]:
    """Calls per second of each pool of runners all busy at once; one round each, in turn."""
    rates: dict[str, list[float]] = {name: [] for name in pools}
    for r in range(rounds):
        names = list(pools)
        names = names[r % len(names) :] + names[: r % len(names)]
        for name in names:
            count = 0
            stop = time.perf_counter() + seconds

            async def loop(run: Runner, stop: float = stop) -> None:
                nonlocal count
                while time.perf_counter() < stop:
                    await run()
                    count += 1

            started = time.perf_counter()
            await asyncio.gather(*(loop(run) for run in pools[name]))
            rates[name].append(count / (time.perf_counter() - started))
    return rates


def warm_line(name: str, values: list[float]) -> float:
    med = statistics.median(values) * 1000
    print(
        f"  {name:<44} median {med:7.3f} ms   p90 {pct(values, 0.9) * 1000:7.3f} ms   (n={len(values)})"
    )
    return med


def rate_line(name: str, values: list[float]) -> float:
    med = statistics.median(values)
    spread = ", ".join(f"{v:.0f}" for v in values)
    print(f"  {name:<44} median {med:7.0f} /s   (rounds: {spread})")
    return med


def checked(run: Callable[[], Awaitable[Any]], check: Callable[[Any], bool]) -> Runner:
    async def call() -> None:
        result = await run()
        assert check(result), result

    return call


def printed_two(r: Any) -> bool:
    return bool(getattr(r, "stdout", None) == "2\n")


def completed(r: Any) -> bool:
    return bool(getattr(r, "status", None) == "completed")


def raw_printed_two(body: bytes) -> bool:
    return bool(json.loads(body)["stdout"] == "2\n")


# -- the run


@contextlib.contextmanager
def servers(count: int, *args: str) -> Iterator[list[Any]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(start_server(*args)) for _ in range(count)]


@contextlib.contextmanager
def nemo_skills_server() -> Iterator[int]:
    """NeMo-Skills' own server (their source and venv, see the module docstring); its port."""
    src = Path(os.environ.get("NEMO_SKILLS_SRC", "/tmp/nemo-skills"))
    python = Path(os.environ.get("NEMO_VENV", "/tmp/nemo-venv")) / "bin" / "python"
    where = src / "nemo_skills" / "code_execution" / "local_sandbox"
    if not (where / "local_sandbox_server.py").exists() or not python.exists():
        raise SystemExit(
            f"--nemo-skills needs their source in {src} and a venv at {python.parent.parent}: "
            "run scripts/nemo_skills_compat.sh theirs once (or set NEMO_SKILLS_SRC/NEMO_VENV)"
        )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = (
        f"import local_sandbox_server as s; s.app.run(host='127.0.0.1', port={port}, threaded=True)"
    )
    proc = subprocess.Popen(
        [str(python), "-c", code],
        cwd=where,
        env={**os.environ, "WORKER_NUM": "0"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # their shells are its children: stopped with it, as a group
    )
    try:
        for _ in range(120):
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
                break
            time.sleep(0.5)
        else:
            raise RuntimeError("NeMo-Skills' server did not become healthy")
        yield port
    finally:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, 9)
        proc.wait()


async def measure(
    targets: dict[str, Any],
    ports: dict[str, int],
    rounds: int,
    block: int,
    seconds: float,
    nemo_only: tuple[str, ...] = (),
) -> dict[str, float]:
    """Warm latency and rate of each sandbox in ``targets`` and of raw connections to each port
    in ``ports`` (NeMo-Skills' ``/execute`` only for names in ``nemo_only``), in alternating
    rounds. Returns medians by name (ms, /s)."""
    out: dict[str, float] = {}
    async with contextlib.AsyncExitStack() as stack:
        warm: dict[str, Runner] = {}
        for name, sandbox in targets.items():
            s = await stack.enter_async_context(sandbox.session())
            warm[name] = checked(functools.partial(s.run, "print(1+1)"), printed_two)
            if isinstance(sandbox, LocalSandbox):
                ipython = functools.partial(s.run, "print(1+1)", ipython=True)
                warm[f"{name}, IPython cells"] = checked(ipython, printed_two)
        for name, port in ports.items():
            for nemo in (False, True) if name not in nemo_only else (True,):
                api = "NeMo /execute" if nemo else "v1 run"
                raw = await RawSession.open(
                    port,
                    f"raw-{os.getpid()}-{name}-{nemo}",
                    nemo=nemo,
                    code="print(1+1)",
                    one_shot=name in nemo_only,
                )
                stack.push_async_callback(raw.close)
                warm[f"{name}: raw socket, {api}"] = checked(raw.run, raw_printed_two)
        times = await warm_rounds(warm, rounds, block)
        print(" warm print(1+1), one session at a time:")
        for name, values in times.items():
            out[f"warm {name}"] = warm_line(name, values)

        pools: dict[str, list[Runner]] = {}
        for name, sandbox in targets.items():
            sessions = [await sandbox.open_session() for _ in range(SESSIONS)]
            for s in sessions:
                stack.push_async_callback(s.close)
                await s.run("x = 1")
            pools[name] = [
                checked(functools.partial(s.run, "x = 1 + 1"), completed) for s in sessions
            ]
        for name, port in ports.items():
            for nemo in (False, True) if name not in nemo_only else (True,):
                raws = [
                    await RawSession.open(
                        port,
                        f"rate-{os.getpid()}-{name}-{nemo}-{i}",
                        nemo=nemo,
                        code="x = 1 + 1",
                        one_shot=name in nemo_only,
                    )
                    for i in range(SESSIONS)
                ]
                for raw in raws:
                    stack.push_async_callback(raw.close)
                    if nemo:
                        await raw.run()  # creates the session: not part of the timed rounds
                api = "NeMo /execute" if nemo else "v1 run"
                pools[f"{name}: raw sockets, {api}"] = [raw.run for raw in raws]
        rates = await rate_rounds(pools, rounds, seconds)
        print(f" executions/s of x = 1 + 1, {SESSIONS} concurrent sessions:")
        for name, values in rates.items():
            out[f"rate {name}"] = rate_line(name, values)
    return out


async def measure_mode(
    protect: bool, rounds: int, block: int, seconds: float, theirs: bool = False
) -> dict[str, float]:
    mode_args = [] if protect else ["--no-protect-state"]
    label = (
        "protect_state=True (default)" if protect else "protect_state=False (--no-protect-state)"
    )
    also = " and NeMo-Skills' own server" if theirs else ""
    print(f"\n[{label}: LocalSandbox in this process vs one server over HTTP{also}]")
    with contextlib.ExitStack() as stack:
        (server,) = stack.enter_context(servers(1, *mode_args, "--max-sessions", "128"))
        ports = {"http": server.port}
        if theirs:
            ports["nemo-skills"] = stack.enter_context(nemo_skills_server())
        async with (
            LocalSandbox(
                protect_state=protect,
                max_sessions=None,
                idle_timeout=None,
                preload=(*SandboxConfig.model_validate({}).preload, "IPython"),
            ) as local,
            RemoteSandbox(server.url) as remote,
        ):
            return await measure(
                {"local": local, "http": remote},
                ports,
                rounds,
                block,
                seconds,
                nemo_only=("nemo-skills",),
            )


async def measure_nginx(rounds: int, block: int, seconds: float) -> dict[str, float]:
    print("\n[protect_state=False: nginx in front of 2 servers vs one of them directly]")
    with (
        servers(2, "--no-protect-state", "--max-sessions", "128") as pair,
        start_nginx([s.url for s in pair]) as nginx,
    ):
        async with RemoteSandbox(pair[0].url) as direct, RemoteSandbox(nginx.url) as proxied:
            return await measure(
                {"http": direct, "nginx": proxied},
                {"http": pair[0].port, "nginx": nginx.port},
                rounds,
                block,
                seconds,
            )


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--full", action="store_true", help="more rounds (a few minutes)")
    parser.add_argument("--nginx", action="store_true", help="also measure 2 servers behind nginx")
    parser.add_argument(
        "--nemo-skills",
        action="store_true",
        help="also measure NeMo-Skills' own server (their source and venv, see the docstring)",
    )
    args = parser.parse_args()
    rounds, block, seconds = (10, 300, 1.0) if args.full else (4, 150, 0.5)
    command = " ".join(["python benchmarks/sandbox_service.py", *sys.argv[1:]])
    print(f"command: {command}")
    print(f"python {sys.version.split()[0]}, asyncio event loop; {machine()}")
    results = {
        p: await measure_mode(p, rounds, block, seconds, theirs=args.nemo_skills and not p)
        for p in (False, True)
    }
    via_nginx = await measure_nginx(rounds, block, seconds) if args.nginx else None

    print("\n[ratios in this run: latency HTTP / local, rate local / HTTP]")
    for protect, r in results.items():
        print(
            f"  protect_state={protect!s:<5}  warm x{r['warm http'] / r['warm local']:.2f} "
            f"({r['warm http'] - r['warm local']:+.3f} ms; raw socket "
            f"{r['warm http: raw socket, v1 run'] - r['warm local']:+.3f} ms)   "
            f"rate x{r['rate local'] / r['rate http']:.2f}"
        )
        print(
            f"  protect_state={protect!s:<5}  IPython cells: local warm "
            f"{r['warm local, IPython cells'] - r['warm local']:+.3f} ms over plain cells"
        )
        if "warm nemo-skills: raw socket, NeMo /execute" in r:
            ours = r["warm http: raw socket, NeMo /execute"]
            theirs = r["warm nemo-skills: raw socket, NeMo /execute"]
            rate_ours = r["rate http: raw sockets, NeMo /execute"]
            rate_theirs = r["rate nemo-skills: raw sockets, NeMo /execute"]
            print(
                f"  NeMo /execute (ipython), ours / NeMo-Skills' server: warm x{ours / theirs:.2f}"
                f" ({ours:.3f} / {theirs:.3f} ms), rate x{rate_ours / rate_theirs:.2f}"
                f" ({rate_ours:.0f} / {rate_theirs:.0f} /s)"
            )
    if via_nginx is not None:
        n = via_nginx
        print(
            f"  nginx in front: warm {n['warm nginx'] - n['warm http']:+.3f} ms, "
            f"rate x{n['rate nginx'] / n['rate http']:.2f} of one server directly"
        )
    print(
        f"\n[targets over loopback HTTP with RemoteSandbox: warm median <= {TARGET_WARM_MS} ms, "
        f">= {TARGET_RATE:.0f} executions/s at {SESSIONS} sessions]"
    )
    rows = [
        (f"one server, protect_state={p}", r["warm http"], r["rate http"])
        for p, r in results.items()
    ]
    if via_nginx is not None:
        rows.append(
            (
                "nginx + 2 servers, protect_state=False",
                via_nginx["warm nginx"],
                via_nginx["rate nginx"],
            )
        )
    for name, warm, rate in rows:
        print(
            f"  {name:<40} warm {warm:7.3f} ms {verdict(warm <= TARGET_WARM_MS):<6}  "
            f"{rate:6.0f}/s {verdict(rate >= TARGET_RATE)}"
        )
    print(f"\nmachine after the run: {machine()}")


if __name__ == "__main__":
    # The standard asyncio loop, as the server uses: LocalSandbox's session channel does not
    # accept uvloop's transports.
    asyncio.run(main())
