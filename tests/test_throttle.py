"""The per-service throttle: Retry-After is a wall no request passes, and the rate adapts."""

from __future__ import annotations

import itertools

import pytest

from pinsyncd.throttle import MIN_RATE, Blocked, Throttle


class VirtualTime:
    """A clock that moves only when the throttle sleeps on it: no test waits for real."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_a_short_retry_after_is_waited_out() -> None:
    virtual = VirtualTime()
    throttle = Throttle(clock=virtual.clock, sleep=virtual.sleep)
    throttle.on_rate_limited(0.3)
    await throttle.acquire(max_wait=5)
    assert virtual.slept == [pytest.approx(0.3)]
    assert virtual.now == pytest.approx(100.3)


async def test_a_long_retry_after_raises_instead_of_sending() -> None:
    throttle = Throttle()
    throttle.on_rate_limited(60)
    with pytest.raises(Blocked) as blocked:
        await throttle.acquire(max_wait=5)
    assert 59 < blocked.value.seconds <= 60
    assert 59 < throttle.blocked_for() <= 60


async def test_requests_are_spaced_to_the_configured_rate() -> None:
    """Turns are on a fixed grid of 1/rate: a request that comes late takes the next free
    slot from then on, and nothing is sent faster to make up for it."""
    virtual = VirtualTime()
    throttle = Throttle(20.0, clock=virtual.clock, sleep=virtual.sleep)
    stamps = []
    for i in range(6):
        await throttle.acquire()
        stamps.append(virtual.now)
        if i == 2:
            virtual.now += 0.2  # the caller was slow (a loaded machine)
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert gaps == pytest.approx([0.05, 0.05, 0.2, 0.05, 0.05]), gaps


def test_a_429_halves_the_rate_and_successes_bring_it_back() -> None:
    now = [0.0]
    throttle = Throttle(10.0, clock=lambda: now[0])
    throttle.on_rate_limited(1)
    assert throttle.rate == 5.0
    now[0] += 1.5
    throttle.on_rate_limited(1)
    assert throttle.rate == 5.0, "not again before 20 requests succeeded at the new rate"
    for _ in range(20):
        throttle.on_success()
    throttle.on_rate_limited(1)
    assert throttle.rate == pytest.approx(5.0 * 1.03**20 / 2)
    rate = throttle.rate
    for _ in range(10):
        throttle.on_success()
    assert throttle.rate == pytest.approx(rate * 1.03**10), "slowly: 3% per success"
    for _ in range(200):
        throttle.on_success()
    assert throttle.rate == 10.0, "never above the configured rate"


def test_without_a_configured_rate_it_limits_only_after_a_429_and_then_recovers() -> None:
    now = [0.0]
    throttle = Throttle(clock=lambda: now[0])
    assert throttle.rate is None
    throttle.on_rate_limited(None)
    assert throttle.rate == 0.5, "no history: half of 1/s"
    for _ in range(100):
        throttle.on_success()
    assert throttle.rate is None, "unlimited again once twice the limited rate is reached"


def test_a_burst_of_429s_is_one_slow_down() -> None:
    """Requests already under way when the first 429 came get 429s too: one event."""
    now = [0.0]
    throttle = Throttle(8.0, clock=lambda: now[0])
    for _ in range(4):
        throttle.on_rate_limited(0.5)
        now[0] += 0.01
    assert throttle.rate == 4.0
    assert throttle.rate_limited == 4
    assert throttle.blocked_until == pytest.approx(0.53)


def test_the_rate_never_drops_below_the_floor() -> None:
    throttle = Throttle(0.3)
    throttle.on_rate_limited(0)
    assert throttle.rate == MIN_RATE, "half of 0.3/s would be below the floor"


async def test_interrupt_abandons_waits_and_later_requests() -> None:
    from pinsyncd.throttle import Interrupted

    throttle = Throttle(0.5)  # one request every two seconds
    await throttle.acquire()
    import asyncio

    waiting = asyncio.create_task(throttle.acquire())
    await asyncio.sleep(0.05)
    throttle.interrupt()
    with pytest.raises(Interrupted):
        await waiting
    with pytest.raises(Interrupted):
        await throttle.acquire()
