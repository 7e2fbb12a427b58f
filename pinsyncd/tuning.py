"""The fixed sizes and waits of a cycle, in one object the sync layer is given (a test passes
small ones instead of patching module globals)."""

from __future__ import annotations

from dataclasses import dataclass

from pinsyncd.throttle import INLINE_WAIT


@dataclass(frozen=True, slots=True)
class Tuning:
    window: int = 50_000
    """Pins planned and sent at a time in a cycle: memory stays flat however many there are."""
    adopt_batch: int = 10_000
    """Listed pins matched against the state and written at a time during adoption."""
    resolve_batch: int = 50
    """Intents looked up, then committed, at a time (a crash loses at most one batch)."""
    track_page: int = 1000
    """Listed statuses matched against the pending requests at a time."""
    track_lookups: int = 100
    """Requests that left the pending set but were found in no listing, looked up one GET
    each in a status round; the rest wait for the next round."""
    verify_lookups: int = 200
    """Pinned requests missing from a verification's listing, looked up one GET each; the
    rest wait for the next verification."""
    inline_wait: float = INLINE_WAIT
    """A Retry-After up to this long is waited out and the create sent again; a longer one
    pauses the service."""
    full_listing_every: float = 600.0
    """Between full listings of the node's pins (with names), a listing without names (a
    probe) is enough to see that no pin was added or removed; a pin only renamed on the node
    is seen by the next full listing, at most this long after the last."""
    auth_recheck: float = 60.0
    """A paused service (a refused token, no funds) is asked again at most this often; also
    the pause after a 429 without Retry-After."""


DEFAULT = Tuning()
