"""A per-minute rate limiter for requests or tokens, shared by every task of a batch."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

__all__ = ["RateLimiter"]


class RateLimiter:
    """A token bucket refilled at ``per_minute`` units per minute.

    :meth:`acquire` waits until the bucket is not in debt, then takes ``amount``; :meth:`charge`
    takes units after the fact (the tokens a call used are only known when it ends), so the bucket
    may go into debt and later callers wait until it is paid back. The bucket holds at most
    ``burst_seconds`` worth of units, so an idle minute does not allow a whole minute's burst.
    """

    def __init__(
        self,
        per_minute: float,
        *,
        burst_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_seconds)
        self._level = self.capacity
        self._clock = clock
        self._sleep = sleep
        self._updated = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._level = min(self.capacity, self._level + (now - self._updated) * self.rate)
        self._updated = now

    async def acquire(self, amount: float = 1.0) -> None:
        """Wait until ``amount`` units (at most the capacity) are available, then take them."""
        async with self._lock:  # FIFO: one waiter at a time refills and sleeps
            need = min(amount, self.capacity)
            self._refill()
            while self._level < need:
                await self._sleep((need - self._level) / self.rate)
                self._refill()
            self._level -= amount

    def charge(self, amount: float) -> None:
        """Take ``amount`` units now, without waiting (the bucket may go into debt); a negative
        amount gives units back, up to the capacity."""
        self._refill()
        self._level = min(self.capacity, self._level - amount)

    def lower_to(self, level: float) -> None:
        """The server says only ``level`` units remain: hold no more than that."""
        self._refill()
        self._level = min(self._level, level)
