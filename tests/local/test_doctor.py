"""``tir-agent doctor`` without a model: a dead endpoint and a missing API key fail clearly.

The probes against a real server are in tests/integration/test_doctor_live.py.
"""

from __future__ import annotations

import hashlib
import io
import socket
from pathlib import Path

import pytest
from rich.console import Console

from tir_agent.doctor import Check, check_packages, check_python, run_doctor


def _console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=200, color_system=None), out


def _dead_url() -> str:
    with socket.socket() as s:  # bound then closed: nothing listens there
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


def _row(text: str, name: str) -> str:
    return next(line for line in text.splitlines() if line.strip("│ ").startswith(name))


def test_a_dead_endpoint_fails_with_a_fix_and_exit_code_1() -> None:
    console, out = _console()
    code = run_doctor(base_url=_dead_url(), model="local", console=console, progress=lambda _: None)
    text = out.getvalue()
    assert code == 1
    row = _row(text, "Endpoint")
    assert "FAIL" in row and "does not answer" in row and "Start the server" in row
    assert "TIR solve" not in text  # nothing probed past a dead endpoint
    assert "1 required check(s) failed: Endpoint" in text
    assert "PASS" in _row(text, "Python") and "PASS" in _row(text, "Packages")


def test_openai_without_a_key_fails_and_says_how_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    console, out = _console()
    code = run_doctor(model="gpt-4o-mini", console=console, progress=lambda _: None)
    row = _row(out.getvalue(), "API key")
    assert code == 1
    assert "FAIL" in row and "export OPENAI_API_KEY=" in row
    assert "Endpoint" not in out.getvalue()


def test_optional_checks_never_fail_the_run() -> None:
    assert not Check("stop", "fail", "x", required=False).failed
    assert Check("Endpoint", "fail", "x").failed
    assert check_python().status == "pass"
    packages = check_packages()
    assert packages[0].status == "pass" and all(not c.failed for c in packages[1:])


def test_sandbox_protections_are_reported() -> None:
    console, out = _console()
    run_doctor(base_url=_dead_url(), console=console, progress=lambda _: None)
    row = _row(out.getvalue(), "Sandbox isolation")
    assert "mechanism" in row and ("PASS" in row or "WARN" in row)


def test_sandbox_check_names_every_active_protection() -> None:
    from tir_agent.doctor import check_sandbox
    from tir_agent.sandbox.config import SandboxConfig
    from tir_agent.sandbox.isolation import detect_protections

    active = detect_protections(SandboxConfig.model_validate({})).active()
    detail = check_sandbox()[0].detail
    assert detail.endswith("active: " + ", ".join(active)), detail


def test_command_line_flags_reach_the_checks() -> None:
    import argparse

    from tir_agent.doctor import add_arguments, run_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--base-url", _dead_url(), "--model", "local", "--no-solve"])
    assert run_from_args(args) == 1


def test_embedded_models_verified_missing_or_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One line per model: a verified file passes, a missing one says how to install it, a file
    that is not the pinned one fails (optional: only the solve needs a model)."""
    from tests.local.test_weights import TINY_METADATA, _tiny_gguf
    from tir_agent import weights
    from tir_agent.doctor import check_models

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    weights.cache_dir().mkdir(parents=True)
    data = _tiny_gguf(weights.cache_dir() / "good.gguf")
    (weights.cache_dir() / "bad.gguf").write_bytes(data[:-1] + b"\0")

    def spec(name: str) -> weights.ModelSpec:
        return weights.ModelSpec(
            name=name,
            title=f"Tiny {name}",
            role=f"{name} role",
            file_name=f"{name}.gguf",
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            metadata=TINY_METADATA,
            license="Apache-2.0",
            license_file="",
            upstream="",
            install=f"fetch {name}",
        )

    monkeypatch.setattr(weights, "MODELS", {n: spec(n) for n in ("good", "gone", "bad")})
    monkeypatch.setattr(weights, "DEFAULT_MODEL", "good")
    rows = {c.name.strip(): c for c in check_models()}
    assert rows["local:good (default)"].status == "pass"
    assert "verified (sha256, GGUF metadata)" in rows["local:good (default)"].detail
    assert "(good role)" in rows["local:good (default)"].detail  # what each model is for
    assert "(gone role): not installed" in rows["local:gone"].detail
    assert rows["local:gone"].status == "warn" and rows["local:gone"].fix == "fetch gone"
    bad = rows["local:bad"]
    assert bad.status == "fail" and "refusing to use it" in bad.detail and not bad.failed
