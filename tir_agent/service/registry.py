"""The server's named sessions: client-chosen ids mapped to :class:`LocalSession` objects.

Both APIs share one registry, so a NeMo-Skills ``X-Session-ID`` and a tir-agent API session id
name the same kind of thing. A session the sandbox closed on its own (idle eviction, a lost
supervisor) is noticed through :attr:`LocalSession.closed` and treated as unknown from then on.

At ``max_sessions`` the registry closes the least recently used *idle* session to make room
instead of letting the new one wait (NeMo-Skills' client never deletes its sessions, so waiting
for the idle timeout would stall a long run); the evicted session's next request learns that its
state is gone (``new_session_created`` / 404 ``session_not_found``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tir_agent._log import get_logger
from tir_agent.sandbox.http_api import SessionInfo
from tir_agent.sandbox.local import LocalSandbox, LocalSession

log = get_logger(__name__)

T = TypeVar("T")


class Entry:
    """One named session and when it was created (Unix seconds)."""

    __slots__ = ("created", "session", "session_id")

    def __init__(self, session_id: str, session: LocalSession) -> None:
        self.session_id = session_id
        self.session = session
        self.created = time.time()

    def info(self) -> SessionInfo:
        """The session as the API reports it."""
        s = self.session
        last_used = max(self.created, time.time() - (time.monotonic() - s.last_used))
        return SessionInfo(
            session_id=self.session_id,
            created=self.created,
            last_used=last_used,
            executions=s.executions,
            busy=s.busy,
        )


class SessionRegistry:
    """Named sessions of one :class:`LocalSandbox`; all methods run on the server's event loop."""

    def __init__(self, sandbox: LocalSandbox) -> None:
        self._sandbox = sandbox
        self._entries: dict[str, Entry] = {}
        self._opening: dict[str, asyncio.Event] = {}
        self._stateless = 0

    def get(self, session_id: str) -> Entry | None:
        """The open session named ``session_id``, or ``None`` (never created, closed, evicted)."""
        entry = self._entries.get(session_id)
        if entry is not None and entry.session.closed:
            del self._entries[session_id]
            return None
        return entry

    def entries(self) -> list[Entry]:
        """Every open named session (forgets the closed ones)."""
        for session_id in [k for k, e in self._entries.items() if e.session.closed]:
            del self._entries[session_id]
        return list(self._entries.values())

    def __len__(self) -> int:
        return len(self.entries())

    async def create(self, session_id: str) -> Entry | None:
        """A new session named ``session_id``; ``None`` if the id is taken."""
        if self.get(session_id) is not None or session_id in self._opening:
            return None
        return await self._open(session_id)

    async def get_or_create(self, session_id: str) -> tuple[Entry, bool]:
        """The session named ``session_id``, opened if needed; ``True`` if it was just opened."""
        while True:
            entry = self.get(session_id)
            if entry is not None:
                return entry, False
            opening = self._opening.get(session_id)
            if opening is None:
                return await self._open(session_id), True
            await opening.wait()  # another request is opening it; if that failed, try ourselves

    async def _open(self, session_id: str) -> Entry:
        done = asyncio.Event()
        self._opening[session_id] = done
        try:
            await self._make_room()
            session = await self._sandbox.open_session()
            entry = Entry(session_id, session)
            self._entries[session_id] = entry
            return entry
        finally:
            del self._opening[session_id]
            done.set()

    async def delete(self, session_id: str) -> Entry | None:
        """Close and forget the session; ``None`` if there was no open session of that id."""
        entry = self.get(session_id)
        if entry is None:
            return None
        del self._entries[session_id]
        await entry.session.close()
        return entry

    async def stateless(self, work: Callable[[LocalSession], Awaitable[T]]) -> T:
        """Run ``work`` in a fresh session that is closed afterwards."""
        self._stateless += 1
        try:
            await self._make_room()
            async with self._sandbox.session() as session:
                return await work(session)
        finally:
            self._stateless -= 1

    async def _make_room(self) -> None:
        """At ``max_sessions``, close the least recently used idle named session."""
        limit = self._sandbox.config.max_sessions
        if limit is None:
            return
        entries = self.entries()
        in_use = len(entries) + self._stateless + len(self._opening) - 1
        if in_use < limit:
            return
        idle = [e for e in entries if not e.session.busy]
        if not idle:
            return  # every slot is running a cell: wait for one in open_session()
        victim = min(idle, key=lambda e: e.session.last_used)
        del self._entries[victim.session_id]
        await victim.session.close()
        log.info("session.evict", reason="capacity", sessions=len(entries))
