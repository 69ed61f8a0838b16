"""The NeMo-Skills API, with the request and reply shapes of REFERENCE.md §5.

Their client (``nemo_skills/code_execution/sandbox.py``) sends ``POST /execute`` with
``{generated_code, std_input, timeout, language, max_output_characters, traceback_verbosity}`` and
``X-Session-ID``, reads ``{process_status, stdout, stderr, new_session_created}``, deletes sessions
with ``DELETE /sessions/{id}`` (200, or 404 for an unknown id) and polls ``GET /health``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.servers import ServerProcess, start_server
from tests.service.client import Client
from tests.service.conftest import LIGHT

IPYTHON_FIELDS = ["new_session_created", "process_status", "stderr", "stdout"]
"""Their server's reply keys for ``ipython``, in its order (Flask sorts them); nothing else."""
SCRIPT_FIELDS = ["process_status", "stderr", "stdout"]
"""Their reply keys for ``python``, ``shell`` and the rest: no ``new_session_created``."""


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with start_server(*LIGHT) as s:  # protect_state on (the default): timeouts roll back
        yield s


def sid() -> str:
    return str(uuid.uuid4())  # what their client sends


def request(code: str, **fields: object) -> dict[str, object]:
    """A request exactly as their client builds it (``_prepare_request``)."""
    body: dict[str, object] = {
        "generated_code": code,
        "std_input": "",
        "timeout": 10.0,
        "language": "ipython",
        "max_output_characters": 1000,
        "traceback_verbosity": "Plain",
    }
    body.update(fields)
    return body


def execute(client: Client, session: str | None, code: str, **fields: object) -> dict[str, object]:
    headers = {"X-Session-ID": session} if session is not None else {}
    reply = client.request("POST", "/execute", request(code, **fields), headers=headers)
    assert reply.status == 200, reply.raw
    assert reply.headers["content-type"] == "application/json"
    language = fields.get("language", "ipython")
    assert list(reply.body) == (IPYTHON_FIELDS if language == "ipython" else SCRIPT_FIELDS)
    return reply.body  # type: ignore[no-any-return]


def test_ipython_keeps_state_and_reports_new_sessions(client: Client) -> None:
    s = sid()
    first = execute(client, s, "x = 41\nx + 1")
    assert first["process_status"] == "completed"
    assert first["stdout"] == "42\n"
    assert first["stderr"] == ""
    assert first["new_session_created"] is True
    second = execute(client, s, "x")
    assert second["stdout"] == "41\n"
    assert second["new_session_created"] is False


def test_ipython_without_session_header_is_400(client: Client) -> None:
    reply = client.request("POST", "/execute", request("1 + 1"))
    assert reply.status == 400
    assert reply.body == {"error": "X-Session-ID header required for ipython sessions"}
    reply = client.request("POST", "/execute", request("1 + 1"), headers={"X-Session-ID": ""})
    assert reply.status == 400


def test_error_reply_has_their_traceback_on_stdout(client: Client) -> None:
    body = execute(client, sid(), "1 / 0")
    assert body["process_status"] == "error"
    assert body["stdout"] == (
        "Traceback (most recent call last):\n    1 / 0\nZeroDivisionError: division by zero\n"
    )
    assert body["stderr"] == ""


def test_output_is_cut_at_max_output_characters(client: Client) -> None:
    body = execute(client, sid(), "print('a' * 50)", max_output_characters=10)
    assert body["stdout"] == "a" * 10 + "<output cut>"


def test_timeout_keeps_the_state_and_says_so(client: Client) -> None:
    s = sid()
    execute(client, s, "x = 7")
    body = execute(client, s, "x = 8\nwhile True: pass", timeout=0.5)
    assert body["process_status"] == "timeout"
    assert body["stderr"] == "Execution timed out after 0.5 seconds\n"  # theirs, no note
    # their client replays history only when new_session_created is true: here nothing was lost
    assert body["new_session_created"] is False
    after = execute(client, s, "x")
    assert after["stdout"] == "7\n"
    assert after["new_session_created"] is False


