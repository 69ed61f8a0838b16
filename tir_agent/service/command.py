"""Flags of ``tir-agent sandbox serve`` and ``tir-agent sandbox nginx-config``.

``serve`` takes the server's options as flags, the common sandbox options as flags, and any
:class:`~tir_agent.sandbox.SandboxConfig` field as a ``key=value`` override (value parsed as
YAML: ``preload=[numpy]``, ``memory_limit=null``). Later wins: defaults < flags < overrides.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
from typing import Any

import yaml
from pydantic import ValidationError

from tir_agent.errors import ConfigError
from tir_agent.sandbox.config import SandboxConfig
from tir_agent.sandbox.http_api import DEFAULT_PORT, MAX_BODY_BYTES, TOKEN_ENV
from tir_agent.service.config import (
    KEEP_ALIVE,
    MAX_CONNECTIONS,
    MAX_HEADER_BYTES,
    MAX_OUTPUT_CAP,
    MAX_TIMEOUT,
    REQUEST_TIMEOUT,
    ServiceConfig,
)

SERVE_DESCRIPTION = f"""\
Serve the sandbox over HTTP: the NeMo-Skills sandbox API (POST /execute, GET /sessions,
DELETE /sessions/ID, GET /health), so their client works unchanged, and the tir-agent API
under /v1 used by tir_agent.sandbox.RemoteSandbox. Binds 127.0.0.1:{DEFAULT_PORT} by default;
another address needs a token. SIGTERM or Ctrl-C: in-flight executions finish (up to
--shutdown-grace seconds), then every session process is stopped.

Any sandbox option can be given as key=value (value parsed as YAML), e.g.
  tir-agent sandbox serve --port 6001 preload='[numpy, sympy]' max_processes=32
"""

NGINX_DESCRIPTION = """\
Print an nginx.conf that spreads sessions over several sandbox servers with affinity on the
X-Session-ID header (consistent hashing), the way NeMo-Skills deployments run. Run it with
`nginx -p DIR -c nginx.conf` (see docs/scale-out.md).
"""

SANDBOX_FLAGS = (
    "timeout",
    "max_output_characters",
    "max_sessions",
    "idle_timeout",
    "memory_limit",
    "protect_state",
    "strict",
)
"""``SandboxConfig`` fields that ``serve`` also takes as flags."""

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def size(text: str) -> int | None:
    """``4G``, ``512M``, ``1.5GiB``, ``1048576`` or ``none`` (no limit) as a number of bytes."""
    if text.strip().lower() in ("none", "null", "unlimited"):
        return None
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 4G, 512M, 1048576, none)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def _optional(kind: type[float] | type[int]) -> Any:
    def parse(text: str) -> float | int | None:
        if text.strip().lower() in ("none", "null"):
            return None
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number or 'none': {text!r}") from None

    parse.__name__ = kind.__name__
    return parse


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``tir-agent sandbox serve`` (and ``python -m tir_agent.service``)."""
    server = parser.add_argument_group("server")
    server.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    server.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT})"
    )
    server.add_argument(
        "--token",
        help=f"bearer token clients must send (default: ${TOKEN_ENV}; none: no authentication)",
    )
    server.add_argument(
        "--allow-insecure",
        action="store_true",
        help="allow a non-loopback --host without a token (trusted networks only)",
    )
    server.add_argument(
        "--max-body-bytes",
        type=size,
        default=MAX_BODY_BYTES,
        metavar="SIZE",
        help="largest request body (default 16M; 413 above it)",
    )
    server.add_argument(
        "--shutdown-grace",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long in-flight executions may finish after SIGTERM (default 30)",
    )
    hostile = parser.add_argument_group("limits on clients")
    hostile.add_argument(
        "--max-connections",
        type=int,
        default=MAX_CONNECTIONS,
        metavar="N",
        help=f"open client connections at most (default {MAX_CONNECTIONS}); at the cap the "
        "longest-idle one is closed, or a new one gets 503 if none is idle",
    )
    hostile.add_argument(
        "--request-timeout",
        type=float,
        default=REQUEST_TIMEOUT,
        metavar="SECONDS",
        help="a client must send a whole request within this time, and may not stall reading a "
        f"reply longer (default {REQUEST_TIMEOUT:g})",
    )
    hostile.add_argument(
        "--keep-alive",
        type=float,
        default=KEEP_ALIVE,
        metavar="SECONDS",
        help="idle connections between requests are closed after this; keep it above a proxy's "
        f"upstream keep-alive (default {KEEP_ALIVE:g}; nginx-config's is 60)",
    )
    hostile.add_argument(
        "--max-header-bytes",
        type=size,
        default=MAX_HEADER_BYTES,
        metavar="SIZE",
        help="largest request line plus headers (default 64K; 431 above it)",
    )
    hostile.add_argument(
        "--max-timeout",
        type=float,
        default=MAX_TIMEOUT,
        metavar="SECONDS",
        help=f"largest execution timeout a request may ask for (default {MAX_TIMEOUT:g}; "
        "422 above it)",
    )
    hostile.add_argument(
        "--max-output-cap",
        type=int,
        default=MAX_OUTPUT_CAP,
        metavar="N",
        help=f"largest max_output_characters a request may ask for (default {MAX_OUTPUT_CAP}; "
        "422 above it)",
    )
    box = parser.add_argument_group("sandbox (any other SandboxConfig field: key=value)")
    unset = argparse.SUPPRESS  # only flags given on the command line reach the config
    box.add_argument(
        "--timeout", type=float, default=unset, help="default execution timeout, seconds (10)"
    )
    box.add_argument(
        "--max-output-characters",
        type=int,
        default=unset,
        help="default cap of stdout and stderr (1000)",
    )
    box.add_argument(
        "--max-sessions",
        type=_optional(int),
        default=unset,
        help="concurrent sessions, or none (256)",
    )
    box.add_argument(
        "--idle-timeout",
        type=_optional(float),
        default=unset,
        metavar="SECONDS",
        help="close sessions idle this long, or none (600)",
    )
    box.add_argument(
        "--memory-limit",
        type=size,
        default=unset,
        metavar="SIZE",
        help="address space per session, or none (4G)",
    )
    box.add_argument(
        "--no-protect-state",
        dest="protect_state",
        action="store_false",
        default=unset,
        help="fast mode: no fork per cell (a timeout or crash may lose the session's state)",
    )
    box.add_argument(
        "--strict",
        action="store_true",
        default=unset,
        help="refuse to start without network and file-system isolation",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log INFO events (-vv: DEBUG)"
    )


