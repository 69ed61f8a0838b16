"""A session's interpreter: its namespace, and how one cell runs in it.

:class:`Runner` holds the state (the namespace and the counters) and :meth:`Runner.execute`
runs one cell: :func:`run_code` is where the cell's source is parsed, compiled and executed,
and the value of a final bare expression computed. Output goes to fd 1 and 2 (pipes drained by
the supervisor or, for short cells, by the runner itself); tracebacks are short and show the
user's lines only (:func:`short_traceback`).
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import io
import linecache
import os
import signal
import sys
import time
import traceback
import types
from typing import Any

from tir_agent.sandbox import _ipython_cell
from tir_agent.sandbox import protocol as proto


class CappedRaw(io.RawIOBase):
    """fd 1/2 of user code at the Python level: writes through until ``limit`` bytes, then drops."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd
        self.limit = 1 << 20
        self.written = 0

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.fd

    def isatty(self) -> bool:
        return False

    def write(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        n = len(view)
        room = self.limit - self.written
        self.written += n
        if room > 0:
            chunk = view[:room] if n > room else view
            try:
                while chunk:
                    chunk = chunk[os.write(self.fd, chunk) :]
            except OSError:
                pass
        return n


class SoftInterrupt(BaseException):
    """Raised in the cell by the supervisor's soft-timeout signal (fast mode)."""


def _no_input(prompt: object = "") -> str:
    raise EOFError(
        "input() is not available in the sandbox: there is no standard input. "
        "Put the data in the code instead."
    )


class Runner:
    """The interpreter state of one session and the code that runs cells in it."""

    def __init__(self) -> None:
        # The cells' namespace is __main__'s, as in a script or a notebook: pickle (and so
        # multiprocessing and concurrent.futures pools) finds their functions and classes by
        # name in sys.modules["__main__"].
        main = types.ModuleType("__main__")
        main.__dict__["__builtins__"] = builtins
        sys.modules["__main__"] = main
        self.ns: dict[str, Any] = main.__dict__
        self.cell = 0
        self.out_raw = CappedRaw(1)
        self.err_raw = CappedRaw(2)
        self.in_cell = False
        sys.stdout = io.TextIOWrapper(
            self.out_raw,
            encoding="utf-8",
            errors="backslashreplace",
            write_through=True,  # type: ignore[arg-type]
        )
        sys.stderr = io.TextIOWrapper(
            self.err_raw,
            encoding="utf-8",
            errors="backslashreplace",
            write_through=True,  # type: ignore[arg-type]
        )
        setattr(sys, "__stdout__", sys.stdout)  # noqa: B010 - Final for type checkers only
        setattr(sys, "__stderr__", sys.stderr)  # noqa: B010
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 - fd 0 is /dev/null
        builtins.input = _no_input
        sys.argv = [""]
        sys.ps1 = sys.ps2 = ""  # type: ignore[attr-defined]
        signal.signal(signal.SIGUSR1, self._soft_interrupt)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def _soft_interrupt(self, signum: int, frame: types.FrameType | None) -> None:
        if self.in_cell:
            raise SoftInterrupt

    def execute(self, code: str, cap: int, mode: int = 0) -> proto.Message:
        """Run one cell; return ``status``, ``reason``, ``duration``. ``mode`` (of the request,
        :func:`protocol.cell_mode`): 0 plain Python, else IPython with a traceback verbosity."""
        budget = proto.byte_budget(cap)
        self.out_raw.limit = self.err_raw.limit = budget
        self.out_raw.written = self.err_raw.written = 0
        if mode:  # an IPython cell (NeMo-Skills' semantics), see _ipython_cell
            verbosity = proto.TRACEBACK_VERBOSITIES[mode - 1]
            return _ipython_cell.execute(self, code, verbosity, 4 * budget, SoftInterrupt)
        self.cell += 1
        filename = f"<cell-{self.cell}>"
        lines = code.splitlines(keepends=True)
        linecache.cache[filename] = (len(code), None, lines, filename)
        status, reason = "completed", None
        start = time.perf_counter()
        try:
            self.in_cell = True
            value = run_code(code, filename, self.ns)
            self.in_cell = False
            if value is not None:
                sys.stdout.write(repr(value) + "\n")
        except SoftInterrupt:
            self.in_cell = False
            status, reason = "timeout", "timeout"
        except BaseException as e:
            self.in_cell = False
            status = "error"
            reason = "exit" if isinstance(e, SystemExit) else "exception"
            if isinstance(e, MemoryError):
                reason = "memory"
            with contextlib.suppress(BaseException):
                sys.stderr.write(short_traceback(e))
        duration = time.perf_counter() - start
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        return {"status": status, "reason": reason, "duration": duration}


def run_code(code: str, filename: str, namespace: dict[str, Any]) -> Any:
    """Run a cell's source in ``namespace``; return the value of a final bare expression (None
    without one). The one place where a cell's code is compiled and executed."""
    tree = ast.parse(code, filename, "exec")
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)  # type: ignore[attr-defined]
    if tree.body:
        exec(compile(tree, filename, "exec"), namespace)
    if last is not None:
        return eval(compile(last, filename, "eval"), namespace)
    return None


def short_traceback(e: BaseException) -> str:
    """``Traceback (most recent call last):`` + the user's source lines + the exception line."""
    if isinstance(e, SyntaxError) and (e.filename or "").startswith("<cell-"):
        only = traceback.format_exception_only(type(e), e)
        if only and only[0].lstrip().startswith("File "):
            only = only[1:]
        return "".join(only)
    parts = ["Traceback (most recent call last):\n"]
    last, repeats = "", 0
    for frame, lineno in traceback.walk_tb(e.__traceback__):
        name = frame.f_code.co_filename
        if name.startswith("<cell-") and lineno is not None:
            line = linecache.getline(name, lineno).strip()
            if not line:
                continue
            key = f"{name}:{lineno}"
            if key == last:
                repeats += 1
                if repeats >= 3:
                    continue
            else:
                if repeats >= 3:
                    parts.append(f"    [Previous line repeated {repeats - 2} more times]\n")
                last, repeats = key, 0
            parts.append(f"    {line}\n")
    if repeats >= 3:
        parts.append(f"    [Previous line repeated {repeats - 2} more times]\n")
    parts.extend(traceback.format_exception_only(type(e), e))
    return "".join(parts)
