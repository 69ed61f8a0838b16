"""render_nginx_config: the rendered nginx.conf, checked by the real nginx binary (``nginx -t``)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tir_agent.errors import ConfigError
from tir_agent.service.nginx import nginx_command, render_nginx_config, upstream_address
from tir_agent.service.server import KEEP_ALIVE


def nginx_test(tmp_path: Path, config: str) -> subprocess.CompletedProcess[str]:
    conf = tmp_path / "nginx.conf"
    conf.write_text(config)
    return subprocess.run(
        nginx_command(tmp_path, conf, test=True), capture_output=True, text=True, timeout=30
    )


def directives(config: str) -> list[str]:
    """Every directive line, comments and blank lines removed, whitespace collapsed."""
    lines = (re.sub(r"\s+", " ", ln.split("#", 1)[0]).strip() for ln in config.splitlines())
    return [ln for ln in lines if ln]


def test_default_config_passes_nginx_t(tmp_path: Path) -> None:
    config = render_nginx_config(["http://127.0.0.1:6001", "http://127.0.0.1:6002"])
    result = nginx_test(tmp_path, config)
    assert result.returncode == 0, result.stderr
    # The temp directories nginx created live under the prefix, not under /var/lib/nginx.
    for name in ("client_body_temp", "proxy_temp", "fastcgi_temp", "uwsgi_temp", "scgi_temp"):
        assert (tmp_path / name).is_dir()


def test_every_option_passes_nginx_t(tmp_path: Path) -> None:
    config = render_nginx_config(
        ["10.0.0.5:7000", "localhost", "http://[::1]:6003/"],
        listen="18123",
        pid_file=str(tmp_path / "run" / "n.pid"),
        error_log="logs/error.log",
        worker_processes=3,
        max_body="16m",
        keepalive=8,
    )
    (tmp_path / "run").mkdir()
    (tmp_path / "logs").mkdir()
    result = nginx_test(tmp_path, config)
    assert result.returncode == 0, result.stderr
    lines = directives(config)
    assert f"pid {tmp_path}/run/n.pid;" in lines
    assert "error_log logs/error.log warn;" in lines
    assert "worker_processes 3;" in lines
    assert "client_max_body_size 16m;" in lines
    assert "keepalive 8;" in lines
    assert "listen 18123;" in lines
    assert "server 10.0.0.5:7000 max_fails=1 fail_timeout=10s;" in lines
    assert "server localhost:6000 max_fails=1 fail_timeout=10s;" in lines
    assert "server [::1]:6003 max_fails=1 fail_timeout=10s;" in lines


def test_the_choices_that_matter_are_in_the_config() -> None:
    lines = directives(render_nginx_config(["127.0.0.1:6001"]))
    # Foreground, no root: no user switch, pid and temp paths relative to the prefix.
    assert "daemon off;" in lines
    assert not any(ln.startswith("user ") for ln in lines)
    assert "pid nginx.pid;" in lines
    assert "error_log stderr warn;" in lines
    assert "listen 127.0.0.1:8080;" in lines
    # Affinity on X-Session-ID, consistent hashing.
    assert "hash $http_x_session_id consistent;" in lines
    # Keep-alive to the servers.
    assert "keepalive 64;" in lines
    assert "proxy_http_version 1.1;" in lines
    assert 'proxy_set_header Connection "";' in lines
    # Headers the servers need.
    assert "proxy_set_header Authorization $http_authorization;" in lines
    assert "proxy_set_header X-Session-ID $http_x_session_id;" in lines
    # Body limit and long reads.
    assert "client_max_body_size 32m;" in lines
    assert "proxy_read_timeout 3600s;" in lines
    # Retry only unreached servers: never non_idempotent (a POST is never re-sent).
    assert "proxy_next_upstream error timeout;" in lines
    assert not any("non_idempotent" in ln for ln in lines)


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("http://127.0.0.1:6001", "127.0.0.1:6001"),
        ("http://127.0.0.1:6001/", "127.0.0.1:6001"),
        ("127.0.0.1:6001", "127.0.0.1:6001"),
        ("sandbox", "sandbox:6000"),
        ("http://sandbox-0.sandbox.ns.svc", "sandbox-0.sandbox.ns.svc:6000"),
        ("http://[::1]:7000", "[::1]:7000"),
        (" http://h:1 ", "h:1"),
    ],
)
def test_upstream_address(url: str, address: str) -> None:
    assert upstream_address(url) == address


@pytest.mark.parametrize(
    ("upstreams", "options", "message"),
    [
        ([], {}, "at least one upstream"),
        ("http://127.0.0.1:6001", {}, "list of server URLs"),
        (["https://h:1"], {}, "only http://"),
        (["http://h:1/api"], {}, "without a path"),
        (["http://h:99999"], {}, "invalid port"),
        (["http://h;evil:1"], {}, "invalid host"),
        (["h:1", "http://h:1/"], {}, "listed twice: h:1"),
        (["h:1"], {"listen": "127.0.0.1:8080; include /etc/passwd"}, "cannot go into"),
        (["h:1"], {"listen": "localhost"}, "host:port"),
        (["h:1"], {"listen": "127.0.0.1:0"}, "host:port"),
        (["h:1"], {"pid_file": "/tmp/x pid"}, "cannot go into"),
        (["h:1"], {"error_log": "stderr;"}, "cannot go into"),
        (["h:1"], {"worker_processes": 0}, "worker_processes"),
        (["h:1"], {"worker_processes": "many"}, "worker_processes"),
        (["h:1"], {"max_body": "8 MB"}, "max_body"),
        (["h:1"], {"keepalive": 0}, "keepalive"),
    ],
)
def test_invalid_options_raise_config_error(
    upstreams: list[str], options: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        render_nginx_config(upstreams, **options)  # type: ignore[arg-type]


def test_a_broken_config_fails_nginx_t(tmp_path: Path) -> None:
    """The nginx -t check above can fail: a config with an unknown directive does."""
    config = render_nginx_config(["127.0.0.1:6001"]).replace("keepalive 64;", "keepalive_x 64;")
    result = nginx_test(tmp_path, config)
    assert result.returncode != 0
    assert "keepalive_x" in result.stderr


def test_nginx_drops_idle_server_connections_before_the_server_does() -> None:
    """Otherwise nginx could send a request on a connection the server is just closing, and
    answer 502 instead of re-sending the POST."""
    lines = directives(render_nginx_config(["127.0.0.1:6001"]))
    upstream = lines[lines.index("upstream tir_sandbox {") :]
    idle = next(ln for ln in upstream if ln.startswith("keepalive_timeout "))
    assert idle.endswith("s;")
    assert int(idle.removeprefix("keepalive_timeout ").removesuffix("s;")) < KEEP_ALIVE
