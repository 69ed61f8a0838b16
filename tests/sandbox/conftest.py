"""Real sandboxes for the engine tests: one fast and one protected sandbox per test module."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from tir_agent.sandbox.local import LocalSandbox

LIGHT: dict[str, Any] = {"preload": ("numpy",), "max_processes": 32, "memory_limit": 2 * 1024**3}
"""Settings of the shared test sandboxes (numpy preloaded: some tests use it)."""


def marker() -> str:
    """A unique string to put into a sandbox's config: it shows in every sandbox process' cmdline."""
    return f"tir-test-{uuid.uuid4().hex[:12]}"


def processes_with(mark: str) -> list[int]:
    """Pids (host view) of live processes whose command line contains ``mark``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{entry}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if mark.encode() in cmdline and state not in (b"Z", b"X"):
            found.append(int(entry))
    return found


def template_pid(mark: str) -> int:
    """The host's pid of the template of the sandbox marked ``mark``: the process running
    ``template_main`` whose parent does not (its sessions are forks of it)."""

    def runs_template(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return b"template_main" in f.read()
        except OSError:
            return False

    for pid in processes_with(mark):
        with open(f"/proc/{pid}/stat", "rb") as f:
            parent = int(f.read().rsplit(b")", 1)[1].split()[1])
        if runs_template(pid) and not runs_template(parent):
            return pid
    raise AssertionError(f"no template process marked {mark}")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fast() -> AsyncIterator[LocalSandbox]:
    """protect_state=False: cells run in the session's interpreter itself."""
    async with LocalSandbox(protect_state=False, **LIGHT) as sandbox:
        yield sandbox


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def protected() -> AsyncIterator[LocalSandbox]:
    """protect_state=True: each cell runs in a fork; timeouts and crashes roll back."""
    async with LocalSandbox(protect_state=True, **LIGHT) as sandbox:
        yield sandbox


@pytest.fixture(scope="module", params=["fast", "protected"])
def sandbox(request: pytest.FixtureRequest) -> LocalSandbox:
    """Both modes."""
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]
