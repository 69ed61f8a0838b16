"""``tir-agent sandbox serve`` / ``nginx-config`` options, parsed in-process (nothing served)."""

from __future__ import annotations

import argparse

import pytest

from tir_agent.cli import main
from tir_agent.errors import ConfigError
from tir_agent.service import command
from tir_agent.service.config import ServiceConfig


def config(*argv: str) -> ServiceConfig:
    parser = argparse.ArgumentParser()
    command.add_serve_arguments(parser)
    args, extra = parser.parse_known_args(argv)
    return command.service_config(args, extra)


def test_defaults() -> None:
    c = config()
    assert (c.host, c.port, c.token, c.max_body_bytes, c.shutdown_grace) == (
        "127.0.0.1",
        6000,
        None,
        16 * 1024**2,
        30.0,
    )
    assert c.sandbox == ServiceConfig().sandbox


def test_flags_then_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIR_AGENT_SANDBOX_TOKEN", "from-env")
    c = config(
        "--port=7000",
        "--timeout=2.5",
        "--max-output-characters=50",
        "--max-sessions=none",
        "--idle-timeout=30",
        "--memory-limit=512M",
        "--no-protect-state",
        "--max-body-bytes=1k",
        "preload=[numpy]",
        "++max_processes=8",
        "timeout=3",
        "env={A: b}",
        "cpu_time_limit=None",
    )
    assert c.port == 7000
    assert c.token == "from-env"
    assert c.max_body_bytes == 1024
    s = c.sandbox
    assert s.timeout == 3.0  # the override wins over the flag
    assert s.max_output_characters == 50
    assert s.max_sessions is None
    assert s.idle_timeout == 30.0
    assert s.memory_limit == 512 * 1024**2
    assert s.protect_state is False
    assert s.preload == ("numpy",)
    assert s.max_processes == 8
    assert s.env == {"A": "b"}
    assert s.cpu_time_limit is None


def test_token_flag_beats_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIR_AGENT_SANDBOX_TOKEN", "from-env")
    assert config("--token", "flag").token == "flag"
    monkeypatch.setenv("TIR_AGENT_SANDBOX_TOKEN", "")
    assert config().token is None


def test_unknown_and_invalid_options_say_what_is_wrong() -> None:
    with pytest.raises(ConfigError, match="Did you mean: max_processes"):
        config("max_proceses=3")
    with pytest.raises(ConfigError, match="timeout"):
        config("timeout=-1")
    with pytest.raises(ConfigError, match="max_sessions"):
        config("max_sessions=lots")
    with pytest.raises(ConfigError, match="port"):
        config("--port=70000")


def test_sizes() -> None:
    assert command.size("4G") == 4 * 1024**3
    assert command.size("1.5GiB") == int(1.5 * 1024**3)
    assert command.size("123") == 123
    assert command.size("none") is None
    with pytest.raises(argparse.ArgumentTypeError):
        command.size("lots")


def test_serve_reports_bad_options_with_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sandbox", "serve", "no_such_option=1"]) == 2
    assert "unknown sandbox option 'no_such_option'" in capsys.readouterr().err


def test_nginx_config_prints_a_config(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["sandbox", "nginx-config", "--upstream", "http://127.0.0.1:6001"]
    assert main([*argv, "--upstream", "http://127.0.0.1:6002", "--listen", "127.0.0.1:9000"]) == 0
    out = capsys.readouterr().out
    assert "hash $http_x_session_id consistent" in out
    assert "127.0.0.1:6001" in out and "127.0.0.1:6002" in out
    assert "127.0.0.1:9000" in out


def test_a_sandbox_that_cannot_start_is_reported_with_status_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tests.servers import free_port

    argv = ["sandbox", "serve", "--port", str(free_port()), "python=/nonexistent/python"]
    assert main([*argv, "preload=[]"]) == 1
    err = capsys.readouterr().err
    assert "tir-agent: IsolationError: cannot start the sandbox interpreter" in err
    assert "Traceback" not in err
    assert "serving on" not in err


def test_a_port_in_use_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["sandbox", "serve", "--port", str(port), "preload=[]"]) == 2
    err = capsys.readouterr().err
    assert f"cannot serve on 127.0.0.1:{port}" in err
    assert "--port" in err
