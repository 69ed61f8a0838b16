"""IPython cells inside the sandbox: NeMo-Skills' ``ipython`` semantics, by IPython itself.

NeMo-Skills' sandbox server runs each cell with ``TerminalInteractiveShell().run_cell(code)``
(``store_history=False``) while ``sys.stdout``/``sys.stderr`` point at string buffers, sets
``InteractiveTB`` to the request's ``traceback_verbosity``, and tidies both texts for ``Plain``
and ``Minimal`` (:func:`tidy`). This module does the same with the same IPython classes, so
everything IPython decides stays IPython's: dedented cells, magics and ``!cmd``, the pretty
printer and ``Out[N]`` prompts, ``_``, traceback formats and their colours.

Why the whole ``run_cell`` and not IPython's pieces (measured, docs/service.md "Speed"): in one
process ``run_cell`` took 0.14 ms for ``print(1+1)`` and 1.2 ms for ``list(range(50))`` where a
plain cell takes 0.01-0.03 ms; most of it is the display formatter (every MIME type's
formatter is called) and the input transformation. Rebuilding ``run_cell`` from its pieces
would save about two thirds of that but copy IPython's control flow (error paths, traps,
displayhook bookkeeping) into ours, and the replies must equal theirs byte for byte.

The shell is made once in the template (when ``IPython`` is in ``SandboxConfig.preload``), with
its global side effects (builtins, ``sys.modules["__main__"]``) undone there and
re-applied only in a session's process at its first IPython cell, so plain sessions run exactly
as without IPython. Without preloading, the first IPython cell of a session imports IPython
(about half a second).

Differences from their server, on purpose: their shell's output of child processes (``!cmd``,
``os.system``) goes to the server's own stdout and is lost; here it reaches the cell's stdout
(before the cell's Python output, which is buffered until the cell ends, as theirs).
"""

from __future__ import annotations

import builtins
import io
import os
import re
import sys
import tempfile
import time
from typing import Any

_ANSI = re.compile(r"\x1B(?:[@-Z\-_]|\[[0-?]*[ -/]*[@-~])")
_OUT_PROMPT = re.compile(r"^Out\[\d+\]:\s*")

_shell: Any = None
"""The template's ``TerminalInteractiveShell`` (inherited by every session process)."""
_active = False
"""Whether this process's shell side effects are in place (after a session's first cell)."""
_activation: dict[str, Any] = {}
"""What making the shell changed globally, to re-apply in a session: builtins and __main__."""


def tidy(text: str, verbosity: str) -> str:
    """NeMo-Skills' post-processing of a cell's stdout and stderr for ``Plain`` and ``Minimal``
    tracebacks (other verbosities: unchanged): colour codes removed, ``File <ipython-...>``
    lines dropped, ``Out[N]:`` prompts removed, leading blank lines and trailing whitespace
    stripped, one final newline."""
    if verbosity not in ("Minimal", "Plain"):
        return text
    text = _ANSI.sub("", text)
    lines = [
        _OUT_PROMPT.sub("", line)
        for line in text.split("\n")
        if not line.strip().startswith("File <ipython-")
    ]
    start = 0
    while start < len(lines) and lines[start] == "":
        start += 1
    text = "\n".join(lines[start:]).rstrip()
    return text + "\n" if text else ""


