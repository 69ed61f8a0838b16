"""A scripted OpenAI-compatible model for batch tests, in-process or over real HTTP.

It reuses the agent tests' :class:`~tests.agent.scripted.ScriptedServer` for the wire format, but
picks each reply from the request instead of a fixed list, so hundreds of concurrent solves can
share it: a problem ``"What is A + B?"`` gets a code step printing ``RESULT=<A+B>`` first, then,
once that output is in the conversation, the boxed answer. A problem containing ``FAIL`` gets a
400 (a failure for good). :class:`HTTPModel` serves the same logic on a loopback port (for the CLI
and the crash test in a subprocess), counting requests per problem.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx2

from tests.agent.scripted import Fail, ScriptedServer, Step
from tir_agent.formats.tags import PRESETS, TagPreset

_PROBLEM = re.compile(r"What is (\d+) \+ (\d+)\?")


def problems(n: int) -> list[dict[str, Any]]:
    """``n`` input rows with known answers."""
    return [
        {"id": i, "problem": f"What is {i} + {2 * i}?", "expected_answer": str(3 * i)}
        for i in range(n)
    ]


class ReactiveServer(ScriptedServer):
    """A :class:`ScriptedServer` whose reply depends on the request (thread-safe)."""

    def __init__(
        self, tags: TagPreset | None = None, *, delay: float = 0.0, direct: bool = False
    ) -> None:
        super().__init__([], tags=tags or PRESETS["openmath"])
        self.delay = delay
        self.direct = direct
        """Answer at once, without code (for runs without a sandbox)."""
        self.per_problem: Counter[str] = Counter()
        self._lock = threading.Lock()

    def pick(self, body: dict[str, Any]) -> Step | Fail:
        """The reply for this request."""
        text = json.dumps(body)
        match = _PROBLEM.search(text)
        if "FAIL" in text:
            return Fail(400, "scripted permanent failure")
        if match is None:
            return Step("I cannot parse this problem.")
        a, b = int(match[1]), int(match[2])
        if "RESULT=" in text or self.direct:
            return Step(f"So the answer is \\boxed{{{a + b}}}.")
        return Step("Let me compute.\n", [f"print('RESULT=' + str({a} + {b}))"])

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        match = _PROBLEM.search(json.dumps(body))
        with self._lock:
            self.per_problem[match[0] if match else "?"] += 1
            self.steps = [self.pick(body)]
            response = super().handle(request)
        if self.delay:
            time.sleep(self.delay)
        return response


class HTTPModel:
    """:class:`ReactiveServer` on a real loopback port: ``base_url`` for any OpenAI client."""

    def __init__(self, server: ReactiveServer | None = None, log_path: str | None = None) -> None:
        self.scripted = server or ReactiveServer()
        self.log_path = log_path
        scripted, log_lock = self.scripted, threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                raw = self.rfile.read(length)
                request = httpx2.Request(
                    "POST", f"http://test{self.path}", content=raw, headers=dict(self.headers)
                )
                response = scripted.handle(request)
                if log_path is not None:
                    match = _PROBLEM.search(raw.decode())
                    with log_lock, open(log_path, "a") as f:
                        f.write((match[0] if match else "?") + "\n")
                payload = response.content
                kind = response.headers.get("content-type", "application/json")
                try:
                    self.send_response(response.status_code)
                    self.send_header("content-type", kind)
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the client died (the crash test kills it): nothing to answer

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a killed client resets its connection: expected, not news

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def base_url(self) -> str:
        """The endpoint, e.g. ``http://127.0.0.1:40123/v1``."""
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> HTTPModel:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
