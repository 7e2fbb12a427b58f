"""What the parts of one service's cycle share (`ServiceContext`), and the small types they
pass: what is known of the node (`NodeView`) and what a cycle did (`ServiceReport`)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from pinsyncd.backoff import RetryPolicy
from pinsyncd.config import Service
from pinsyncd.delegates import DelegateDialer
from pinsyncd.outcomes import is_user_pause
from pinsyncd.psa import (
    InsufficientFunds,
    ListingReport,
    PinningServiceClient,
    PinningServiceError,
    RateLimited,
    Unauthorized,
)
from pinsyncd.store import StateStore
from pinsyncd.tuning import Tuning

REFUSED = (Unauthorized, InsufficientFunds, RateLimited)
"""A create answered with one of these was not applied, and nothing more is sent this cycle."""


class NodeNotListed(PinningServiceError):
    """Adoption was asked for before the node was ever listed (its peer id is not known)."""


@dataclass(frozen=True)
class NodeView:
    """What the executor needs to know of the local node for this cycle."""

    online: bool
    peer_id: str | None = None
    origins: tuple[str, ...] = ()
    taken_over: frozenset[str] = frozenset()
    """Peer ids the state says this node took over (`pinsyncd restore --from-peer`)."""


@dataclass
class ServiceReport:
    service: str
    adopted: int = 0
    resolved: int = 0
    added: int = 0
    replaced: int = 0
    became_pinned: int = 0
    became_failed: int = 0
    vanished: int = 0
    errors: int = 0
    duplicates: int = 0
    others: int = 0  # requests of other devices found (never adopted, never touched)
    removed: dict[str, int] = field(default_factory=dict)  # reason -> requests deleted
    pending: int = 0
    intents_due_in: float | None = None
    """Seconds until the first intent still within its grace may be looked up."""
    unsent: int = 0  # pins meant for this service with no request on it yet
    paused: str | None = None  # needs the user: a refused token, no funds
    backoff: str | None = None  # temporary: rate limited, or retrying after errors
    error: str | None = None
    requests: dict[str, int] = field(default_factory=dict)


@dataclass(eq=False)
class ServiceContext:
    """One service's connections and settings, shared by the parts of its cycle."""

    service: Service
    client: PinningServiceClient
    store: StateStore
    dialer: DelegateDialer | None
    retry: RetryPolicy
    tuning: Tuning
    rng: random.Random
    stopping: Callable[[], bool]
    previous_peer_ids: frozenset[str]
    """Peer ids this node had before: their requests are ours too."""
    halted: bool = False
    """A 401/409/429 this cycle: nothing more is sent to the service until the next one."""
    progress: Callable[[str, int, int], None] | None = None
    """Told (service, done, total) after each batch of adds and replaces."""
    limit: asyncio.Semaphore = field(init=False)
    log: structlog.stdlib.BoundLogger = field(init=False)

    def __post_init__(self) -> None:
        self.limit = asyncio.Semaphore(self.service.concurrency)
        self.log = structlog.get_logger("pinsyncd.service").bind(service=self.service.name)

    def ours(self, node: NodeView) -> frozenset[str]:
        """The peer ids whose requests this device owns."""
        mine = {node.peer_id} if node.peer_id else set()
        return self.previous_peer_ids | node.taken_over | mine

    def idle(self) -> bool:
        """Nothing more may be sent: the daemon stops, or the service refused this cycle."""
        return self.stopping() or self.halted


class Part:
    """One job of a service's cycle, on the service's shared context."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.service = ctx.service
        self.client = ctx.client
        self.store = ctx.store
        self.dialer = ctx.dialer
        self.retry = ctx.retry
        self.tuning = ctx.tuning
        self.log = ctx.log

    async def note_skipped(self, listing: ListingReport) -> None:
        """After a full listing: keep how many of its records were skipped (they do not match
        the spec) for `status`, and say why once, when it changes."""
        fact = {"records": listing.skipped, "reason": listing.skipped_reason}
        if await self.store.note(f"skipped_records:{self.service.name}", fact) and fact["records"]:
            self.log.warning(
                "the service lists records that do not match the spec; they are skipped",
                skipped=listing.skipped,
                first=listing.skipped_reason,
            )


def note_pause(report: ServiceReport, reason: str) -> None:
    if is_user_pause(reason):
        report.paused = reason
    else:
        report.backoff = reason


def intent_grace(service: Service) -> float:
    """How old an `intent` must be before it is looked up: long enough that no request sent
    for it can still be on its way or being handled."""
    return 2 * service.timeout
