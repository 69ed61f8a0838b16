"""A real nginx (Debian's binary) in the foreground, in a temp prefix, on a free loopback port.

Importable test support (like ``tests/servers.py``); ``benchmarks/sandbox_service.py`` uses it
too. Nothing outlives the ``with`` block: nginx is stopped, its workers are checked gone, and the
prefix is removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.procs import alive
from tir_agent.service.nginx import nginx_command, render_nginx_config

START_TIMEOUT = 15.0


@dataclass
class NginxProcess:
    """A running nginx: ``url`` is where clients connect."""

    url: str
    port: int
    proc: subprocess.Popen[bytes]
    prefix: Path
    config: str

    def log(self) -> str:
        """What nginx wrote to its error log (stderr) so far."""
        try:
            return (self.prefix / "stderr.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def worker_pids(self) -> list[int]:
        """Pids of nginx's worker processes (children of the master)."""
        try:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                return [int(p) for p in f.read().split()]
        except OSError:
            return []


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _accepting(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _stop(nginx: NginxProcess) -> None:
    workers = nginx.worker_pids()
    if nginx.proc.poll() is None:
        nginx.proc.send_signal(signal.SIGTERM)  # fast shutdown: master waits for its workers
        try:
            nginx.proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(nginx.proc.pid, signal.SIGKILL)
            nginx.proc.wait(5)
    deadline = time.monotonic() + 5
    while any(alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.02)
    left = [p for p in workers if alive(p)]
    assert not left, f"nginx workers outlived their master: {left}"


@contextlib.contextmanager
def start_nginx(upstreams: Sequence[str], **options: Any) -> Iterator[NginxProcess]:
    """Run nginx in front of ``upstreams`` (URLs); ``options`` go to ``render_nginx_config``."""
    prefix = Path(tempfile.mkdtemp(prefix="tir-nginx-"))
    # Started as root, nginx's workers run as "nobody" and must reach the temp directories.
    prefix.chmod(0o755)
    nginx: NginxProcess | None = None
    try:
        for _attempt in range(3):  # the free port may be taken between the check and the bind
            port = free_port()
            config = render_nginx_config(upstreams, listen=f"127.0.0.1:{port}", **options)
            conf = prefix / "nginx.conf"
            conf.write_text(config)
            with open(prefix / "stderr.log", "wb") as err:
                proc = subprocess.Popen(
                    nginx_command(prefix, conf),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                    start_new_session=True,
                )
            nginx = NginxProcess(f"http://127.0.0.1:{port}", port, proc, prefix, config)
            deadline = time.monotonic() + START_TIMEOUT
            while proc.poll() is None and not _accepting(port):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nginx did not start listening:\n{nginx.log()}")
                time.sleep(0.02)
            if proc.poll() is None:
                break
            if "Address already in use" not in nginx.log():
                raise RuntimeError(f"nginx exited with {proc.returncode}:\n{nginx.log()}")
        else:
            raise RuntimeError(f"nginx found no free port:\n{nginx.log() if nginx else ''}")
        yield nginx
    finally:
        if nginx is not None:
            _stop(nginx)
        shutil.rmtree(prefix, ignore_errors=True)
