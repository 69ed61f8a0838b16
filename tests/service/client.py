"""A tiny blocking HTTP/1.1 client for the server tests (stdlib ``http.client``, keep-alive)."""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

V1 = {"X-TIR-Agent-API": "1"}


@dataclass
class Reply:
    """One HTTP reply: status, headers (lower-case names) and the parsed JSON body."""

    status: int
    headers: dict[str, str]
    raw: bytes
    body: Any = field(default=None)


class Client:
    """Sends requests over one keep-alive connection, reconnecting when the server closed it."""

    def __init__(self, url: str, *, token: str | None = None, timeout: float = 60.0) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.token = token
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> Reply:
        """Send ``body`` as JSON (or ``raw`` bytes as they are); return the reply."""
        sent = dict(headers or {})
        if self.token is not None:
            sent.setdefault("Authorization", f"Bearer {self.token}")
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        for attempt in range(2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self._conn.request(method, path, body=data, headers=sent)
                response = self._conn.getresponse()
                payload = response.read()
            except (ConnectionError, http.client.RemoteDisconnected):
                self.close()
                if attempt:
                    raise
                continue
            reply = Reply(
                response.status, {k.lower(): v for k, v in response.getheaders()}, payload
            )
            if response.will_close:
                self.close()
            if payload and reply.headers.get("content-type", "").startswith("application/json"):
                reply.body = json.loads(payload)
            return reply
        raise AssertionError("unreachable")

    def execute(self, code: str, session: str | None = None, **fields: Any) -> Reply:
        """NeMo-Skills ``POST /execute`` (``X-Session-ID: session`` when given)."""
        headers = {"X-Session-ID": session} if session is not None else {}
        return self.request("POST", "/execute", {"generated_code": code, **fields}, headers=headers)

    def v1(self, method: str, path: str, body: Any = None, *, session: str | None = None) -> Reply:
        """A tir-agent API request (``path`` after ``/v1``) with the API header."""
        headers = dict(V1)
        if session is not None:
            headers["X-Session-ID"] = session
        return self.request(method, "/v1" + path, body, headers=headers)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def wait_busy(url: str, names: set[str], seconds: float = 20.0) -> None:
    """Wait until the sessions ``names`` are running a cell (``busy`` in ``GET /v1/sessions``;
    the NeMo-Skills ``GET /sessions`` has only their fields)."""
    client = Client(url)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            listed = client.v1("GET", "/sessions").body["sessions"]
            if names <= {s["session_id"] for s in listed if s["busy"]}:
                return
            time.sleep(0.02)
    finally:
        client.close()
    raise AssertionError(f"sessions {names} did not start running within {seconds} s")
