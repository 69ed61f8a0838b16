"""The NeMo-Skills sandbox API (REFERENCE.md §5), so their client works unchanged.

Replies are the ones NeMo-Skills' own server (``local_sandbox_server.py``) sends, key for key:
``POST /execute`` answers ``{new_session_created, process_status, stderr, stdout}`` for
``ipython`` and ``{process_status, stderr, stdout}`` for every other language, nothing more (our
``state``, ``reason``, ``duration`` and ``*_truncated`` are on the ``/v1`` API only), and errors
are ``{"error": "<message>"}``.

- ``ipython`` runs the cell in the named session of ``X-Session-ID`` (created on first use),
  through IPython as their server does (``LocalSession.run(ipython=True)``, with the request's
  ``traceback_verbosity``); a timeout answers their line and nothing else. When
  a session's interpreter was restarted and its variables lost, the reply says
  ``new_session_created: true`` and so does the session's next reply (their server's "restart
  pending" flag): their client replays its history of the session on seeing it, and does not
  replay on a ``timeout`` reply, so the request after one must still see the flag.
- ``python``/``python3``/``pypy3`` run the code as a script, ``python -c <code>`` in a fresh
  session with ``std_input`` as its standard input: their status (``completed`` whatever the exit
  code), their traceback (``File "<string>"``), their timeout reply. ``pypy3`` runs on CPython.
- ``shell`` runs the script with ``/bin/bash`` in one session shared by all shell requests
  (:data:`SHELL_SESSION`), so they share files as on their server (``completed`` on exit code 0,
  else ``error``).
- ``lean4`` and any other language answer ``process_status: error`` with the reason in
  ``stderr`` (200, as their server does when Lean is missing), not an HTTP error.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

from pydantic_core import to_json
from starlette.types import Receive, Scope, Send

from tir_agent._log import get_logger
from tir_agent.errors import SandboxClosedError, SandboxError
from tir_agent.sandbox.http_api import API_VERSION, NemoExecuteRequest
from tir_agent.sandbox.local import LocalSession
from tir_agent.sandbox.protocol import CUT_MARKER, TRACEBACK_VERBOSITIES
from tir_agent.sandbox.result import ExecutionResult
from tir_agent.service._asgi import (
    JSON,
    HTTPError,
    check_run_limits,
    content_is_json,
    log_refusal,
    not_allowed,
    not_found,
    parse,
    read_body,
    send_bytes,
    send_json,
    shutting_down,
)
from tir_agent.service.state import Service

log = get_logger(__name__)

BACKEND = "tir-agent"
"""The ``api`` of ``GET /health``."""
SESSIONS_BACKEND = "ipython"
"""The ``backend`` of ``GET /sessions``, as their server names it."""

SCRIPT_LANGUAGES = ("python", "python3", "pypy3")
MAX_NEMO_SESSION_ID = 256
SHELL_SESSION = "\x00nemo-shell"
"""The named session every ``shell`` request runs in, so that shell requests share files as on
their server (their IOI evaluator writes sources in one request and compiles them in the next).
No client can name it: header values cannot hold a NUL. Not listed by ``GET /sessions``."""
SCRIPT_SLACK = 10.0
"""Seconds the session running a script may take beyond the script's own timeout (starting the
interpreter, killing it, collecting its output) before the session itself is timed out."""

RUNNER = r"""
def _tir_nemo_script(kind, code, stdin, timeout, cap):
    import json, os, signal, subprocess, sys, tempfile, threading, time

    budget = 4 * (cap + 1) + 16  # bytes that surely hold cap + 1 characters

    def drain(stream, kept):
        # keep the first `budget` bytes, discard the rest so the script never blocks on a pipe
        while True:
            chunk = os.read(stream.fileno(), 65536)
            if not chunk:
                return
            if len(kept) < budget:
                kept += chunk[: budget - len(kept)]

    def feed(stream, data):
        try:
            stream.write(data)
        except OSError:
            pass  # the script exited without reading all of its input, as with a pipe
        finally:
            try:
                stream.close()
            except OSError:
                pass

    def cut(data):
        # decoded as their text-mode pipes do: universal newlines ("\r\n" and "\r" to "\n")
        text = bytes(data).decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")
        return text[:cap] + "<output cut>" if len(text) > cap else text

    path = None
    if kind == "shell":
        fd, path = tempfile.mkstemp(suffix=".sh")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(code)
        argv = ["/bin/bash", path]
    elif len(code.encode("utf-8", "surrogatepass")) < 100000:
        argv = [sys.executable, "-c", code]
    else:
        # above the kernel's limit for one argument: compile the file's text as "<string>"
        fd, path = tempfile.mkstemp(suffix=".py")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(code)
        boot = (
            "import sys;_p=sys.argv.pop(1);_s=open(_p,encoding='utf-8').read();del _p;"
            "exec(compile(_s,'<string>','exec'))"
        )
        argv = [sys.executable, "-c", boot, path]
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        out, err = bytearray(), bytearray()
        threads = [
            threading.Thread(target=drain, args=(proc.stdout, out), daemon=True),
            threading.Thread(target=drain, args=(proc.stderr, err), daemon=True),
            threading.Thread(target=feed, args=(proc.stdin, stdin.encode()), daemon=True),
        ]
        for t in threads:
            t.start()
        deadline = time.monotonic() + timeout
        try:
            code_ = proc.wait(timeout)
            for t in threads:  # a background child may still hold the pipes open
                t.join(max(0.0, deadline - time.monotonic()))
            status = "completed" if kind != "shell" or code_ == 0 else "error"
        except subprocess.TimeoutExpired:
            status = "timeout"
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the script and whatever it started
        except OSError:
            pass
        proc.wait()
        for t in threads:
            t.join(1.0)
    finally:
        if path is not None:
            os.unlink(path)
    if status == "timeout":
        reply = {"process_status": "timeout", "stdout": "", "stderr": ""}
    else:
        reply = {"process_status": status, "stdout": cut(out), "stderr": cut(err)}
    sys.stdout.write(json.dumps(reply))
