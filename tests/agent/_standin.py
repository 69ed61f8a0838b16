"""TEMPORARY in-process stand-in until LocalSandbox lands (to be deleted)."""

from __future__ import annotations
import ast, contextlib, io, traceback
from tir_agent.sandbox.result import ExecutionResult


class _S:
    def __init__(self):
        self.ns = {}

    async def run(self, code, *, timeout=None, max_output_characters=None):
        out, err = io.StringIO(), io.StringIO()
        status = "completed"
        try:
            tree = ast.parse(code)
            last = tree.body[-1] if tree.body and isinstance(tree.body[-1], ast.Expr) else None
            if last:
                tree.body = tree.body[:-1]
            with contextlib.redirect_stdout(out):
                exec(compile(tree, "<cell>", "exec"), self.ns)
                if last:
                    v = eval(compile(ast.Expression(last.value), "<cell>", "eval"), self.ns)
                    if v is not None:
                        print(repr(v))
        except Exception as e:
            status = "error"
            err.write(f"Traceback (most recent call last):\n{type(e).__name__}: {e}\n")
        o, r = out.getvalue(), err.getvalue()
        n = max_output_characters
        if n is not None and len(o) > n:
            o = o[:n] + "<output cut>"
        return ExecutionResult(status=status, stdout=o, stderr=r)

    async def close(self):
        pass


class LocalSandbox:
    async def __aenter__(self):
        return self

    async def __aexit__(self, *a):
        pass

    async def close(self):
        pass

    @contextlib.asynccontextmanager
    async def session(self):
        yield _S()
