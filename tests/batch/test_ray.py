"""``generate`` on a real local Ray cluster (no mock of Ray): actors with real sandboxes.

One cluster for the module (about 1 GB and a few seconds to start): 4 logical CPUs, a small object
store, no dashboard. Tests in this process use it directly; the ``tir-agent`` subprocesses join it
through ``RAY_ADDRESS``, so ``kill -9`` of such a driver leaves the cluster up, as on a real one.
The model is the scripted server on a loopback port (the actors are other processes).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.batch.server import HTTPModel, ReactiveServer, problems
from tests.cli.test_crash import finished
from tir_agent.batch import generate, journal_path
from tir_agent.batch.cluster import default_actors
from tir_agent.config import load_config

ray = pytest.importorskip("ray", reason="the Ray backend is an extra: pip install 'tir-agent[ray]'")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
CPUS = 4


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A local Ray cluster for the module (its files in a temporary directory, removed after);
    yields its address."""
    temp = tempfile.mkdtemp(prefix="tir-ray-")  # short: Ray puts unix sockets in it
    ray.init(
        num_cpus=CPUS,
        object_store_memory=80 * 1024**2,
        include_dashboard=False,
        logging_level="warning",
        log_to_driver=False,
        _temp_dir=temp,
    )
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def write_input(tmp_path: Path, n: int) -> Path:
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in problems(n)))
    return inp


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


class Recorder:
    """A progress receiver that keeps what the engine told it."""

    def __init__(self) -> None:
        self.started: tuple[int, int] | None = None
        self.records: list[Mapping[str, Any]] = []

    def start(self, total: int, done: int) -> None:
        self.started = (total, done)

    def update(self, record: Mapping[str, Any]) -> None:
        self.records.append(record)

    def close(self) -> None:
        pass


def config(model: HTTPModel, *extra: str) -> Any:
    return load_config(
        overrides=["model=scripted", f"server_address={model.base_url}", "api_key=k",
                   "prompt_config=generic/math", "max_retries=0", "ray.enabled=true", *extra],
        env={},
    )  # fmt: skip


