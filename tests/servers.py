"""Real sandbox servers for tests: ``python -m tir_agent.service`` on a free loopback port.

::

    with start_server("preload=[]", "--no-protect-state", token="s3cret") as server:
        ...  # server.url, server.port, server.proc
        server.kill()   # SIGKILL the whole process group: a machine that died
        server.stop()   # SIGTERM and wait: a graceful shutdown

On leaving the ``with`` block the server is stopped (if it still runs) and must have exited.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = str(Path(__file__).resolve().parent.parent)
"""The checkout, put on ``PYTHONPATH`` of the server process."""

START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServerProcess:
    """A running server process (see :func:`start_server`)."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, stderr_path: str) -> None:
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._stderr_path = stderr_path
        self.killed = False

    @property
    def stderr(self) -> str:
        """What the server wrote to stderr so far."""
        with open(self._stderr_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def kill(self) -> None:
        """SIGKILL the server's whole process group (as if its machine died) and reap it."""
        self.killed = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM the server (graceful shutdown) and wait; returns its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"the server did not exit within {timeout} s of SIGTERM; stderr:\n{self.stderr}"
            ) from None


def _healthy(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


@contextlib.contextmanager
def start_server(
    *args: str, token: str | None = None, env: dict[str, str] | None = None
) -> Iterator[ServerProcess]:
    """Start ``python -m tir_agent.service --port P *args`` in its own process group and wait
    until ``GET /health`` answers; stop it afterwards and check that it exited."""
    port = free_port()
    environment = {**os.environ, **(env or {})}
    environment["PYTHONPATH"] = os.pathsep.join(
        p for p in (ROOT, environment.get("PYTHONPATH")) if p
    )
    environment.pop("TIR_AGENT_SANDBOX_TOKEN", None)
    if token is not None:
        environment["TIR_AGENT_SANDBOX_TOKEN"] = token
    with tempfile.NamedTemporaryFile(prefix="tir-server-", suffix=".log", delete=False) as log:
        stderr_path = log.name
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tir_agent.service", "--port", str(port), *args],
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=stderr,
            env=environment,
            cwd=ROOT,
            start_new_session=True,
        )
    server = ServerProcess(proc, port, stderr_path)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _healthy(port):
            if proc.poll() is not None:
                raise RuntimeError(
                    f"the server exited with status {proc.returncode} before answering; "
                    f"stderr:\n{server.stderr}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the server did not answer GET /health within {START_TIMEOUT} s; "
                    f"stderr:\n{server.stderr}"
                )
            time.sleep(0.05)
        yield server
    finally:
        try:
            if proc.poll() is None:
                status = server.stop()
                assert status == 0, f"the server exited with {status}; stderr:\n{server.stderr}"
            assert proc.poll() is not None
        finally:
            if proc.poll() is None:
                server.kill()
            os.unlink(stderr_path)
