"""The mount plan keeps a checkout that lives under /tmp (a CI clone, say) visible.

The sandbox mounts a fresh tmpfs on /tmp; a package bound before it would be hidden and the
template could not import tir_agent (this broke a clean clone under /tmp once).
"""

from __future__ import annotations

import pytest

from tir_agent.sandbox import _mounts
from tir_agent.sandbox.config import SandboxConfig


def test_a_root_under_tmp_is_bound_after_the_fresh_tmp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_mounts, "bind_roots", lambda config: ["/tmp/clone", "/opt/venv"])
    plan = _mounts.mount_plan(SandboxConfig())
    position = {(op[0], op[-1] if op[0] == "ro-bind" else op[1]): i for i, op in enumerate(plan)}
    assert position[("tmpfs", "/tmp")] < position[("ro-bind", "/tmp/clone")]
    assert position[("dev", "/dev")] < position[("tmpfs", "/dev/shm")]
    assert ["dir", "/tmp", 0o755] not in plan  # the fresh /tmp keeps its own mode
    assert plan[-1] == ["remount-ro", "/"]