"""
"""Defines the function that runs a script in a fresh session, the way NeMo-Skills' server runs
``python -c`` and ``bash``: output captured whole (but kept bounded here), the process group
killed at the timeout. It writes the reply as JSON on the session's stdout."""


def script_cell(kind: str, code: str, stdin: str, timeout: float, cap: int) -> str:
    """The cell that runs ``code`` as a ``kind`` script (``python`` or ``shell``)."""
    return f"{RUNNER}\n_tir_nemo_script({kind!r}, {code!r}, {stdin!r}, {timeout!r}, {cap!r})\n"


def reply_bytes(status: str, stdout: str, stderr: str, new_session_created: bool | None) -> bytes:
    """An ``/execute`` reply body as their server (Flask, keys sorted) sends it; no
    ``new_session_created`` for the stateless languages, as theirs."""
    body: dict[str, object] = {}
    if new_session_created is not None:
        body["new_session_created"] = new_session_created
    body["process_status"] = status
    body["stderr"] = stderr
    body["stdout"] = stdout
    return to_json(body)


def timeout_message(timeout: float) -> str:
    """Their timeout line, with the timeout as the request sent it (``1`` or ``10.0``)."""
    return f"Execution timed out after {timeout} seconds\n"


def cut(text: str, cap: int) -> str:
    """Their truncation: the first ``cap`` characters and ``<output cut>``."""
    return text[:cap] + CUT_MARKER if len(text) > cap else text


def lost(why: str, reason: str) -> ExecutionResult:
    """The result reported when a session's interpreter is gone (not the user code's fault)."""
    return ExecutionResult(
        status="error",
        stderr=f"{why}; the Python session was lost, all variables are gone.\n",
        state="lost",
        reason=reason,
    )


async def handle(
    service: Service,
    scope: Scope,
    path: str,
    headers: dict[bytes, bytes],
    receive: Receive,
    send: Send,
) -> None:
    """Answer one request of the NeMo-Skills API (or 404)."""
    method: str = scope["method"]
    if path == "/execute":
        if method != "POST":
            raise not_allowed(method, path, "POST")
        service.authorize(headers)
        await execute(service, headers, receive, send)
    elif path == "/health":
        if method != "GET":
            raise not_allowed(method, path, "GET")
        await health(service, scope, send)
    elif path == "/sessions":
        if method != "GET":
            raise not_allowed(method, path, "GET")
        service.authorize(headers)
        await list_sessions(service, send)
    elif path.startswith("/sessions/"):
        if method != "DELETE":
            raise not_allowed(method, path, "DELETE")
        service.authorize(headers)
        await delete_session(service, path[len("/sessions/") :], send)
    else:
        raise not_found(method, path)


