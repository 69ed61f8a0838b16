"""An nginx configuration that spreads sandbox sessions over several servers, with affinity.

:func:`render_nginx_config` writes a complete ``nginx.conf`` (``tir-agent sandbox nginx-config``
prints it) for running several ``tir-agent sandbox serve`` processes behind one nginx, the way
NeMo-Skills deploys its sandbox. The choices that matter, each also explained in
``docs/scale-out.md``:

- **Affinity**: ``hash ... consistent`` on the ``X-Session-ID`` header, so every request of one
  session reaches the server holding its interpreter, from the very first request on. Requests
  without the header (stateless runs, health checks) have an empty key, for which nginx's hash
  balancer falls back to round-robin, so they spread over all servers.
  When a server dies, consistent hashing moves only *its* keys to the others: its sessions are
  reported lost (404 ``session_not_found`` from the new server), every other session goes on.
- **Never run a cell twice**: ``proxy_next_upstream error timeout`` retries on another server only
  requests that were not yet sent (nginx never re-sends a POST once it reached a server), so a
  server that fails while running a cell gives a 502, never a second execution elsewhere.
- **Speed**: HTTP/1.1 keep-alive connections to the servers; request bodies buffered in memory.
- **No root**: the process runs in the foreground (``daemon off``) and every path (pid file,
  temp directories) is relative to the prefix given with ``nginx -p``; any port above 1023 works
  without privileges. The layout matches Debian 12's nginx 1.22 and later versions.

Run it with ``nginx -p DIR -c DIR/nginx.conf -e stderr`` (see :func:`nginx_command`).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from tir_agent.errors import ConfigError
from tir_agent.sandbox.http_api import DEFAULT_PORT, MAX_BODY_BYTES

UPSTREAM_NAME = "tir_sandbox"
"""Name of the ``upstream`` block (and of its shared-memory zone)."""

NGINX_BINARY = "/usr/sbin/nginx"
"""Where Debian's package installs nginx; :func:`find_nginx` falls back to ``PATH``."""

MAX_FAILS = 1
"""Failed connections after which nginx stops sending requests to a server for
:data:`FAIL_TIMEOUT`; its keys move to the next server on the hash ring meanwhile."""
FAIL_TIMEOUT = "10s"

CONNECT_TIMEOUT = "5s"
"""How long nginx waits for a TCP connection to a server before trying the next one (a machine
that died without a reset; a dead process on a live machine refuses at once)."""

READ_TIMEOUT = "3600s"
"""How long nginx waits for a reply: longer than any cell's timeout, so nginx never cuts one off
(the server enforces each execution's own limit)."""

UPSTREAM_IDLE_TIMEOUT = "60s"
"""nginx closes an idle keep-alive connection to a server after this long. Shorter than the
server's own keep-alive (75 s, ``tir_agent.service.server.KEEP_ALIVE``), so nginx never sends a
request on a connection the server is closing (nginx answers that with a 502 rather than re-send
a POST)."""

_SAFE = re.compile(r"[^\s;{}'\"\\#$]+")
"""A value that can stand as one nginx token: no spaces, quotes, braces, ``;``, ``#`` or ``$``."""
_SIZE = re.compile(r"[0-9]+[kKmMgG]?")
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)")


def _token(value: str, what: str) -> str:
    if not _SAFE.fullmatch(value):
        raise ConfigError(
            f"{what} {value!r} cannot go into an nginx config: no spaces, quotes, braces, ';', "
            "'#' or '$'"
        )
    return value


