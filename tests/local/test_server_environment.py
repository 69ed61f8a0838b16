"""The llama.cpp server's environment: a short OpenMP spin, unless the user chose one.

No server is started here; tests/local/test_local_model.py checks the running server's own
environment (/proc/PID/environ).
"""

from __future__ import annotations

import pytest

from tir_agent.local_model import SPIN_COUNT, server_environment


def test_the_server_spins_briefly_at_barriers_by_default() -> None:
    assert server_environment({"PATH": "/usr/bin"}) == {
        "PATH": "/usr/bin",
        "GOMP_SPINCOUNT": str(SPIN_COUNT),
    }
    # ~20 us of busy waiting, not libgomp's milliseconds (300,000 iterations)
    assert 100 <= SPIN_COUNT <= 10_000


@pytest.mark.parametrize(
    "own",
    [{"GOMP_SPINCOUNT": "300000"}, {"OMP_WAIT_POLICY": "active"}, {"OMP_WAIT_POLICY": "passive"}],
)
def test_the_users_own_openmp_setting_wins(own: dict[str, str]) -> None:
    assert server_environment(own) == own


def test_the_default_is_this_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setenv("TIR_AGENT_PROBE", "1")
    env = server_environment()
    assert env["TIR_AGENT_PROBE"] == "1" and env["GOMP_SPINCOUNT"] == str(SPIN_COUNT)