async def send_error(send: Send, error: HTTPError) -> None:
    """An error reply in their shape: ``{"error": message}``."""
    log_refusal(error)
    await send_json(
        send, error.status, {"error": error.nemo_error or error.message}, JSON + error.headers
    )


async def execute(
    service: Service, headers: dict[bytes, bytes], receive: Receive, send: Send
) -> None:
    """``POST /execute``."""
    content_is_json(headers)
    body = await read_body(receive, headers, service.config.max_body_bytes)
    request = parse(NemoExecuteRequest, body)
    config = service.config
    check_run_limits(
        request.timeout,
        request.max_output_characters,
        max_timeout=config.max_timeout,
        max_output_cap=config.max_output_cap,
    )
    if service.stopping:
        raise shutting_down()
    language = request.language
    if language == "ipython":
        raw = headers.get(b"x-session-id", b"").strip()
        if not raw:
            raise HTTPError(
                400,
                "bad_request",
                "X-Session-ID header required for ipython sessions (send any id; requests with "
                "the same id share one stateful session)",
                nemo_error="X-Session-ID header required for ipython sessions",
            )
        if len(raw) > MAX_NEMO_SESSION_ID:
            raise HTTPError(
                400, "bad_request", f"X-Session-ID is longer than {MAX_NEMO_SESSION_ID} bytes"
            )
        reply = await run_ipython(service, raw.decode("latin-1"), request)
    elif language in SCRIPT_LANGUAGES:
        reply = await run_script(service, "python", request)
    elif language == "shell":
        reply = await run_script(service, "shell", request)
    else:
        reply = reply_bytes("error", "", unsupported(language), None)
    await send_bytes(send, 200, reply, JSON)


def unsupported(language: str) -> str:
    """The ``stderr`` of a request in a language this server cannot run."""
    if language == "lean4":
        return (
            "Lean 4 is not available on this sandbox server (tir-agent sandbox serve runs "
            "ipython, python, python3, pypy3 and shell); send lean4 code to a NeMo-Skills "
            "sandbox with Lean installed.\n"
        )
    return (
        f"Unsupported language {language!r}: this sandbox server runs ipython, python, python3, "
        "pypy3 and shell.\n"
    )


async def run_ipython(service: Service, session_id: str, request: NemoExecuteRequest) -> bytes:
    """One cell in the named session, created on first use."""
    verbosity = request.traceback_verbosity
    if verbosity not in TRACEBACK_VERBOSITIES:
        # their server fails on it too (IPython rejects the mode); answer in their reply shape
        message = (
            f"traceback_verbosity {verbosity!r} is not one of "
            f"{', '.join(TRACEBACK_VERBOSITIES)} (their client capitalizes plain, context, "
            "verbose, minimal)\n"
        )
        return reply_bytes("error", "", message, False)
    pending = service.nemo_restarted
    for attempt in range(2):
        entry, created = await service.registry.get_or_create(session_id)
        if created:
            pending.discard(session_id)  # a fresh session says so itself
        try:
            result = await entry.session.run(
                request.generated_code,
                timeout=request.timeout,
                max_output_characters=request.max_output_characters,
                ipython=True,
                traceback_verbosity=verbosity,
            )
        except SandboxClosedError:
            if service.stopping:
                raise
            if attempt == 0 and not entry.session.cancelled:
                continue  # evicted between the lookup and the run: start it afresh
            result = lost("The sandbox session was closed during this execution", "closed")
        except SandboxError as e:
            log.warning("session.lost", error=str(e))
            result = lost(f"The sandbox session failed ({e})", "sandbox_error")
        except asyncio.CancelledError:
            if not service.stopping:
                raise
            result = cut_short(service)
        # Their server reports a restart on the request it happened in and again on the next
        # one (their client skips the replay on a timeout reply, so it needs the second).
        new = created or session_id in pending
        pending.discard(session_id)
        if result.state == "lost":
            new = True
            pending.add(session_id)
        return ipython_reply(result, request, new)
    raise AssertionError("unreachable")


def ipython_reply(result: ExecutionResult, request: NemoExecuteRequest, new: bool) -> bytes:
    """The reply for an ``ipython`` cell; a timeout is theirs word for word: no output (their
    server drops what the cell printed when it stops it), their line, no note on the state."""
    if result.status == "timeout":
        line = cut(timeout_message(request.timeout), request.max_output_characters)
        return reply_bytes("timeout", "", line, new)
    return reply_bytes(result.status, result.stdout, result.stderr, new)


