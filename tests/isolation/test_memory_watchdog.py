"""The memory watchdog's bookkeeping (_memory.py) on this host's real /proc. The watchdog at
work, through LocalSandbox, is in tests/sandbox/test_attacks_memory.py."""

from __future__ import annotations

import os

import pytest

from tir_agent.sandbox import _memory


def test_the_largest_processes_go_until_the_rest_fit() -> None:
    usage = {1: 50, 2: 300, 3: 120, 4: 10}
    assert _memory.over_limit(usage, 1000) == []
    assert _memory.over_limit(usage, 200) == [2]
    assert _memory.over_limit(usage, 50) == [2, 3, 1]


def test_root_processes_are_looked_up_again_only_every_few_scans(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = _memory.process_status
    looked: list[str] = []

    def counting(pid: str) -> tuple[int, int] | None:
        looked.append(pid)
        return real(pid)

    monkeypatch.setattr(_memory, "process_status", counting)
    roots = _memory.RootCache()
    mine = str(os.getpid())  # this test runs as root: a root-owned /proc entry
    assert os.stat(f"/proc/{mine}").st_uid == 0
    _memory.session_processes(2_000_000, 65536, roots)
    assert looked.count(mine) == 1 and os.getpid() in roots.checked
    for _ in range(_memory.RECHECK - 1):
        _memory.session_processes(2_000_000, 65536, roots)
    assert looked.count(mine) == 1  # cached for RECHECK scans ...
    _memory.session_processes(2_000_000, 65536, roots)
    assert looked.count(mine) == 2  # ... then looked up again


def test_a_root_owned_entry_of_a_session_uid_is_counted_and_never_cached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As on a kernel that shows an undumpable session process as root's: its status tells.
    real = _memory.process_status
    me = str(os.getpid())
    monkeypatch.setattr(
        _memory,
        "process_status",
        lambda pid: (2_000_007, 0) if pid == me else real(pid),
    )
    roots = _memory.RootCache()
    for _ in range(3):
        groups = _memory.session_processes(2_000_000, 65536, roots)
        assert groups.get(2_000_007) == [os.getpid()]
        assert os.getpid() not in roots.checked