def upstream_address(url: str) -> str:
    """``host:port`` of a server given as ``http://host:port``, ``host:port`` or ``host``.

    The port defaults to :data:`~tir_agent.sandbox.http_api.DEFAULT_PORT` (the server's default).
    Raises :class:`~tir_agent.errors.ConfigError` for anything nginx could not proxy to.
    """
    text = url.strip()
    parts = urlsplit(text if "://" in text else f"http://{text}")
    if parts.scheme != "http":
        raise ConfigError(
            f"upstream {url!r}: only http:// servers can be proxied (terminate TLS at nginx)"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ConfigError(f"upstream {url!r}: give a server as http://host:port, without a path")
    try:
        port = parts.port
    except ValueError as e:
        raise ConfigError(f"upstream {url!r}: invalid port") from e
    host = parts.netloc.rsplit(":", 1)[0] if parts.port is not None else parts.netloc
    if not _HOST.fullmatch(host):
        raise ConfigError(f"upstream {url!r}: invalid host name {host!r}")
    return f"{host}:{port if port is not None else DEFAULT_PORT}"


def _listen(listen: str) -> str:
    _token(listen, "listen address")
    port = listen.rsplit(":", 1)[-1]
    if not listen.startswith("unix:") and not (port.isdigit() and 0 < int(port) < 65536):
        raise ConfigError(
            f"listen address {listen!r}: give host:port (e.g. 127.0.0.1:8080), a port or unix:/path"
        )
    return listen


def render_nginx_config(
    upstreams: Sequence[str],
    *,
    listen: str = "127.0.0.1:8080",
    pid_file: str | None = None,
    error_log: str = "stderr",
    worker_processes: int | str = "auto",
    max_body: str = "32m",
    keepalive: int = 64,
) -> str:
    """A complete ``nginx.conf`` balancing sandbox sessions over ``upstreams`` with affinity.

    ``upstreams``: the servers, as ``http://host:port`` (or ``host:port``), each once.
    ``listen``: nginx's own address (``host:port``, a port, or ``unix:/path``).
    ``pid_file``: where nginx writes its pid; ``None`` = ``nginx.pid`` in the prefix directory.
    ``error_log``: ``stderr`` or a file (relative paths are under the prefix).
    ``worker_processes``: a number or ``auto`` (one per core).
    ``max_body``: the largest request body nginx accepts (nginx size: ``32m``); keep it above the
    servers' limit (16 MiB by default) so their JSON 413 reaches the client.
    ``keepalive``: idle keep-alive connections each nginx worker keeps to the servers.
    """
    if isinstance(upstreams, str):
        raise ConfigError("upstreams must be a list of server URLs, not one string")
    addresses = [upstream_address(u) for u in upstreams]
    if not addresses:
        raise ConfigError("give at least one upstream server (--upstream http://host:port)")
    duplicates = sorted({a for a in addresses if addresses.count(a) > 1})
    if duplicates:
        raise ConfigError(f"upstream servers listed twice: {', '.join(duplicates)}")
    if not (
        worker_processes == "auto"
        or (isinstance(worker_processes, int) and worker_processes >= 1)
        or (isinstance(worker_processes, str) and worker_processes.isdigit())
    ):
        raise ConfigError(
            f"worker_processes must be a positive number or 'auto', not {worker_processes!r}"
        )
    if not _SIZE.fullmatch(max_body):
        raise ConfigError(f"max_body {max_body!r}: give an nginx size such as 8m or 4096k")
    if keepalive < 1:
        raise ConfigError(f"keepalive must be at least 1, not {keepalive}")
    pid = _token(pid_file if pid_file is not None else "nginx.pid", "pid file")
    log = _token(error_log, "error log")
    servers = "\n".join(
        f"        server {a} max_fails={MAX_FAILS} fail_timeout={FAIL_TIMEOUT};" for a in addresses
    )
    return _TEMPLATE.format(
        listen=_listen(listen),
        pid=pid,
        error_log=log,
        workers=worker_processes,
        max_body=max_body,
        keepalive=keepalive,
        servers=servers,
        upstream=UPSTREAM_NAME,
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        idle_timeout=UPSTREAM_IDLE_TIMEOUT,
        server_limit=MAX_BODY_BYTES,
    )


def find_nginx() -> str:
    """Path of the nginx binary (Debian's ``/usr/sbin/nginx``, else ``nginx`` on ``PATH``)."""
    if Path(NGINX_BINARY).is_file():
        return NGINX_BINARY
    found = shutil.which("nginx")
    if found is None:
        raise ConfigError("nginx is not installed: apt-get install nginx (or scripts/setup.sh)")
    return found


def nginx_command(prefix: str | Path, conf: str | Path, *, test: bool = False) -> list[str]:
    """The command running nginx in the foreground with ``conf`` and temp files under ``prefix``
    (``test=True``: only check the configuration, ``nginx -t``)."""
    prefix_dir = str(Path(prefix).resolve()) + "/"
    cmd = [find_nginx(), "-p", prefix_dir, "-c", str(Path(conf).resolve()), "-e", "stderr"]
    return [*cmd, "-t", "-q"] if test else cmd


# Doubled braces are literal nginx braces (str.format).
_TEMPLATE = """\
# nginx in front of tir-agent sandbox servers (rendered by `tir-agent sandbox nginx-config`).
# Run in the foreground, without root (any port above 1023):
#     nginx -p PREFIX_DIR -c PREFIX_DIR/nginx.conf -e stderr
# Relative paths below are under PREFIX_DIR. See docs/scale-out.md.

daemon off;
master_process on;
worker_processes {workers};
pid {pid};
error_log {error_log} warn;
lock_file nginx.lock;

events {{
    worker_connections 4096;
}}

http {{
    access_log off;
    server_tokens off;
    default_type application/json;

    # Temporary files under the prefix (the packaged defaults under /var/lib/nginx need root).
    client_body_temp_path client_body_temp;
    proxy_temp_path proxy_temp;
    fastcgi_temp_path fastcgi_temp;
    uwsgi_temp_path uwsgi_temp;
    scgi_temp_path scgi_temp;

    upstream {upstream} {{
        zone {upstream} 64k;
        # Consistent hashing on X-Session-ID: a session stays on one server; when a server dies
        # only its keys move (its sessions are reported lost, the others keep their state).
        # Requests without the header (stateless runs, health checks) go round-robin.
        hash $http_x_session_id consistent;
{servers}
        keepalive {keepalive};
        keepalive_requests 100000;
        keepalive_timeout {idle_timeout};
    }}

    server {{
        listen {listen};
        keepalive_timeout 75s;
        keepalive_requests 100000;

        # Keep this above the servers' own limit ({server_limit} bytes by default) so their JSON
        # 413 reaches the client; bodies up to 1m stay in memory.
        client_max_body_size {max_body};
        client_body_buffer_size 1m;

        location / {{
            proxy_pass http://{upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header Authorization $http_authorization;
            proxy_set_header X-Session-ID $http_x_session_id;
            proxy_buffering off;

            # Cells run as long as their own timeout allows; the server enforces it.
            proxy_connect_timeout {connect_timeout};
            proxy_send_timeout 300s;
            proxy_read_timeout {read_timeout};

            # Try another server only when this one could not be reached. nginx never re-sends
            # a POST that reached a server, so a cell never runs twice.
            proxy_next_upstream error timeout;
            proxy_next_upstream_timeout 30s;

            # nginx's own failures as JSON in the tir-agent API's error shape.
            error_page 502 503 504 = @upstream_failed;
            error_page 413 = @body_too_large;
        }}

        location @upstream_failed {{
            add_header X-TIR-Agent-API 1 always;
            return 502 '{{"error": {{"type": "sandbox_error", "message": "nginx: no sandbox server answered (upstream: $upstream_addr, status: $upstream_status); a session held by a failed server is lost"}}}}\\n';
        }}

        location @body_too_large {{
            add_header X-TIR-Agent-API 1 always;
            return 413 '{{"error": {{"type": "body_too_large", "message": "nginx: request body larger than client_max_body_size {max_body}"}}}}\\n';
        }}

        location = /nginx-status {{
            stub_status;
            allow 127.0.0.1;
            allow ::1;
            deny all;
        }}
    }}
}}
"""

__all__ = [
    "NGINX_BINARY",
    "UPSTREAM_NAME",
    "find_nginx",
    "nginx_command",
    "render_nginx_config",
    "upstream_address",
]
