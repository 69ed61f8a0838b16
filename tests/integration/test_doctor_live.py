"""``tir-agent doctor`` against the real embedded model (it starts and stops the server itself)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from tir_agent.doctor import run_doctor

pytestmark = pytest.mark.integration


def test_doctor_passes_against_the_embedded_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    out = io.StringIO()
    code = run_doctor(
        console=Console(file=out, width=220, color_system=None), progress=lambda _: None
    )
    text = out.getvalue()
    rows = {
        line.strip("│ ").split("│")[0].strip(): line
        for line in text.splitlines()
        if line.startswith("│") and line.strip("│ ").split("│")[0].strip()
    }
    assert code == 0, text
    for name in ("Embedded model", "Endpoint", "Native tool calls", "stop", "Streaming"):
        assert "PASS" in rows[name], rows[name]
    assert "FAIL" not in rows["TIR solve"] and "execution(s)" in rows["TIR solve"]
    assert "All required checks passed." in text
