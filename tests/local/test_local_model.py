"""The embedded llama.cpp server: start, answer, stop, and no orphan when the host dies.

These start the real server (llama-cpp-python from the `local` extra) with the default model,
Qwen2.5-Coder-0.5B, or SmolLM2-135M where only the process matters (it loads faster).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.procs import alive
from tir_agent.local_model import SPIN_COUNT, LlamaCppServer, find_gguf

pytestmark = pytest.mark.integration


def _models(base_url: str) -> list[str]:
    with urllib.request.urlopen(f"{base_url}/models", timeout=5) as reply:
        return [m["id"] for m in json.load(reply)["data"]]


def test_find_gguf_locates_the_verified_weights() -> None:
    assert find_gguf().name == "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    assert find_gguf("local:smollm2-135m").name == "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_server_starts_lists_the_model_uses_every_core_and_stops() -> None:
    server = LlamaCppServer().start()
    try:
        assert _models(server.base_url) == ["local"]
        port = server.port
        assert server.pid is not None
        argv = Path(f"/proc/{server.pid}/cmdline").read_bytes().decode().split("\0")
        cores = str(len(os.sched_getaffinity(0)))
        # llama-cpp-python's own default is half the cores: one thread on a 2-core machine.
        assert argv[argv.index("--n_threads") + 1] == cores
        assert argv[argv.index("--n_threads_batch") + 1] == cores
        # A waiting request must not cut a streamed reply short (llama-cpp-python's default).
        assert argv[argv.index("--interrupt_requests") + 1] == "false"
        assert argv[argv.index("--model") + 1] == str(find_gguf())
        # A short OpenMP spin at llama.cpp's barriers (docs/local-model.md), unless set by us.
        environ = Path(f"/proc/{server.pid}/environ").read_bytes().decode().split("\0")
        if "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ:
            assert f"GOMP_SPINCOUNT={SPIN_COUNT}" in environ
    finally:
        server.stop()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2)


def test_no_orphan_when_the_host_is_killed() -> None:
    script = (
        "import os, sys, time\n"
        "from tir_agent.local_model import LlamaCppServer\n"
        "s = LlamaCppServer(model='local:smollm2-135m').start()\n"
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


@pytest.mark.timeout(600)  # the second request waits for the whole stream on busy cores
def test_a_waiting_request_does_not_cut_a_stream_short() -> None:
    """llama-cpp-python ends a stream early (``[DONE]`` with no finish reason) when another
    request waits for its one worker, unless started with ``--interrupt_requests false``; the
    agent streams while the demo or a batch has other requests queued. SmolLM2: loads fast."""
    import threading

    def post(base_url: str, body: dict[str, object]) -> bytes:
        request = urllib.request.Request(
            f"{base_url}/completions",
            json.dumps(body).encode(),
            {"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=300) as reply:
            return bytes(reply.read())

    body = {"prompt": "Count from 1 to 1000:", "max_tokens": 200, "temperature": 0.0, "seed": 0}
    with LlamaCppServer(model="local:smollm2-135m") as server:
        chunks: list[dict[str, object]] = []

        ended: list[float] = []

        def stream() -> None:
            raw = post(server.base_url, {**body, "stream": True}).decode()
            ended.append(time.monotonic())
            for line in raw.splitlines():
                if line.startswith("data: {"):
                    chunks.append(json.loads(line.removeprefix("data: ")))

        streaming = threading.Thread(target=stream)
        streaming.start()
        time.sleep(0.5)  # the stream has started; the next request waits for the one worker
        sent = time.monotonic()
        post(server.base_url, {**body, "max_tokens": 4})
        streaming.join()
    assert sent < ended[0], "the stream was over before the second request: nothing was tested"
    reasons = [c["choices"][0]["finish_reason"] for c in chunks]  # type: ignore[index]
    assert reasons[-1] == "length", f"the stream was cut after {len(chunks)} chunks"
