"""Pacing every model call with a shared requests- and tokens-per-minute budget.

OpenAI limits requests and tokens per minute per model and says where a caller stands in every
reply (``x-ratelimit-limit-requests``, ``x-ratelimit-limit-tokens``,
``x-ratelimit-remaining-*``, ``x-ratelimit-reset-*``). A :class:`Pacer` is shared by every call
to one endpoint, model and key on one event loop (:func:`pacer_for`): before a call it takes one
request and the call's estimated tokens from two token buckets (:class:`RateLimiter`), after it
charges the difference to the tokens the endpoint reported. The buckets' rates are the user's
``max_rpm`` / ``max_tpm`` or, when not given, the limits the headers state; a ``remaining`` count
lower than the bucket's level lowers the level. Until the first reply has told the limits, one
call goes alone (a probe), so a batch starting 256 samples at once does not begin with a storm
of 429s; an endpoint whose replies carry no such headers (a local server) is not paced at all.
A 429 pauses every caller for the ``retry-after`` the endpoint asked for.
"""

from __future__ import annotations

import asyncio
import re
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping

from tir_agent.ratelimit import RateLimiter

__all__ = ["Pacer", "pacer_for", "parse_reset"]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_reset(value: str) -> float | None:
    """Seconds of an ``x-ratelimit-reset-*`` value (``1s``, ``6m0s``, ``20ms``, ``0.5``)."""
    try:
        return float(value)
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    if not parts:
        return None
    return sum(float(number) * _UNIT[unit] for number, unit in parts)


def _number(headers: Mapping[str, str], name: str) -> float | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


class Pacer:
    """The requests/tokens-per-minute budget of one endpoint and model (see module docs)."""

    def __init__(
        self,
        max_rpm: float | None = None,
        max_tpm: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.max_rpm = max_rpm
        self.max_tpm = max_tpm
        self._clock = clock
        self._sleep = sleep
        self.requests = self._bucket(max_rpm)
        self.tokens = self._bucket(max_tpm)
        self._paused_until = 0.0
        self._learned = max_rpm is not None and max_tpm is not None
        """Limits are known (given, or told by a reply's headers): no probe needed."""
        self._probe = asyncio.Lock()

    @property
    def may_pace_tokens(self) -> bool:
        """Whether a call's token estimate is needed: tokens are paced, or the limits are not
        known yet."""
        return self.tokens is not None or not self._learned

    def _bucket(self, per_minute: float | None) -> RateLimiter | None:
        if per_minute is None:
            return None
        return RateLimiter(per_minute, clock=self._clock, sleep=self._sleep)

    async def acquire(self, tokens: int) -> bool:
        """Wait for room for one call of about ``tokens`` tokens. ``True``: this call is the
        probe (pass its reply's headers to :meth:`observe`, then call :meth:`release`)."""
        probe = False
        if not self._learned:
            await self._probe.acquire()
            if self._learned:
                self._probe.release()
            else:
                probe = True
        while (wait := self._paused_until - self._clock()) > 0:
            await self._sleep(wait)
        if self.requests is not None:
            await self.requests.acquire(1)
        if self.tokens is not None:
            await self.tokens.acquire(tokens)
        return probe

    def release(self, probe: bool) -> None:
        """The probe's call ended (its headers observed, or it failed): let the others go."""
        if probe:
            self._learned = True
            self._probe.release()

    def settle(self, estimated: int, used: int) -> None:
        """Charge (or refund) the difference between a call's estimate and what it used."""
        if self.tokens is not None and used != estimated:
            self.tokens.charge(used - estimated)

    def pause(self, seconds: float) -> None:
        """A 429: every caller waits ``seconds`` before its next call."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    def observe(self, headers: Mapping[str, str]) -> None:
        """Learn the limits and the remaining budget from a reply's ``x-ratelimit-*`` headers."""
        for kind, given in (("requests", self.max_rpm), ("tokens", self.max_tpm)):
            limit = _number(headers, f"x-ratelimit-limit-{kind}")
            bucket: RateLimiter | None = getattr(self, kind)
            told = limit is not None and limit > 0 and given is None
            if told and (bucket is None or abs(bucket.rate * 60 - limit) > 1e-6):  # type: ignore[operator]
                bucket = RateLimiter(limit, clock=self._clock, sleep=self._sleep)  # type: ignore[arg-type]
                setattr(self, kind, bucket)
            remaining = _number(headers, f"x-ratelimit-remaining-{kind}")
            if bucket is not None and remaining is not None:
                bucket.lower_to(remaining)


_PACERS: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[str, str, str, float | None, float | None], Pacer]
] = weakref.WeakKeyDictionary()


def pacer_for(
    base_url: str, model: str, key_id: str, max_rpm: float | None, max_tpm: float | None
) -> Pacer:
    """The pacer shared on the running loop by every call with these endpoint, model, key
    (``key_id``: a digest, never the key) and limits."""
    pacers = _PACERS.setdefault(asyncio.get_running_loop(), {})
    key = (base_url, model, key_id, max_rpm, max_tpm)
    pacer = pacers.get(key)
    if pacer is None:
        pacer = pacers[key] = Pacer(max_rpm, max_tpm)
    return pacer
