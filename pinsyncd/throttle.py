"""How fast one service may be called. Every request asks `acquire()` first, so whatever code
path sends it:

- no request starts before a service's `Retry-After` / `X-RateLimit-Reset` has passed (a short
  wait is waited out; a long one raises `Blocked`, and the caller pauses the service);
- requests are spaced to at most `rate` per second: the configured `rate_limit`, halved on a
  429 (from the rate actually observed when none is configured) but only once a second and
  once 20 requests have succeeded at the new rate, so that a burst of 429s counts as one event
  and stray ones among other failures cannot grind the rate down, and raised again by 3% per
  success until it is back at the configured rate (or, with none, unlimited again);
- a request still waiting for its turn when the daemon stops is abandoned (`Interrupted`):
  it was never sent.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

MIN_RATE = 0.2  # requests per second: never slower than one every five seconds
INCREASE = 1.03  # per successful request after a 429: doubles in about 23 successes
INLINE_WAIT = 5.0
"""A wait for a turn (or a short Retry-After) up to this long is waited out; a longer one
pauses the service instead."""
OBSERVE = 20  # recent requests used to measure the rate actually sent
HOLDOFF = 1.0  # seconds after a decrease in which further 429s do not decrease again
HOLDOFF_SUCCESSES = 20  # ... and successes at the new rate that must have come since


class Blocked(Exception):
    """The service asked for a pause longer than the caller wants to wait inline."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the service asked to wait {seconds:.0f}s (Retry-After)")
        self.seconds = seconds


class Interrupted(Exception):
    """The wait for a turn was cut short because the daemon is stopping; nothing was sent."""


class Throttle:
    def __init__(
        self,
        ceiling: float | None = None,
        *,
        rate: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        """`clock` and `sleep` are the time it runs on: the monotonic clock and a real wait
        unless a test gives virtual ones (a `sleep` that moves its `clock` on)."""
        self.ceiling = ceiling
        self.rate = rate if rate is not None else ceiling
        self.blocked_until = 0.0
        self.rate_limited = 0  # 429s seen
        self._clock = clock
        self._virtual_sleep = sleep
        self._next_slot = 0.0
        self._recovery_target: float | None = None
        self._last_decrease = float("-inf")
        self._successes_since_decrease = HOLDOFF_SUCCESSES
        self._sent: deque[float] = deque(maxlen=OBSERVE)
        self._interrupted = asyncio.Event()

    def interrupt(self) -> None:
        """Abandon every wait under way and to come (the daemon is stopping)."""
        self._interrupted.set()

    async def acquire(self, max_wait: float = INLINE_WAIT) -> None:
        if self._interrupted.is_set():
            raise Interrupted
        now = self._clock()
        if self.blocked_until > now:
            wait = self.blocked_until - now
            if wait > max_wait:
                raise Blocked(wait)
            await self._sleep(wait)
            now = self._clock()
        if self.rate:
            slot = max(now, self._next_slot)
            self._next_slot = slot + 1.0 / self.rate
            if slot > now:
                await self._sleep(slot - now)
                now = self._clock()
            if self.blocked_until > now:  # a 429 arrived while this request waited its turn
                await self.acquire(max_wait)
                return
        self.note_sent(now)

    def note_sent(self, now: float) -> None:
        """Record that a request went out at `now` (acquire() does this)."""
        self._sent.append(now)

    async def _sleep(self, seconds: float) -> None:
        if self._virtual_sleep is not None:
            await self._virtual_sleep(seconds)
            if self._interrupted.is_set():
                raise Interrupted
            return
        try:
            async with asyncio.timeout(seconds):
                await self._interrupted.wait()
        except TimeoutError:
            return
        raise Interrupted

    def blocked_for(self) -> float:
        return max(0.0, self.blocked_until - self._clock())

    def on_rate_limited(self, retry_after: float | None) -> None:
        now = self._clock()
        self.rate_limited += 1
        self.blocked_until = max(self.blocked_until, now + (retry_after or 1.0))
        self._next_slot = max(self._next_slot, self.blocked_until)
        if (
            now - self._last_decrease < HOLDOFF
            or self._successes_since_decrease < HOLDOFF_SUCCESSES
        ):
            return  # the same burst, or the new rate has not been tried yet
        self._last_decrease = now
        self._successes_since_decrease = 0
        current = self.rate or self.observed_rate() or 1.0
        if self.ceiling is None and self._recovery_target is None:
            self._recovery_target = 2 * current
        self.rate = max(MIN_RATE, current / 2)

    def on_success(self) -> None:
        self._successes_since_decrease += 1
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