class _Buffer(io.StringIO):
    """A cell's ``sys.stdout``/``sys.stderr``: keeps the first ``limit`` characters (enough for
    the output cap after :func:`tidy`), so a print loop cannot fill the session's memory."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.room = limit

    def write(self, s: str) -> int:
        n = len(s)
        if self.room > 0:
            super().write(s if n <= self.room else s[: self.room])
            self.room -= n
        return n


def _make_shell() -> Any:
    """A ``TerminalInteractiveShell`` configured as their server's (its constructor, not
    ``instance()``: as a registered singleton IPython would name cells ``Cell In[1]`` in
    tracebacks instead of ``File <ipython-input-...>``), without history on disk. Global side
    effects are undone and kept in :data:`_activation` for :func:`_activate`."""
    from IPython.core.display_functions import display
    from IPython.terminal.interactiveshell import TerminalInteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.enabled = False  # their shell stores no history either (no sqlite file)
    config.TerminalInteractiveShell.simple_prompt = True  # as under their server (stdin not a tty)
    config.TerminalInteractiveShell.term_title = False
    main = sys.modules.get("__main__")
    names = set(vars(builtins))
    # IPython writes a profile directory; a temporary one, not in the environment of user code
    own_dir = "IPYTHONDIR" not in os.environ
    if own_dir:
        os.environ["IPYTHONDIR"] = tempfile.mkdtemp(prefix="ipython-")
    try:
        shell = TerminalInteractiveShell(config=config)
    finally:
        if own_dir:
            del os.environ["IPYTHONDIR"]
    added = {name: getattr(builtins, name) for name in set(vars(builtins)) - names}
    added.setdefault("display", display)
    for name in added:
        delattr(builtins, name)
    if main is not None:
        sys.modules["__main__"] = main
    _activation.update(builtins=added)
    _warm(shell)
    return shell


def _warm(shell: Any) -> None:
    """Import what a shell's first cells would import lazily (the cell runner, syntax
    highlighting of ``Context`` tracebacks: 0.6 s on first use), without touching its state."""
    out = io.StringIO()
    saved = sys.stdout, sys.stderr
    try:
        sys.stdout = sys.stderr = out
        shell.run_cell("None")
        try:
            raise ValueError("warm-up")
        except ValueError:
            for mode in ("Context", "Plain"):
                shell.InteractiveTB.set_mode(mode=mode)
                shell.InteractiveTB.structured_traceback(*sys.exc_info())
    finally:
        sys.stdout, sys.stderr = saved


def preload(modules: tuple[str, ...]) -> None:
    """In the template: make the shell now if ``IPython`` is preloaded, so sessions inherit it
    (raises what IPython raises if it cannot be imported)."""
    global _shell
    if "IPython" in modules and _shell is None:
        _shell = _make_shell()


_MODULE_DUNDERS = frozenset(
    ("__name__", "__doc__", "__package__", "__loader__", "__spec__", "__builtins__")
)
"""What every module's namespace has: the plain cells' ``__main__`` and the shell's alike."""


def _activate(runner: Any, interrupt: type[BaseException]) -> Any:
    """The session's shell, with its side effects in this process; the runner's namespace
    becomes the shell's (variables of earlier plain cells are kept)."""
    global _shell, _active
    if _shell is None:
        _shell = _make_shell()
    shell = _shell
    if not _active:
        for name, value in _activation["builtins"].items():
            setattr(builtins, name, value)
        sys.modules["__main__"] = shell.user_module
        for name, value in runner.ns.items():
            if name not in _MODULE_DUNDERS:  # the shell's module has its own
                shell.user_ns[name] = value
        runner.ns = shell.user_ns
        # The sandbox's soft timeout interrupts the cell silently (IPython would print it).
        shell.set_custom_exc((interrupt,), lambda *args, **kwargs: [])
        _active = True
    return shell


def execute(
    runner: Any, code: str, verbosity: str, limit: int, interrupt: type[BaseException]
) -> dict[str, Any]:
    """Run one cell through IPython as NeMo-Skills' server does; the tidied output goes to the
    session's stdout/stderr when the cell ends (nothing of a cell that times out, as theirs).
    Returns the worker's ``status``/``reason``/``duration``."""
    try:
        shell = _activate(runner, interrupt)
    except ImportError as e:
        sys.stderr.write(
            f"IPython cells need IPython in the sandbox's Python ({e}): install it there "
            "(pip install ipython) or run the cell as plain Python.\n"
        )
        return {"status": "error", "reason": "exception", "duration": 0.0}
    shell.InteractiveTB.set_mode(mode=verbosity)
    out, err = _Buffer(limit), _Buffer(limit)
    saved = sys.stdout, sys.stderr
    status, reason = "completed", None
    start = time.perf_counter()
    try:
        sys.stdout, sys.stderr = out, err
        runner.in_cell = True
        try:
            result = shell.run_cell(code)
        finally:
            runner.in_cell = False
            sys.stdout, sys.stderr = saved
        error = result.error_before_exec or result.error_in_exec
    except interrupt:
        error = interrupt()
    duration = time.perf_counter() - start
    if isinstance(error, interrupt):
        return {"status": "timeout", "reason": "timeout", "duration": duration}
    if error is not None:
        status = "error"
        reason = (
            "exit"
            if isinstance(error, SystemExit)
            else "memory"
            if isinstance(error, MemoryError)
            else "exception"
        )
    try:
        sys.stdout.write(tidy(out.getvalue(), verbosity))
        sys.stderr.write(tidy(err.getvalue(), verbosity))
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:  # the cell closed a stream (a closed buffer has no value): keep its status
        pass
    return {"status": status, "reason": reason, "duration": duration}
