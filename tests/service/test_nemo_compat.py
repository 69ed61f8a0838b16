"""NeMo-Skills' client protocol against ``tir-agent sandbox serve``, replies read as they read them.

Requests are built exactly as their ``LocalSandbox`` builds them and replies are read as it and
their code-execution wrapper read them (:mod:`tests.service.nemo_client`). The expected replies
are those of their own server (``local_sandbox_server.py``, commit 0b012df, with its
``tests/test_code_execution.py``), including their few-shot examples' code and outputs byte for
byte (``data/nemo_skills_few_shots.json``, Apache-2.0, see ``data/NOTICE.md``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import ServerProcess, start_server
from tests.service.nemo_client import NemoClient

FEW_SHOTS = json.loads((Path(__file__).parent / "data" / "nemo_skills_few_shots.json").read_text())
KEYS = ["process_status", "stderr", "stdout"]
"""What their callers get (their client pops ``new_session_created``), in their server's order."""


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    # their few-shot examples import sympy and numpy: preloaded, as in their sandbox image
    with start_server("preload=[numpy, sympy]", "max_processes=32", "--memory-limit", "2G") as s:
        yield s


@pytest.fixture
def nemo(server: ServerProcess) -> Iterator[NemoClient]:
    client = NemoClient(server.url)
    yield client
    client.close()


def reply(status: str, stdout: str = "", stderr: str = "") -> dict[str, str]:
    return {"process_status": status, "stderr": stderr, "stdout": stdout}


@pytest.mark.parametrize("name", sorted(FEW_SHOTS["examples"]))
def test_few_shot_examples_byte_for_byte(nemo: NemoClient, name: str) -> None:
    for solution in FEW_SHOTS["examples"][name]:
        session = None
        for code, expected in solution:
            # their client's default timeout is 10 s; one cell loops 2015 times through sympy,
            # which took longer than that on this shared machine at load 28
            output, session = nemo.execute_code(code, session_id=session, timeout=60.0)
            assert list(output) == KEYS
            assert output == reply("completed", expected), f"{name}: {code!r}"


def test_their_ipython_cases(nemo: NemoClient) -> None:
    triple = '\ndef my_func():\n    """Test function"""\n    print("asdf")\nmy_func()\n'
    assert nemo.execute_code(triple)[0] == reply("completed", "asdf\n")
    assert nemo.execute_code("a = 2")[0] == reply("completed")
    traceback = (
        "Traceback (most recent call last):\n    1 / 0\nZeroDivisionError: division by zero\n"
    )
    assert nemo.execute_code("1 / 0")[0] == reply("error", traceback)
    caret = "    b = 3\n    ^\nIndentationError: unexpected indent\n"
    assert nemo.execute_code("a = 2\n b = 3")[0] == reply("error", caret)
    output, session = nemo.execute_code("\n    a = 1\n    a\n    ")  # dedented
    assert output == reply("completed", "1\n")
    assert nemo.execute_code("a + 5", session_id=session)[0] == reply("completed", "6\n")
    generation = "height = 20 * 12\nafter = height + 30 * x\nx = (600 - height) / 30\nx\n"
    name_error = (
        "Traceback (most recent call last):\n    after = height + 30 * x\n"
        "NameError: name 'x' is not defined\n"
    )
    assert nemo.execute_code(generation)[0] == reply("error", name_error)


def test_timeouts_keep_the_number_as_sent(nemo: NemoClient) -> None:
    code = "import time\nprint('printed before')\ntime.sleep(5)\nprint('done')"
    output, session = nemo.execute_code(code, timeout=1)
    assert output == reply("timeout", stderr="Execution timed out after 1 seconds\n")
    output, _ = nemo.execute_code(code, timeout=1.0, session_id=session)
    assert output == reply("timeout", stderr="Execution timed out after 1.0 seconds\n")
    output, _ = nemo.execute_code("print('after')", timeout=2, session_id=session)
    assert output == reply("completed", "after\n")


def test_state_restoration_by_their_replay(nemo: NemoClient) -> None:
    _, session = nemo.execute_code('print("H1"); a = 41')
    assert session is not None
    nemo.execute_code('print("H2"); a += 1', session_id=session)
    failed, _ = nemo.execute_code('print("ERR"); a = 0; raise ValueError()', session_id=session)
    assert failed["process_status"] == "error"
    assert failed["stdout"].startswith("ERR\nTraceback (most recent call last):\n")
    assert failed["stdout"].endswith("ValueError: \n") or failed["stdout"].endswith("ValueError\n")
    history = list(nemo.histories[session])
    nemo.delete_session(session)
    nemo.histories[session] = history
    output, _ = nemo.execute_code("print(a)", session_id=session)  # replays the two good cells
    assert output == reply("completed", "42\n")


def test_python_shell_and_unknown_languages_as_their_wrapper_reads_them(nemo: NemoClient) -> None:
    output, session = nemo.execute_code(
        "print(input('something '))", language="python", std_input="new"
    )
    assert (output, session) == (reply("completed", "something new\n"), None)
    output, _ = nemo.execute_code("1 / 0", language="pypy3")
    assert output["stderr"].endswith("ZeroDivisionError: division by zero\n")
    output, _ = nemo.execute_code('echo "Hello, World!"', language="shell")
    assert output == reply("completed", "Hello, World!\n")
    output, _ = nemo.execute_code("echo 'Hello", language="shell")
    assert output["process_status"] == "error"
    assert "unexpected EOF while looking for matching" in output["stderr"]
    output, _ = nemo.execute_code("#eval 1", language="lean4")
    assert list(output) == KEYS
    assert output["process_status"] == "error"
