"""The embedded llama.cpp server: start, answer, stop, and no orphan when the host dies.

These start the real server (llama-cpp-python with SmolLM2-135M from the `local` extra).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.procs import alive
from tir_agent.local_model import LlamaCppServer, find_gguf

pytestmark = pytest.mark.integration


def _models(base_url: str) -> list[str]:
    with urllib.request.urlopen(f"{base_url}/models", timeout=5) as reply:
        return [m["id"] for m in json.load(reply)["data"]]


def test_find_gguf_locates_the_packaged_weights() -> None:
    path = find_gguf()
    assert path.suffix == ".gguf"
    assert path.stat().st_size > 50_000_000


def test_server_starts_lists_the_model_and_stops() -> None:
    server = LlamaCppServer().start()
    try:
        assert _models(server.base_url) == ["local"]
        port = server.port
    finally:
        server.stop()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2)


def test_no_orphan_when_the_host_is_killed() -> None:
    script = (
        "import os, sys, time\n"
        "from tir_agent.local_model import LlamaCppServer\n"
        "s = LlamaCppServer().start()\n"
        "print(s._process.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    host = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert host.stdout is not None
    server_pid = int(host.stdout.readline())
    assert alive(server_pid)
    host.send_signal(signal.SIGKILL)
    host.wait()
    deadline = time.monotonic() + 10
    while alive(server_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(server_pid), "the llama.cpp server outlived its host"