def test_delete_session_then_404_and_a_fresh_session(client: Client) -> None:
    s = sid()
    execute(client, s, "y = 1")
    reply = client.request("DELETE", f"/sessions/{s}", headers={"X-Session-ID": s})
    assert reply.status == 200
    assert reply.body == {"message": f"IPython session {s} deleted successfully"}
    reply = client.request("DELETE", f"/sessions/{s}", headers={"X-Session-ID": s})
    assert reply.status == 404
    assert reply.body == {"error": f"IPython session {s} not found"}
    again = execute(client, s, "y")
    assert again["new_session_created"] is True
    assert again["process_status"] == "error"
    assert "NameError" in again["stdout"]  # type: ignore[operator]


def test_list_sessions_shape(client: Client) -> None:
    s = sid()
    execute(client, s, "1")
    reply = client.request("GET", "/sessions")
    assert reply.status == 200
    assert list(reply.body) == ["backend", "sessions"]
    assert reply.body["backend"] == "ipython"
    info = reply.body["sessions"][s]
    assert list(info) == ["alive", "backend", "created", "last_used"]  # theirs, no extras
    assert info["alive"] is True
    assert info["backend"] == "ipython"
    assert info["created"] <= info["last_used"]


def test_python_is_stateless_and_reads_std_input(client: Client) -> None:
    code = "import sys\nname = input()\nrest = sys.stdin.read()\nprint(name.upper(), rest.split())"
    body = execute(client, None, code, language="python", std_input="ada\n1 2\n3\n")
    assert body == {"process_status": "completed", "stderr": "", "stdout": "ADA ['1', '2', '3']\n"}
    for language in ("python3", "pypy3"):
        body = execute(client, None, "print(name)", language=language)
        assert body["stderr"].endswith("NameError: name 'name' is not defined\n")  # type: ignore[union-attr]


def test_python_runs_as_a_script_like_python_dash_c(client: Client) -> None:
    # their server runs `python -c code`: no echo of a last expression, "completed" whatever
    # the exit, the interpreter's own traceback on stderr
    assert execute(client, None, "x = 1\nx", language="python") == {
        "process_status": "completed",
        "stderr": "",
        "stdout": "",
    }
    assert execute(client, None, "print('a')\n1 / 0", language="python") == {
        "process_status": "completed",
        "stderr": 'Traceback (most recent call last):\n  File "<string>", line 2, in <module>\n'
        "ZeroDivisionError: division by zero\n",
        "stdout": "a\n",
    }
    assert execute(client, None, "a = 2\n b = 3", language="python") == {
        "process_status": "completed",
        "stderr": '  File "<string>", line 2\n    b = 3\nIndentationError: unexpected indent\n',
        "stdout": "",
    }
    body = execute(client, None, "import sys; sys.exit('bye')", language="python3")
    assert body == {"process_status": "completed", "stderr": "bye\n", "stdout": ""}
    body = execute(client, None, "import sys; print(sys.argv, __name__)", language="python")
    assert body["stdout"] == "['-c'] __main__\n"


def test_python_input_past_the_end_is_eof_like_python(client: Client) -> None:
    body = execute(client, None, "a = input('? ')\nb = input()", language="python", std_input="1")
    assert body == {
        "process_status": "completed",
        "stderr": 'Traceback (most recent call last):\n  File "<string>", line 2, in <module>\n'
        "EOFError: EOF when reading a line\n",
        "stdout": "? ",
    }