def sandbox_config(args: argparse.Namespace, overrides: list[str]) -> SandboxConfig:
    """The sandbox's config from the flags, then ``key=value`` overrides."""
    given = vars(args)
    values: dict[str, Any] = {k: given[k] for k in SANDBOX_FLAGS if k in given}
    fields = SandboxConfig.model_fields
    for item in overrides:
        key, _, raw = item.lstrip("+").partition("=")
        key = key.strip().replace("-", "_")
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=3)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise ConfigError(
                f"unknown sandbox option {key!r} (in {item!r}).{hint} Options: {', '.join(fields)}"
            )
        try:
            values[key] = None if raw.strip() == "None" else yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"cannot parse the value of {item!r}: {e}") from None
    try:
        return SandboxConfig.model_validate(values)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
            for err in e.errors(include_url=False)
        )
        raise ConfigError(f"invalid sandbox option: {problems}") from None


def service_config(args: argparse.Namespace, overrides: list[str]) -> ServiceConfig:
    """The server's config from ``tir-agent sandbox serve`` arguments."""
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV) or None
    for flag in ("max_body_bytes", "max_header_bytes"):
        if getattr(args, flag) is None:
            name = "--" + flag.replace("_", "-")
            raise ConfigError(f"{name} needs a size (the server always has this limit)")
    try:
        return ServiceConfig(
            host=args.host,
            port=args.port,
            token=token,
            allow_insecure=args.allow_insecure,
            max_body_bytes=args.max_body_bytes,
            shutdown_grace=args.shutdown_grace,
            max_connections=args.max_connections,
            request_timeout=args.request_timeout,
            keep_alive=args.keep_alive,
            max_header_bytes=args.max_header_bytes,
            max_timeout=args.max_timeout,
            max_output_cap=args.max_output_cap,
            sandbox=sandbox_config(args, overrides),
        )
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'options'}: "
            f"{err['msg'].removeprefix('Value error, ')}"
            for err in e.errors(include_url=False)
        )
        raise ConfigError(f"invalid server option: {problems}") from None


def add_nginx_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``tir-agent sandbox nginx-config``."""
    parser.add_argument(
        "--upstream",
        action="append",
        required=True,
        metavar="URL",
        help="a sandbox server, http://host:port (repeat for each server)",
    )
    parser.add_argument(
        "--listen", default="127.0.0.1:8080", help="nginx's address (default 127.0.0.1:8080)"
    )
    parser.add_argument("--worker-processes", default="auto", help="nginx workers (auto)")
    parser.add_argument("--max-body", default="8m", help="largest request body nginx accepts")
    parser.add_argument(
        "--keepalive", type=int, default=64, help="idle connections per worker to the servers"
    )
    parser.add_argument("--pid-file", help="where nginx writes its pid (default: in the prefix)")
    parser.add_argument("--error-log", default="stderr", help="stderr or a file")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log INFO events")


def nginx_config(args: argparse.Namespace) -> str:
    """The nginx.conf text for ``tir-agent sandbox nginx-config`` arguments."""
    from tir_agent.service.nginx import render_nginx_config  # written beside this module

    workers: int | str = args.worker_processes
    if isinstance(workers, str) and workers.isdigit():
        workers = int(workers)
    return render_nginx_config(
        args.upstream,
        listen=args.listen,
        pid_file=args.pid_file,
        error_log=args.error_log,
        worker_processes=workers,
        max_body=args.max_body,
        keepalive=args.keepalive,
    )