def cut_short(service: Service) -> ExecutionResult:
    """The result of an execution still running when the shutdown grace ran out."""
    return lost(
        "The sandbox server shut down before this execution finished "
        f"(it waited {service.config.shutdown_grace:g} s)",
        "shutdown",
    )


async def run_script(service: Service, kind: str, request: NemoExecuteRequest) -> bytes:
    """A ``python`` or ``shell`` script in a fresh session, replied as their server does."""
    cap = request.max_output_characters
    cell = script_cell(kind, request.generated_code, request.std_input, request.timeout, cap)

    async def work(session: LocalSession) -> ExecutionResult:
        # The reply is JSON of two capped streams: room for them escaped, plus the keys.
        return await session.run(
            cell,
            timeout=request.timeout + SCRIPT_SLACK,
            max_output_characters=12 * (cap + len(CUT_MARKER)) + 200,
        )

    try:
        if kind == "shell":
            result = await shared_shell(service, work)
        else:
            result = await service.registry.stateless(work)
    except asyncio.CancelledError:
        if not service.stopping:
            raise
        result = cut_short(service)
    if result.status == "completed":
        try:
            reply = json.loads(result.stdout)
        except ValueError:
            reply = None
        if isinstance(reply, dict):
            stderr = reply["stderr"]
            if reply["process_status"] == "timeout":
                stderr = timeout_message(request.timeout)
            return reply_bytes(reply["process_status"], reply["stdout"], cut(stderr, cap), None)
    if result.status == "timeout":
        return reply_bytes("timeout", "", timeout_message(request.timeout), None)
    # the runner itself failed (e.g. the sandbox allows no new process): say why
    why = result.stderr or result.stdout
    return reply_bytes("error", "", cut(f"The {kind} script could not be run: {why}", cap), None)


async def shared_shell(
    service: Service, work: Callable[[LocalSession], Awaitable[ExecutionResult]]
) -> ExecutionResult:
    """Run ``work`` in the session of every ``shell`` request (:data:`SHELL_SESSION`), one
    request at a time; a session closed meanwhile (evicted when idle) is opened afresh."""
    for attempt in range(2):
        entry, _ = await service.registry.get_or_create(SHELL_SESSION)
        try:
            return await work(entry.session)
        except SandboxClosedError:
            if service.stopping or attempt:
                raise
        except SandboxError as e:
            log.warning("session.lost", error=str(e))
            return lost(f"The sandbox session failed ({e})", "sandbox_error")
    raise AssertionError("unreachable")


async def list_sessions(service: Service, send: Send) -> None:
    """``GET /sessions``: their shape exactly."""
    sessions = {}
    for entry in service.registry.entries():
        if entry.session_id == SHELL_SESSION:
            continue
        info = entry.info()
        sessions[entry.session_id] = {
            "alive": True,
            "backend": SESSIONS_BACKEND,
            "created": info.created,
            "last_used": info.last_used,
        }
    await send_json(send, 200, {"backend": SESSIONS_BACKEND, "sessions": sessions})


async def delete_session(service: Service, session_id: str, send: Send) -> None:
    """``DELETE /sessions/{id}``: 200 or 404 with their messages."""
    service.nemo_restarted.discard(session_id)
    entry = None if session_id == SHELL_SESSION else await service.registry.delete(session_id)
    if entry is None:
        message = f"IPython session {session_id} not found"
        raise HTTPError(404, "session_not_found", message, nemo_error=message)
    await send_json(send, 200, {"message": f"IPython session {session_id} deleted successfully"})


async def health(service: Service, scope: Scope, send: Send) -> None:
    """``GET /health`` (no token needed): 200 healthy, 503 while shutting down or while the
    sandbox cannot run code (``unhealthy``, with the ``problem``; see :meth:`Service.health`)."""
    server = scope.get("server") or ("", service.config.port)
    code, status, problem = service.health()
    body: dict[str, object] = {
        "status": status,
        "port": server[1],
        "api": BACKEND,
        "version": API_VERSION,
        "sessions": len(service.registry),
    }
    if problem is not None:
        body["problem"] = problem
    await send_json(send, code, body)