def test_script_timeout_is_their_reply_with_the_timeout_as_sent(client: Client) -> None:
    code = "import time\nprint('early', flush=True)\ntime.sleep(30)"
    for timeout, text in ((1, "1"), (1.0, "1.0"), (0.5, "0.5")):
        body = execute(client, None, code, language="python", timeout=timeout)
        assert body == {
            "process_status": "timeout",
            "stderr": f"Execution timed out after {text} seconds\n",
            "stdout": "",
        }
    body = execute(client, None, "sleep 30", language="shell", timeout=1)
    assert body == {
        "process_status": "timeout",
        "stderr": "Execution timed out after 1 seconds\n",
        "stdout": "",
    }


def test_script_output_is_cut_and_newlines_read_as_theirs(client: Client) -> None:
    code = "import sys\nsys.stdout.write('a\\r\\nb\\rc' + 'x' * 20)\nsys.stderr.write('e' * 30)"
    body = execute(client, None, code, language="python", max_output_characters=10)
    # their pipes are read in text mode: "\r\n" and "\r" become "\n"
    assert body == {
        "process_status": "completed",
        "stderr": "e" * 10 + "<output cut>",
        "stdout": "a\nb\ncxxxxx<output cut>",
    }


def test_shell_runs_a_bash_script(client: Client) -> None:
    body = execute(client, None, 'echo "Hello, World!"\necho $((6 * 7))', language="shell")
    assert body == {"process_status": "completed", "stderr": "", "stdout": "Hello, World!\n42\n"}
    body = execute(client, None, "read a; echo got $a; exit 3", language="shell", std_input="x\n")
    assert body == {"process_status": "error", "stderr": "", "stdout": "got x\n"}
    body = execute(client, None, "echo 'Hello", language="shell")
    assert body["process_status"] == "error"
    assert body["stdout"] == ""
    assert "line 1: unexpected EOF while looking for matching" in body["stderr"]  # type: ignore[operator]


@pytest.mark.parametrize("language", ["lean4", "cobol"])
def test_other_languages_answer_in_their_reply_shape(client: Client, language: str) -> None:
    # an HTTP error here made their wrapper crash with KeyError('process_status')
    body = execute(client, None, "#eval 1", language=language)
    assert body["process_status"] == "error"
    assert body["stdout"] == ""
    assert language in body["stderr"].lower()  # type: ignore[union-attr]
    assert body["stderr"].endswith("\n")  # type: ignore[union-attr]


def test_health_needs_nothing(client: Client, server: ServerProcess) -> None:
    reply = client.request("GET", "/health")
    assert reply.status == 200
    assert reply.body["status"] == "healthy"
    assert reply.body["port"] == server.port


def test_malformed_requests_get_clear_errors(client: Client) -> None:
    reply = client.request("POST", "/execute", {"code": "1"}, headers={"X-Session-ID": "x"})
    assert reply.status == 422
    assert "generated_code" in reply.body["error"]
    reply = client.request(
        "POST",
        "/execute",
        raw=b'{"generated_code": ',
        headers={"Content-Type": "application/json", "X-Session-ID": "x"},
    )
    assert reply.status == 400
    assert "not valid JSON" in reply.body["error"]
    assert list(reply.body) == ["error"]  # their shape: no "type"
    reply = client.request("GET", "/execute")
    assert reply.status == 405
    assert reply.headers["allow"] == "POST"
    assert list(reply.body) == ["error"]
    reply = client.request("GET", "/nope")
    assert reply.status == 404
    assert list(reply.body) == ["error"]


def test_std_input_arrives_byte_for_byte(client: Client) -> None:
    data = "a\"b'c\\d \u00fc\u4e2d\n\ttab\nlast"
    code = "import sys\nprint(ascii(sys.stdin.read()))"
    body = execute(client, None, code, language="python", std_input=data)
    assert body["stdout"] == ascii(data) + "\n"


def test_language_python_needs_no_session_header_and_makes_none(client: Client) -> None:
    before = set(client.request("GET", "/sessions").body["sessions"])
    execute(client, None, "print(1)", language="python")
    assert set(client.request("GET", "/sessions").body["sessions"]) == before
