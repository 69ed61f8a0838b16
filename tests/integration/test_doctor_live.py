"""``tir-agent doctor`` against the real embedded model (it starts and stops the server itself)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from tests.servers import start_server
from tir_agent.doctor import run_doctor

# Real solves with the 0.5B default take 10-80 s each on 2 busy cores: a wider safety net than
# the suite's 120 s (a bound against hangs, not a speed target).
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def _doctor(**options: object) -> tuple[int, str, dict[str, str]]:
    out = io.StringIO()
    code = run_doctor(
        console=Console(file=out, width=260, color_system=None),
        progress=lambda _: None,
        **options,  # type: ignore[arg-type]
    )
    text = out.getvalue()
    rows = {
        line.strip("│ ").split("│")[0].strip(): line
        for line in text.splitlines()
        if line.startswith("│") and line.strip("│ ").split("│")[0].strip()
    }
    return code, text, rows


def test_doctor_passes_against_the_embedded_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    code, text, rows = _doctor()
    assert code == 0, text
    for name in ("Embedded model", "Endpoint", "Native tool calls", "stop", "Streaming"):
        assert "PASS" in rows[name], rows[name]
    assert "FAIL" not in rows["TIR solve"] and "execution(s)" in rows["TIR solve"]
    assert "All required checks passed." in text


def test_doctor_checks_a_remote_sandbox_and_solves_on_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """With --sandbox-url, the server is checked and the TIR solve's code runs there."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with start_server("preload=[]") as server:
        code, text, rows = _doctor(sandbox_urls=[server.url])
    assert code == 0, text
    row = rows[f"Sandbox server {server.url}"]
    assert ("PASS" in row or "WARN" in row) and "API v1" in row, row
    assert "FAIL" not in rows["TIR solve"] and "execution(s)" in rows["TIR solve"]
