"""``ipython`` cells of the NeMo-Skills API run through IPython as their server runs them.

Expected texts are what their server (``local_sandbox_server.py``, commit 0b012df) answered on
this machine for the same requests, where IPython's version does not change them (``Out[N]``
of unpostprocessed verbosities, and colour codes, depend on the IPython installed).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.servers import ServerProcess, start_server
from tests.service.client import V1, Client
from tests.service.conftest import LIGHT
from tests.service.test_nemo import execute


@pytest.fixture(scope="module", params=["protected", "fast"])
def server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    extra = ("--no-protect-state",) if request.param == "fast" else ()
    with start_server(*LIGHT, *extra) as s:
        yield s


def sid() -> str:
    return str(uuid.uuid4())


def test_values_are_shown_by_ipythons_pretty_printer(client: Client) -> None:
    s = sid()
    body = execute(client, s, "list(range(30))")
    assert body["stdout"] == "[" + ",\n ".join(str(i) for i in range(30)) + "]\n"
    # what was printed before a multi-line value keeps their blank line (their "Out[N]: \n")
    body = execute(client, s, "print('a'); {i: str(i) * 3 for i in range(12)}")
    lines = ",\n ".join(f"{i}: '{str(i) * 3}'" for i in range(12))
    assert body["stdout"] == "a\n\n{" + lines + "}\n"
    assert execute(client, s, "x = 5\nx * 2;")["stdout"] == "10\n"  # theirs ignores the ';'
    assert execute(client, s, "_ + 1")["stdout"] == "11\n"


def test_output_is_tidied_as_theirs(client: Client) -> None:
    code = "import sys\nprint('\\n\\n  x  \\n\\n')\nprint('Out[3]: y')\nprint('e', file=sys.stderr)"
    body = execute(client, sid(), code)
    assert (body["stdout"], body["stderr"]) == ("  x  \n\n\ny\n", "e\n")  # theirs, measured


def test_magics_and_shell_lines(client: Client) -> None:
    s = sid()
    body = execute(client, s, "%time y = sum(range(10))\ny")
    assert body["stdout"].startswith("CPU times: user ")  # type: ignore[union-attr]
    assert "\nWall time: " in body["stdout"]  # type: ignore[operator]
    assert body["stdout"].endswith("\n45\n")  # type: ignore[union-attr]
    assert execute(client, s, "%%time\nz = 3\nz")["stdout"].endswith("\n3\n")  # type: ignore[union-attr]
    assert execute(client, s, "files = !echo one two\nfiles")["stdout"] == "['one two']\n"
    # their server loses a child process's output (it goes to the server's log); ours shows it
    assert execute(client, s, "!echo hi")["stdout"] == "hi\n"


@pytest.mark.parametrize(
    ("verbosity", "expected"),
    [
        (
            "Plain",
            "Traceback (most recent call last):\n    f()\n    return 1 / 0\nZeroDivisionError: division by zero\n",
        ),
        ("Minimal", "ZeroDivisionError: division by zero\n"),
    ],
)
def test_tracebacks_go_to_stdout_in_the_verbosity_asked(
    client: Client, verbosity: str, expected: str
) -> None:
    body = execute(client, sid(), "def f():\n    return 1 / 0\nf()", traceback_verbosity=verbosity)
    assert (body["process_status"], body["stdout"], body["stderr"]) == ("error", expected, "")


def test_context_and_verbose_are_ipythons_own_untidied(client: Client) -> None:
    for verbosity in ("Context", "Verbose"):
        body = execute(
            client, sid(), "def f():\n    return 1 / 0\nf()", traceback_verbosity=verbosity
        )
        out = body["stdout"]
        assert body["process_status"] == "error"
        assert "\x1b[" in out  # colours kept, as theirs
        assert "<ipython-input-1-" in out  # their cell names, not IPython's "Cell In[1]"
        assert "----> 3" in out.replace("\x1b[0m", "").replace("\x1b[39m", "")  # type: ignore[union-attr]
        value = execute(client, sid(), "1 + 1", traceback_verbosity=verbosity)["stdout"]
        assert value.startswith("Out[") and value.endswith("]: 2\n")  # type: ignore[union-attr]


def test_unknown_verbosity_is_an_error_reply(client: Client) -> None:
    body = execute(client, sid(), "1", traceback_verbosity="Loud")
    assert body["process_status"] == "error"
    assert "'Loud' is not one of Plain, Context, Verbose, Minimal" in body["stderr"]  # type: ignore[operator]


def test_timeout_drops_the_output_and_keeps_the_state(client: Client) -> None:
    s = sid()
    execute(client, s, "x = 7")
    body = execute(client, s, "x = 8\nprint('before')\nimport time\ntime.sleep(30)", timeout=0.5)
    assert body == {
        "new_session_created": False,
        "process_status": "timeout",
        "stderr": "Execution timed out after 0.5 seconds\n",
        "stdout": "",
    }
    # protected: rolled back to 7; fast: stopped after x = 8, kept
    assert execute(client, s, "x")["stdout"] in ("7\n", "8\n")
    assert execute(client, s, "print('next')")["stdout"] == "next\n"


def test_shell_requests_share_files_and_the_shared_session_is_not_listed(client: Client) -> None:
    name = f"/tmp/shared-{uuid.uuid4().hex}"
    assert (
        execute(client, None, f"echo kept > {name}", language="shell")["process_status"]
        == "completed"
    )
    body = execute(client, None, f"cat {name}; rm {name}", language="shell")
    assert body == {"process_status": "completed", "stderr": "", "stdout": "kept\n"}
    assert "\x00" not in "".join(client.request("GET", "/sessions").body["sessions"])
    assert all(
        "\x00" not in s["session_id"]
        for s in client.request("GET", "/v1/sessions", headers=V1).body["sessions"]
    )
    assert client.request("DELETE", "/sessions/%00nemo-shell").status == 404


def test_v1_runs_ipython_cells_on_request_and_plain_python_by_default(client: Client) -> None:
    s = f"v1-{uuid.uuid4().hex}"
    assert client.request("POST", "/v1/sessions", headers={**V1, "X-Session-ID": s}).status == 201
    path = f"/v1/sessions/{s}/run"
    headers = {**V1, "X-Session-ID": s}
    plain = client.request("POST", path, {"code": "1 / 0"}, headers=headers).body
    assert plain["stdout"] == "" and plain["stderr"].endswith(
        "ZeroDivisionError: division by zero\n"
    )
    assert (
        client.request(
            "POST", path, {"code": "'__IPYTHON__' in dir(__builtins__)"}, headers=headers
        ).body["stdout"]
        == "False\n"
    )
    body = {"code": "a = 1\n1 / 0", "ipython": True, "traceback_verbosity": "Minimal"}
    cell = client.request("POST", path, body, headers=headers).body
    assert (cell["status"], cell["stdout"], cell["stderr"]) == (
        "error",
        "ZeroDivisionError: division by zero\n",
        "",
    )
    assert client.request("POST", path, {"code": "a"}, headers=headers).body["stdout"] == "1\n"
    wrong = client.request(
        "POST", path, {"code": "1", "traceback_verbosity": "Plain"}, headers=headers
    )
    assert wrong.status == 422
    assert "ipython" in wrong.body["error"]["message"]
