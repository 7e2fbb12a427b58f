"""The domain: what pinsyncd knows of one pin request on one service (`RemotePin`), the
states a request goes through (`RemoteStatus`), and a service's own bookkeeping
(`ServiceState`). Named once here; the core decides with them, the store keeps them.

How a row's status moves (docs/design.md draws it):

- none -> `intent` when an add or a replace is decided (saved before it is sent);
- `intent` -> `queued` / `pinning` / `pinned` / `failed` from the service's answer, or when
  the intent is looked up after its grace time; -> `error` when the add did not get there;
  -> gone when the lookup finds no request (nothing was created);
- `queued` -> `pinning` -> `pinned` or `failed` as tracking sees the service move it;
- `failed` -> `intent` (a replace, after its backoff), `error` -> `intent` (an add again);
- any -> gone when the request is deleted (or found deleted on the service).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

from pinsyncd import clock


class RemoteStatus(StrEnum):
    INTENT = "intent"  # an add was decided and may have been sent; the outcome is not known
    QUEUED = "queued"
    PINNING = "pinning"
    PINNED = "pinned"
    FAILED = "failed"
    ERROR = "error"  # the last add did not reach the service; retry at next_attempt


LIVE_STATUSES = frozenset(
    {RemoteStatus.INTENT, RemoteStatus.QUEUED, RemoteStatus.PINNING, RemoteStatus.PINNED}
)
"""A row in one of these has (or may have) a live request on the service: never add again."""

PENDING_STATUSES = frozenset({RemoteStatus.QUEUED, RemoteStatus.PINNING})
UNFINISHED_STATUSES = ("intent", "queued", "pinning")
"""Sent, or maybe sent, and not yet pinned or failed (the `pending` count)."""


class Origin(StrEnum):
    CREATED = "created"  # pinsyncd sent the add
    ADOPTED = "adopted"  # the pin was already on the service and pinsyncd took it over


@dataclass(frozen=True, slots=True)
class RemotePin:
    """One (service, CID) as pinsyncd tracks it."""

    service: str
    cid: str
    status: RemoteStatus
    requestid: str | None = None
    created: str | None = None  # the service's `created`, RFC 3339
    name: str | None = None
    origin: Origin = Origin.CREATED
    attempts: int = 0
    next_attempt: float = 0.0  # Unix time
    last_error: str | None = None
    details: str | None = None  # the service's info.status_details
    updated: float = 0.0
    owned: bool = True  # this device's own request (see `pinsyncd.ownership`): it may delete it
    stamp: str | None = None  # `updated` on the boot clock (`pinsyncd.clock`)

    def evolve(self, **changes: Any) -> RemotePin:
        """This row with `changes`, written now. (Twice as fast as `dataclasses.replace`,
        which looks the fields up on every call: rows evolve twice per add.)"""
        values = {name: getattr(self, name) for name in _ROW_FIELDS}
        values.update(changes, updated=clock.now(), stamp=clock.stamp())
        return RemotePin(**values)


_ROW_FIELDS = tuple(f.name for f in fields(RemotePin))


@dataclass(frozen=True, slots=True)
class Listed:
    """One request as a service answered or listed it: what pinsyncd keeps of the service's
    word on a request (`answers` applies it to a row; adoption stages it in the store)."""

    cid: str
    requestid: str
    status: RemoteStatus
    created: str  # RFC 3339, as the service gave it
    created_ts: float  # the same, as Unix time (for ranking)
    name: str | None = None
    details: str | None = None
    owned: bool = True  # made by this device (else unclaimed: adoptable, never deleted)


GIVEN_UP_STATUSES = frozenset({RemoteStatus.FAILED, RemoteStatus.ERROR})
"""A request that did not get its pin pinned: the service marked it failed, or the add did
not reach the service."""


DEFAULT_MAX_ATTEMPTS = 5
"""`retry.max_attempts` when the config does not say: tries after which a pin counts as
failed for good on a service."""


def failed_for_good(status: RemoteStatus, attempts: int, max_attempts: int) -> bool:
    """Whether a pin counts as failed for good on a service: `max_attempts` tries have not
    got it pinned there (`retry.max_attempts`). It is still tried, but rarely
    (`retry.failed_retry`), it shows in `status`, and with `sync.replicas` the next service
    in line takes it over."""
    return status in GIVEN_UP_STATUSES and attempts >= max_attempts


@dataclass(frozen=True, slots=True)
class ServiceState:
    """Per-service bookkeeping that must survive restarts."""

    name: str
    adopted: bool = False  # the first full listing (adoption of existing pins) is done
    paused_until: float = 0.0  # nothing is sent before this (Unix time)
    pause_reason: str | None = None
    last_cycle: float | None = None
    last_error: str | None = None
    failures: int = 0  # cycles in a row that failed (for the service's own backoff)
    rate: float | None = None  # the adaptive request rate after a 429 (None: not limited)
    last_verified: float = 0.0  # when the service's pinned set was last listed in full
    down_since: float = 0.0  # when its current run of failed or paused cycles began (0: up)
    unsent: int | None = None  # pins meant for it with no request yet, at its last cycle
    last_success: float | None = None  # the end of its last cycle that went through
