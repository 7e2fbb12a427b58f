"""How fast one service may be called. Every request asks `acquire()` first, so whatever code
path sends it:

- no request starts before a service's `Retry-After` / `X-RateLimit-Reset` has passed (a short
  wait is waited out; a long one raises `Blocked`, and the caller pauses the service);
- requests are spaced to at most `rate` per second: the configured `rate_limit`, halved on
  every 429 (from the rate actually observed when none is configured), and raised again by 2%
  per success until it is back at the configured rate (or, with none, unlimited again).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

MIN_RATE = 0.2  # requests per second: never slower than one every five seconds
INCREASE = 1.02  # per successful request after a 429
OBSERVE = 10.0  # seconds of history used to measure the rate actually sent


class Blocked(Exception):
    """The service asked for a pause longer than the caller wants to wait inline."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the service asked to wait {seconds:.0f}s (Retry-After)")
        self.seconds = seconds


class Throttle:
    def __init__(
        self,
        ceiling: float | None = None,
        *,
        rate: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ceiling = ceiling
        self.rate = rate if rate is not None else ceiling
        self.blocked_until = 0.0
        self.rate_limited = 0  # 429s seen
        self._clock = clock
        self._next_slot = 0.0
        self._recovery_target: float | None = None
        self._sent: deque[float] = deque()

    async def acquire(self, max_wait: float = 5.0) -> None:
        now = self._clock()
        if self.blocked_until > now:
            wait = self.blocked_until - now
            if wait > max_wait:
                raise Blocked(wait)
            await asyncio.sleep(wait)
            now = self._clock()
        if self.rate:
            slot = max(now, self._next_slot)
            self._next_slot = slot + 1.0 / self.rate
            if slot > now:
                await asyncio.sleep(slot - now)
                now = self._clock()
            if self.blocked_until > now:  # a 429 arrived while this request waited its turn
                await self.acquire(max_wait)
                return
        self._sent.append(now)
        while self._sent and self._sent[0] < now - OBSERVE:
            self._sent.popleft()

    def blocked_for(self) -> float:
        return max(0.0, self.blocked_until - self._clock())

    def on_rate_limited(self, retry_after: float | None) -> None:
        now = self._clock()
        self.rate_limited += 1
        self.blocked_until = max(self.blocked_until, now + (retry_after or 1.0))
        current = self.rate or self.observed_rate() or 1.0
        if self.ceiling is None and self._recovery_target is None:
            self._recovery_target = 2 * current
        self.rate = max(MIN_RATE, current / 2)
        self._next_slot = max(self._next_slot, self.blocked_until)

    def on_success(self) -> None:
        if self.rate is None or self.rate == self.ceiling:
            return
        self.rate *= INCREASE
        target = self.ceiling if self.ceiling is not None else self._recovery_target
        if target is not None and self.rate >= target:
            self.rate = self.ceiling  # None again when no rate_limit is configured
            self._recovery_target = None

    def observed_rate(self) -> float:
        if len(self._sent) < 2:
            return 0.0
        span = max(self._sent[-1] - self._sent[0], 1e-3)
        return (len(self._sent) - 1) / span
