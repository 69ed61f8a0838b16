"""README's main job, ``tir-agent demo``, end to end with the embedded local model (no API key).

Starts the real llama.cpp server (the default model, Qwen2.5-Coder-0.5B) and the real sandbox,
as a user's shell would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Real solves with the 0.5B default take 10-80 s each on 2 busy cores: a wider safety net than
# the suite's 120 s (a bound against hangs, not a speed target).
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]


def _llama_servers() -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if b"llama_cpp.server" in cmdline:
                found.add(int(entry))
    return found


def test_demo_with_the_local_model(tmp_path: Path) -> None:
    before = _llama_servers()
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    command = [sys.executable, "-m", "tir_agent.cli", "demo", "--max-samples", "2"]
    done = subprocess.run(
        [*command, "--output-dir", str(tmp_path)], capture_output=True, text=True, env=env,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "embedded local model" in done.stderr
    rows = [json.loads(x) for x in (tmp_path / "demo.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    assert all(r["num_generated_tokens"] > 0 and "symbolic_correct" in r for r in rows)
    assert "graded results" in done.stdout and "/2 correct" in done.stdout
    assert _llama_servers() <= before, "the demo left a llama.cpp server running"
