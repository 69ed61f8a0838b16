"""Notebook semantics: state, echo, separate streams, short tracebacks, no stdin."""

from __future__ import annotations

import random

import pytest

from tir_agent.sandbox.local import LocalSandbox

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_state_persists_across_cells(sandbox: LocalSandbox) -> None:
    async with sandbox.session() as s:
        assert (await s.run("x = 41")).stdout == ""
        r = await s.run("x + 1")
        assert (r.status, r.stdout, r.stderr, r.state) == ("completed", "42\n", "", "kept")
        await s.run("import math\ndef f(n):\n    return math.factorial(n)\nclass C:\n    v = 7")
        assert (await s.run("f(5), C.v, C().v")).stdout == "(120, 7, 7)\n"


async def test_echo_is_repr_of_final_bare_expression(sandbox: LocalSandbox) -> None:
    async with sandbox.session() as s:
        assert (await s.run("a = 1\na")).stdout == "1\n"
        assert (await s.run("'s'")).stdout == "'s'\n"
        assert (await s.run("None")).stdout == ""
        assert (await s.run("print(3)")).stdout == "3\n"  # print returns None: no echo
        assert (await s.run("b = 2")).stdout == ""
        assert (
            await s.run("import numpy as np\nnp.arange(5)")
        ).stdout == "array([0, 1, 2, 3, 4])\n"
        assert (await s.run("x = 5\nx if x else 0  # comment\n")).stdout == "5\n"


async def test_stdout_and_stderr_are_separate(sandbox: LocalSandbox) -> None:
    r = await sandbox.run("import sys\nprint('out')\nprint('err', file=sys.stderr)\nprint('out2')")
    assert (r.stdout, r.stderr) == ("out\nout2\n", "err\n")


async def test_short_traceback_is_byte_exact(sandbox: LocalSandbox) -> None:
    async with sandbox.session() as s:
        r = await s.run("1 / 0")
        assert r.status == "error" and r.reason == "exception" and r.state == "kept"
        assert r.stdout == ""
        assert (
            r.stderr
            == "Traceback (most recent call last):\n    1 / 0\nZeroDivisionError: division by zero\n"
        )


async def test_traceback_shows_each_user_frame_across_cells(sandbox: LocalSandbox) -> None:
    async with sandbox.session() as s:
        await s.run("def g(v):\n    return 1 / v\n\ndef h(v):\n    return g(v) + 1")
        r = await s.run("y = 3\nh(0)")
        assert r.stderr == (
            "Traceback (most recent call last):\n"
            "    h(0)\n"
            "    return g(v) + 1\n"
            "    return 1 / v\n"
            "ZeroDivisionError: division by zero\n"
        )
        assert (await s.run("y")).stdout == "3\n"  # state of the failing cell is kept


async def test_traceback_hides_library_frames(sandbox: LocalSandbox) -> None:
    r = await sandbox.run("import json\njson.loads('{')")
    lines = r.stderr.splitlines()
    assert lines[:2] == ["Traceback (most recent call last):", "    json.loads('{')"]
    assert lines[2].startswith("json.decoder.JSONDecodeError: Expecting property name")
    assert len(lines) == 3 and "File" not in r.stderr


async def test_syntax_error_is_short(sandbox: LocalSandbox) -> None:
    r = await sandbox.run("x = (1,\ny = 2")
    assert r.status == "error"
    assert "SyntaxError" in r.stderr.splitlines()[-1]
    assert "File " not in r.stderr and "worker" not in r.stderr


async def test_input_fails_at_once(sandbox: LocalSandbox) -> None:
    r = await sandbox.run("input('name? ')", timeout=5)
    assert r.status == "error" and r.duration < 1
    assert r.stderr.startswith(
        "Traceback (most recent call last):\n    input('name? ')\nEOFError: input() is not available"
    )
    r = await sandbox.run("import sys\nsys.stdin.read()")
    assert (r.status, r.stdout) == ("completed", "''\n")


async def test_system_exit_and_keyboard_interrupt_are_errors_that_keep_state(
    sandbox: LocalSandbox,
) -> None:
    async with sandbox.session() as s:
        await s.run("k = 1")
        r = await s.run("import sys\nk = 2\nsys.exit(3)")
        assert (r.status, r.reason, r.state) == ("error", "exit", "kept")
        assert r.stderr == "Traceback (most recent call last):\n    sys.exit(3)\nSystemExit: 3\n"
        r = await s.run("k = 3\nraise KeyboardInterrupt")
        assert (r.status, r.state) == ("error", "kept")
        assert (
            r.stderr
            == "Traceback (most recent call last):\n    raise KeyboardInterrupt\nKeyboardInterrupt\n"
        )
        assert (await s.run("k")).stdout == "3\n"


