"""IPython cells (``LocalSession.run(ipython=True)``): NeMo-Skills' ``ipython`` semantics."""

from __future__ import annotations

import pytest

from tir_agent.errors import ConfigError
from tir_agent.sandbox._ipython_cell import tidy
from tir_agent.sandbox.local import LocalSandbox

on_module_loop = pytest.mark.asyncio(loop_scope="module")
"""The loop of the module's shared sandboxes (conftest)."""


def test_tidy_is_their_post_processing() -> None:
    raw = (
        "\x1b[0;36m  File \x1b[0;32m<ipython-input-1-ff73a4eb1351>:2\x1b[0;36m\x1b[0m\n"
        "\x1b[0;31m    b = 3\x1b[0m\n\x1b[0m    ^\x1b[0m\n"
        "\x1b[0;31mIndentationError\x1b[0m\x1b[0;31m:\x1b[0m unexpected indent\n\n"
    )
    expected = "    b = 3\n    ^\nIndentationError: unexpected indent\n"
    assert tidy(raw, "Plain") == tidy(raw, "Minimal") == expected
    assert tidy("Out[1]: \n[0,\n 1]\n", "Plain") == "[0,\n 1]\n"
    assert tidy("a\nOut[7]: \n[0,\n 1]\n", "Plain") == "a\n\n[0,\n 1]\n"  # their blank line
    assert tidy("\n\n  x  \n\n", "Plain") == "  x\n"
    assert tidy("\n \n", "Plain") == ""
    assert tidy("a\x1b-b\x1b\\c", "Plain") == "ab\x1b\\c\n"  # their escape pattern exactly
    assert tidy("Out[1]: 2\n", "Context") == "Out[1]: 2\n"  # other verbosities untouched
    assert tidy("\x1b[31mred\x1b[39m", "Verbose") == "\x1b[31mred\x1b[39m"


@on_module_loop
async def test_ipython_cells_share_the_session_with_plain_cells(sandbox: LocalSandbox) -> None:
    async with sandbox.session() as s:
        assert (await s.run("x = 40")).status == "completed"
        shown = await s.run("\n    y = x + 2\n    [y] * 30\n    ", ipython=True)
        assert shown.stdout == "[" + ",\n ".join(["42"] * 30) + "]\n"
        assert (await s.run("y")).stdout == "42\n"  # plain again: repr, same namespace
        error = await s.run("1 / 0", ipython=True, traceback_verbosity="Minimal")
        assert (error.status, error.reason) == ("error", "exception")
        assert (error.stdout, error.stderr) == ("ZeroDivisionError: division by zero\n", "")
        exited = await s.run("raise SystemExit(3)", ipython=True)
        assert (exited.status, exited.reason, exited.state) == ("error", "exit", "kept")


@on_module_loop
async def test_the_shell_takes_plain_variables_but_keeps_its_module(sandbox: LocalSandbox) -> None:
    """Plain cells run in a ``__main__`` module of their own; the shell's first cell takes over
    their variables but not that module's dunder names, and functions stay picklable."""
    async with sandbox.session() as s:
        await s.run("def double(v):\n    return 2 * v")
        r = await s.run(
            "import pickle\nprint(__doc__)\nprint(pickle.loads(pickle.dumps(double))(21))",
            ipython=True,
        )
        assert r.stdout == "Automatically created module for IPython interactive environment\n42\n"


@on_module_loop
async def test_a_timed_out_ipython_cell_prints_nothing(sandbox: LocalSandbox) -> None:
    async with sandbox.session() as s:
        await s.run("n = 1", ipython=True)
        code = "n = 2\nprint('lost')\nimport time\ntime.sleep(10)"
        result = await s.run(code, ipython=True, timeout=0.5)
        assert (result.status, result.stdout) == ("timeout", "")
        assert result.stderr.startswith("Execution timed out after 0.5 seconds\n")
        assert "Interrupt" not in result.stderr
        assert (await s.run("n", ipython=True)).stdout in ("1\n", "2\n")


@on_module_loop
async def test_plain_sessions_do_not_see_ipython(sandbox: LocalSandbox) -> None:
    async with sandbox.session() as s:
        await s.run("1", ipython=True)
    async with sandbox.session() as s:
        probe = await s.run(
            "import sys\n('__IPYTHON__' in dir(__builtins__), sys.modules['__main__'].__name__)"
        )
        assert probe.stdout == "(False, '__main__')\n"


@on_module_loop
async def test_without_preloading_the_first_ipython_cell_imports_it() -> None:
    async with LocalSandbox(preload=(), max_processes=32) as box, box.session() as s:
        assert (await s.run("%time 1 + 1", ipython=True)).stdout.endswith("\n2\n")


@on_module_loop
async def test_traceback_verbosity_needs_ipython(sandbox: LocalSandbox) -> None:
    async with sandbox.session() as s:
        with pytest.raises(ConfigError, match="ipython=True"):
            await s.run("1", traceback_verbosity="Plain")
        with pytest.raises(ConfigError, match="not one of"):
            await s.run("1", ipython=True, traceback_verbosity="Loud")  # type: ignore[arg-type]