def wait_for_cpus(expected: float, timeout: float = 90) -> bool:
    """Until the actors of finished or killed drivers have given their CPU back."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ray.available_resources().get("CPU", 0) >= expected:
            return True
        time.sleep(0.5)
    return False


def processes_with(marker: str) -> list[int]:
    """Pids whose command line holds ``marker`` (a sandbox template carries its config's env)."""
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                cmdline = Path(f"/proc/{entry.name}/cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline:
                pids.append(int(entry.name))
    return pids


async def test_samples_spread_over_actors_with_real_sandboxes(cluster: str, tmp_path: Path) -> None:
    n = 24
    inp, out = write_input(tmp_path, n), tmp_path / "out.jsonl"
    progress = Recorder()
    with HTTPModel(ReactiveServer()) as model:
        summary = await generate(
            inp, out, config(model, "ray.actors=2", "max_concurrent_requests=3"), progress=progress
        )
        counts = dict(model.scripted.per_problem)
    rows = read(out)
    assert [r["id"] for r in rows] == list(range(n))  # every sample once, in input order
    assert all(r["predicted_answer"] == r["expected_answer"] for r in rows)
    assert all(r["code_rounds_executed"] == 1 and "error" not in r for r in rows)  # real sandbox
    assert set(counts.values()) == {2}  # two model calls per sample, none redone
    assert summary.generated == n and progress.started == (n, 0) and len(progress.records) == n
    assert not journal_path(out).exists()
    assert wait_for_cpus(CPUS)  # the actors were stopped


async def test_rate_limit_holds_for_the_whole_run(cluster: str, tmp_path: Path) -> None:
    # 20 samples of one request each at 300/min: the driver's bucket holds one second (5
    # requests), so the run needs at least (20 - 5) / 5 = 3 s whatever the number of actors. Had
    # each of the 3 actors limited itself, 1 s would do.
    inp, out = write_input(tmp_path, 20), tmp_path / "out.jsonl"
    with HTTPModel(ReactiveServer(direct=True)) as model:
        options = ("code_execution=false", "ray.actors=3", "requests_per_minute=300")
        async with _timer() as elapsed:
            await generate(inp, out, config(model, *options))
    assert [r["id"] for r in read(out)] == list(range(20))
    assert elapsed() >= 3.0


async def test_chunks_on_ray_merge_like_local_ones(cluster: str, tmp_path: Path) -> None:
    inp, out = write_input(tmp_path, 7), tmp_path / "out.jsonl"
    with HTTPModel(ReactiveServer(direct=True)) as model:
        for k in (1, 0):
            chunked = config(model, "code_execution=false", "num_chunks=2", f"chunk_id={k}")
            await generate(inp, out, chunked)
        counts = dict(model.scripted.per_problem)
    assert [r["id"] for r in read(out)] == list(range(7))
    assert set(counts.values()) == {1} and len(counts) == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl"]


class _timer:
    """``async with _timer() as elapsed``: seconds spent inside the block, afterwards."""

    async def __aenter__(self) -> Any:
        self.start = time.monotonic()
        self.end: float | None = None
        return lambda: (self.end or time.monotonic()) - self.start

    async def __aexit__(self, *exc: object) -> None:
        self.end = time.monotonic()


def test_kill_9_of_the_driver_then_resume(cluster: str, tmp_path: Path) -> None:
    n = 40
    inp, out = write_input(tmp_path, n), tmp_path / "out.jsonl"
    marker = f"tir-ray-test-{uuid.uuid4().hex[:12]}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": cluster}
    with HTTPModel(ReactiveServer(delay=0.05)) as model:
        argv = [
            sys.executable, "-m", "tir_agent.cli", "generate", "--input", str(inp),
            "--output", str(out), "--model", "scripted", "--base-url", model.base_url,
            "++prompt_config=generic/math", "++max_retries=0", "--no-progress", "--ray",
            "++ray.actors=2", "--concurrency", "2", f"++sandbox.env.MARK={marker}",
        ]  # fmt: skip
        log = tmp_path / "first.log"
        with log.open("w") as err:
            proc = subprocess.Popen(argv, env=env, stderr=err)
            deadline = time.monotonic() + 240
            while len(finished(journal_path(out))) < 4 and time.monotonic() < deadline:
                assert proc.poll() is None, log.read_text()
                time.sleep(0.05)
            proc.kill()
            proc.wait()
        done = finished(journal_path(out))
        assert 4 <= len(done) < n and not out.exists()
        # Ray ends the dead driver's actors, and their sandboxes go with them
        assert wait_for_cpus(CPUS)
        deadline = time.monotonic() + 60
        while processes_with(marker) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert processes_with(marker) == []
        seen = dict(model.scripted.per_problem)  # nothing of the first run is left to ask
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=400)
        assert result.returncode == 0, result.stderr
        counts = dict(model.scripted.per_problem)
    rows = read(out)
    assert [r["id"] for r in rows] == list(range(n))
    assert all(r["predicted_answer"] == r["expected_answer"] for r in rows)
    names = {r["id"]: r["problem"] for r in rows}
    for index in done:  # finished before the kill: kept, never requested again
        assert counts[names[index]] == seen[names[index]], index
    for index in set(range(n)) - done:  # the others: done once more (two model calls)
        assert counts[names[index]] - seen.get(names[index], 0) == 2, index
    assert f"{n - len(done)} samples generated, {len(done)} kept" in result.stderr
    assert wait_for_cpus(CPUS) and processes_with(marker) == []


def test_default_actor_count_is_one_per_cpu_group_of_each_node() -> None:
    nodes = [
        {"Alive": True, "Resources": {"CPU": 16.0}},
        {"Alive": True, "Resources": {"CPU": 2.0}},  # a small node still gets one
        {"Alive": False, "Resources": {"CPU": 64.0}},  # a dead one none
    ]
    assert default_actors(nodes, 4) == 5
    assert default_actors(nodes, 8) == 3
    assert default_actors([], 4) == 1


def test_an_unreachable_cluster_is_a_clear_error(tmp_path: Path) -> None:
    # in a subprocess: this process may be connected to the module's cluster already, and a
    # process connected to Ray keeps using that connection whatever ray.address says
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    inp = write_input(tmp_path, 2)
    argv = [sys.executable, "-m", "tir_agent.cli", "generate", "-i", str(inp), "-o",
            str(tmp_path / "out.jsonl"), "--model", "m", "++api_key=k", "--ray", "--no-progress"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": f"127.0.0.1:{port}"}
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port}" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]
