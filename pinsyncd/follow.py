"""When a service's pending requests are looked at next: about a second after something was
sent (a service that pins in half a second is confirmed within two), then twice as long each
round, up to `sync.status_interval`, and soon again whenever something new is sent. An intent
left by a crash keeps its grace (it protects a request the server may still be handling), and
is looked up at the first round after the grace ends, not a whole interval later. Pure: the
caller measures nothing here but passes what its cycle did."""

from __future__ import annotations

from dataclasses import dataclass

FIRST = 1.0
"""Seconds from a send to the first look at what it made."""
SOONEST = 0.05
"""The shortest wait before a round (an intent whose grace ends now)."""


@dataclass
class FollowUp:
    ceiling: float
    """The longest wait between two rounds while something is pending (status_interval)."""
    first: float = FIRST
    step: float = FIRST
    """The wait before the next round, when nothing new is sent meanwhile."""

    def __post_init__(self) -> None:
        self.first = min(self.first, self.ceiling)
        self.step = self.first

    def after(
        self, *, sent: int, pending: int, intents_due_in: float | None = None
    ) -> float | None:
        """Seconds until the next round, after a cycle that sent `sent` requests and left
        `pending` unfinished (intents among them); None when nothing is pending."""
        if sent or not pending:
            self.step = self.first
        if not pending:
            return None
        wait = self.step
        self.step = min(self.step * 2, self.ceiling)
        if intents_due_in is not None:
            wait = min(wait, max(intents_due_in, SOONEST))
        return wait
