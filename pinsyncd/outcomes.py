"""What an answer or an error means, decided in one place and without I/O: for a service's
health after a cycle (pause, back off, or clear), and for a pin that keeps failing.

The sync layer names what happened (`CycleEnd`); these functions say what follows, so the
rules can be read, and property-tested, apart from the HTTP and SQLite around them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum

from pinsyncd.durations import format_duration
from pinsyncd.model import ServiceState

PAUSED = "paused: "
"""The prefix of a pause that needs the user (a refused token, no funds)."""
LIMITED = "rate limited: "
"""The prefix of a wait for the service's Retry-After."""
BACKING_OFF = "backing off: "
"""The prefix of a backoff after failed cycles."""
RETRY_AFTER = f"{LIMITED}waiting for the service's Retry-After"
LONG_PAUSE = 300.0
"""A wait this long is always announced, not only when it starts."""


class Hold(StrEnum):
    """What holds a service back, as its last cycle left it: one at a time."""

    NONE = "none"  # nothing holds it back
    PAUSED = "paused"  # until the user acts: the token was refused, or no funds
    BACKOFF = "backoff"  # cycles failed (5xx, network, malformed): it backs off, then tries
    RATE_LIMITED = "rate_limited"  # it waits for the service's Retry-After


def hold_of(pause_reason: str | None) -> Hold:
    """What a service's saved `pause_reason` holds it back by. It stays so from the end of
    the cycle that set it until a cycle goes through (or `pinsyncd retry`), also while the
    pause has run out and the next cycle is under way."""
    for prefix, hold in _HOLDS:
        if pause_reason and pause_reason.startswith(prefix):
            return hold
    return Hold.NONE


class Trouble(StrEnum):
    """How a cycle on a service ended."""

    NONE = "none"  # it went through
    STOPPING = "stopping"  # the daemon stops: nothing to judge the service by
    REFUSED = "refused"  # 401/403 (token) or 409 (funds): the user must act
    RATE_LIMITED = "rate limited"  # a 429 whose wait is too long to wait out inline
    FAILING = "failing"  # anything else the service did wrong (5xx, network, malformed)


@dataclass(frozen=True, slots=True)
class CycleEnd:
    trouble: Trouble
    error: str | None = None  # the error's text
    refusal: str | None = None  # REFUSED: what was refused, for the user ("the token ...")
    retry_after: float | None = None  # RATE_LIMITED: the service's Retry-After, if any
    blocked_for: float = 0.0  # NONE: a Retry-After still running at the end of the cycle


@dataclass(frozen=True, slots=True)
class Health:
    """The part of a `ServiceState` that a cycle's end decides."""

    paused_until: float
    pause_reason: str | None
    last_error: str | None
    failures: int
    down_since: float
    wait: float = 0.0  # the pause, in seconds (0: none)
    announce: bool = False  # log the pause at warning (error: `needs_user`), not debug
    went_through: bool = False  # the cycle succeeded: its end is the service's last success

    @property
    def needs_user(self) -> bool:
        return is_user_pause(self.pause_reason)

    def applied_to(self, state: ServiceState) -> ServiceState:
        return replace(
            state,
            paused_until=self.paused_until,
            pause_reason=self.pause_reason,
            last_error=self.last_error,
            failures=self.failures,
            down_since=self.down_since,
        )


def is_user_pause(reason: str | None) -> bool:
    """A pause the user must end (a token, funds), as against a temporary back-off."""
    return bool(reason) and str(reason).startswith(PAUSED)


def health_after(
    state: ServiceState,
    end: CycleEnd,
    *,
    now: float,
    recheck: float,
    backoff: Callable[[int], float],
) -> Health | None:
    """The service's health after a cycle that started in `state` and ended as `end`; None
    when nothing changes (stopping). `backoff(n)` is the wait after n failed cycles in a row.

    - REFUSED: paused for `recheck`, then asked again; it counts as down (for failover).
    - RATE_LIMITED: paused for the Retry-After (or `recheck` without one); not down.
    - FAILING: backs off `backoff(failures + 1)`; down since its first failed cycle.
    - NONE: every pause and failure is cleared, except a Retry-After still running, which a
      restart must respect too."""
    if end.trouble is Trouble.STOPPING:
        return None
    if end.trouble is Trouble.NONE:
        if end.blocked_for > 0:
            return Health(
                now + end.blocked_for,
                RETRY_AFTER,
                None,
                0,
                0.0,
                wait=end.blocked_for,
                announce=end.blocked_for >= LONG_PAUSE,
                went_through=True,
            )
        return Health(0.0, None, None, 0, 0.0, went_through=True)
    if end.trouble is Trouble.REFUSED:
        reason, wait = f"{PAUSED}{end.refusal or 'the service refused the request'}", recheck
        failures, down = state.failures, state.down_since or now
    elif end.trouble is Trouble.RATE_LIMITED:
        wait = end.retry_after if end.retry_after is not None else recheck
        reason = f"{LIMITED}nothing is sent for {format_duration(wait)}"
        failures, down = state.failures, state.down_since
    else:
        failures, down = state.failures + 1, state.down_since or now
        wait = backoff(failures)
        reason = f"{BACKING_OFF}{failures} failed cycle(s), next try in {format_duration(wait)}"
    announce = _kind(state.pause_reason) != _kind(reason) or wait >= LONG_PAUSE
    return Health(now + wait, reason, end.error, failures, down, wait=wait, announce=announce)


def _kind(reason: str | None) -> str:
    return (reason or "").split(":")[0]


_HOLDS = ((PAUSED, Hold.PAUSED), (BACKING_OFF, Hold.BACKOFF), (LIMITED, Hold.RATE_LIMITED))