async def test_sessions_do_not_share_state_or_files(sandbox: LocalSandbox) -> None:
    async with sandbox.session() as a, sandbox.session() as b:
        await a.run("secret = 1\nopen('mine.txt', 'w').write('a')")
        r = await b.run("secret")
        assert r.status == "error" and "NameError" in r.stderr
        r = await b.run("import os\nsorted(os.listdir('.'))")
        assert r.stdout == "[]\n"
        assert (await a.run("open('mine.txt').read()")).stdout == "'a'\n"


async def test_one_off_run_is_stateless(sandbox: LocalSandbox) -> None:
    assert (await sandbox.run("z = 1\nprint(2)")).stdout == "2\n"
    assert "NameError" in (await sandbox.run("z")).stderr


async def test_result_carries_duration(sandbox: LocalSandbox) -> None:
    r = await sandbox.run("import time\ntime.sleep(0.05)")
    assert 0.05 <= r.duration < 1


@pytest.mark.slow
async def test_a_large_cell_runs(sandbox: LocalSandbox) -> None:
    code = "total = 0\n" + "total += 1\n" * 100_000 + "total"  # about 1.1 MB of code
    r = await sandbox.run(code, timeout=30)
    assert (r.status, r.stdout) == ("completed", "100000\n")


async def test_a_seeded_random_stream_continues_across_cells(sandbox: LocalSandbox) -> None:
    """``random.seed(42)`` in one cell fixes what later cells draw, as in a notebook. CPython
    reseeds ``random`` in every forked child; a protected runner is the session's continuation,
    not a sibling, so that reseeding must not reach the cells."""
    expected = random.Random(42)
    async with sandbox.session() as s:
        await s.run("import random\nrandom.seed(42)")
        for _ in range(3):  # the first later cell, and the runners forked after it
            r = await s.run("print(repr(random.random()))")
            assert r.stdout == f"{expected.random()!r}\n"


async def test_sessions_draw_different_random_numbers(sandbox: LocalSandbox) -> None:
    """Sessions are copies of one template, and each is reseeded when it is made: two sessions
    (and two one-off runs) do not draw the same unseeded numbers."""
    code = "import random\nprint(random.getrandbits(64))"
    async with sandbox.session() as a, sandbox.session() as b:
        assert (await a.run(code)).stdout != (await b.run(code)).stdout
    assert (await sandbox.run(code)).stdout != (await sandbox.run(code)).stdout


async def test_a_rolled_back_cell_takes_back_its_random_draws(protected: LocalSandbox) -> None:
    """State protection restores the random stream too: the draws of a cell that timed out are
    undone, so the next cell draws what that one drew first."""
    expected = random.Random(7)
    async with protected.session() as s:
        await s.run("import random\nrandom.seed(7)")
        await s.run("pass")  # later cells run in runners
        r = await s.run("print(repr(random.random()), flush=True)\nwhile True: pass", timeout=1)
        first = expected.random()
        assert (r.status, r.state, r.stdout) == ("timeout", "rolled_back", f"{first!r}\n")
        assert (await s.run("print(repr(random.random()))")).stdout == f"{first!r}\n"


async def test_cells_run_in_main_so_their_functions_pickle(sandbox: LocalSandbox) -> None:
    """Cells run in ``__main__``'s namespace, as a script or a notebook does: pickle finds a
    cell's functions and classes by name, so ``multiprocessing`` and ``concurrent.futures``
    pools can run them."""
    async with sandbox.session() as s:
        await s.run(
            "def square(x):\n    return x * x\nclass Point:\n    def __init__(self, x):\n        self.x = x"
        )
        r = await s.run(
            "import pickle, __main__\n"
            "print(__main__.square is square, pickle.loads(pickle.dumps(Point(3))).x)\n"
            "from multiprocessing import Pool\n"
            "with Pool(2) as pool:\n"
            "    print(pool.map(square, range(5)))\n"
            "from concurrent.futures import ProcessPoolExecutor\n"
            "with ProcessPoolExecutor(2) as ex:\n"
            "    print(list(ex.map(square, [6, 7])))",
            timeout=30,
        )
        assert (r.status, r.stdout, r.stderr) == (
            "completed",
            "True 3\n[0, 1, 4, 9, 16]\n[36, 49]\n",
            "",
        )
