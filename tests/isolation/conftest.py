"""Fixtures for the isolation tests: real bubblewrap sandboxes and a real confining template."""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tir_agent.sandbox import isolation
from tir_agent.sandbox.config import SandboxConfig

ZYGOTE_SOURCE = (Path(__file__).parent / "_zygote.py").read_text()
PACKAGE_PARENT = str(Path(isolation.__file__).resolve().parent.parent.parent)
TEST_CONFIG = SandboxConfig(max_processes=16, memory_limit=1024**3, max_open_files=64)


@pytest.fixture(scope="session")
def config() -> SandboxConfig:
    return TEST_CONFIG


_uid_block: list[isolation.UidBlock] = []


def own_uids(p: isolation.Protections) -> isolation.Protections:
    """``p`` with a uid block reserved for this test run, as LocalSandbox does (other sandboxes
    on this shared machine may be using any other block). Released when pytest exits."""
    if not _uid_block:
        _uid_block.append(isolation.reserve_uid_block())
        atexit.register(_uid_block[0].release)  # removes its lock file too
    return dataclasses.replace(p, uid_base=_uid_block[0].base)


def detect(config: SandboxConfig, mechanism: str) -> isolation.Protections:
    """detect_protections restricted to one mechanism; checks it is really the one in use."""
    mechanisms = () if mechanism == "none" else (mechanism,)
    p = isolation.detect_protections(config, mechanisms=mechanisms)  # type: ignore[arg-type]
    assert p.mechanism == mechanism, p.table()
    return own_uids(p)


@pytest.fixture(scope="session")
def protections(config: SandboxConfig) -> isolation.Protections:
    """What this host offers by default (bubblewrap here), with a uid block of our own."""
    return own_uids(isolation.detect_protections(config))


def run_wrapped(
    code: str,
    config: SandboxConfig,
    protections: isolation.Protections,
    *,
    env: dict[str, str] | None = None,
    timeout: float = 30,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -I -c code`` through template_command, as the engine starts its template."""
    argv = [config.python, "-I", "-c", code]
    return subprocess.run(
        isolation.template_command(argv, config, protections),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


class Template:
    """A running test template (tests/isolation/_zygote.py) inside the real sandbox."""

    def __init__(self, config: SandboxConfig, protections: isolation.Protections) -> None:
        argv = [
            config.python,
            "-I",
            "-c",
            ZYGOTE_SOURCE,
            PACKAGE_PARENT,
            json.dumps(protections.to_dict()),
            config.model_dump_json(),
        ]
        self.proc = subprocess.Popen(
            isolation.template_command(argv, config, protections),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        hello = self.request_raw_line()
        assert hello.get("ready"), hello
        self.pid = int(hello["pid"])

    def request_raw_line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"template died (exit code {self.proc.poll()})"
        reply: dict[str, Any] = json.loads(line)
        return reply

    def run(self, code: str, **fields: Any) -> dict[str, Any]:
        """Fork a confined session, run ``code`` in it, clean up; return the template's report."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"code": code, **fields}) + "\n")
        self.proc.stdin.flush()
        reply = self.request_raw_line()
        assert "harness_error" not in reply, reply["harness_error"]
        return reply

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def template(config: SandboxConfig, protections: isolation.Protections) -> Iterator[Template]:
    t = Template(config, protections)
    try:
        yield t
    finally:
        t.close()


def session_processes(protections: isolation.Protections) -> list[int]:
    """Host pids running as any uid of this sandbox's block (must be none after every test)."""
    uids = {isolation.session_uid(slot, protections) for slot in range(8)}
    return [pid for uid in uids for pid in isolation.pids_of_uid(uid)]


def reachable_by_others(path: str) -> bool:
    """Whether a uid other than the owner can reach ``path`` (every ancestor has o+x)."""
    real = Path(os.path.realpath(path))
    return all(p.stat().st_mode & 0o001 for p in real.parents)
