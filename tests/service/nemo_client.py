"""NeMo-Skills' sandbox client protocol, restated for the compatibility tests.

What their ``LocalSandbox`` (``nemo_skills/code_execution/sandbox.py``, commit 0b012df) does on
the wire, written here from its behaviour (their package is not a dependency): the request body
is ``json.dumps`` of ``{generated_code, std_input, timeout, language, max_output_characters,
traceback_verbosity}`` in that order, sent (they use ``httpx``; here the standard library, as
httpx is not installed) with ``Content-Type: application/json`` and ``X-Session-ID:
str(uuid4())`` (ipython only), ``traceback_verbosity`` capitalized; the reply is parsed as JSON; ``new_session_created`` is popped; when it is true for a session
the client already used (and the reply is not a timeout), the client deletes the session,
replays the session's completed cells and runs the cell again; completed cells are appended to
the session's history. Their code-execution wrapper then reads ``process_status``, ``stdout``
and ``stderr`` of what remains.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from tests.service.client import Client


class NemoClient:
    """Their client's ``execute_code`` and ``delete_session``, blocking."""

    def __init__(self, url: str) -> None:
        self.http = Client(url)
        self.histories: dict[str, list[str]] = {}

    def close(self) -> None:
        self.http.close()

    def _send(self, request: dict[str, Any], session_id: str | None) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if session_id is not None:
            headers["X-Session-ID"] = session_id
        self.http.timeout = request["timeout"] + 5.0
        reply = self.http.request(
            "POST", "/execute", raw=json.dumps(request).encode(), headers=headers
        )
        body = json.loads(reply.raw)
        assert isinstance(body, dict), body
        return body

    @staticmethod
    def _request(
        code: str,
        timeout: float,
        language: str,
        std_input: str,
        max_output_characters: int,
        traceback_verbosity: str,
    ) -> dict[str, Any]:
        return {
            "generated_code": code,
            "std_input": std_input,
            "timeout": timeout,
            "language": language,
            "max_output_characters": max_output_characters,
            "traceback_verbosity": traceback_verbosity,
        }

    def execute_code(
        self,
        code: str,
        std_input: str = "",
        language: str = "ipython",
        timeout: float = 10.0,
        max_output_characters: int = 1000,
        session_id: str | None = None,
        traceback_verbosity: str = "plain",
    ) -> tuple[dict[str, Any], str | None]:
        """The reply as their callers see it, and the session id (None for scripts)."""
        verbosity = traceback_verbosity.capitalize()
        sid = session_id
        if sid is None and language == "ipython":
            sid = str(uuid.uuid4())
        args = (timeout, language, std_input, max_output_characters, verbosity)
        output = self._send(self._request(code, *args), sid)
        new_session = output.pop("new_session_created", False)
        if session_id is not None and new_session and output.get("process_status") != "timeout":
            history = list(self.histories.get(session_id, []))
            self.delete_session(session_id)
            self.histories[session_id] = history
            for cell in history:
                replayed = self._send(self._request(cell, *args), session_id)
                assert replayed.get("process_status") == "completed", replayed
            output = self._send(self._request(code, *args), session_id)
        if output.get("process_status") == "completed" and sid is not None:
            self.histories.setdefault(sid, []).append(code)
        output.pop("new_session_created", None)
        return output, sid

    def delete_session(self, session_id: str) -> None:
        reply = self.http.request(
            "DELETE", f"/sessions/{session_id}", headers={"X-Session-ID": session_id}
        )
        assert reply.status in (200, 404), reply.raw
        self.histories.pop(session_id, None)
