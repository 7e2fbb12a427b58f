"""What `pinsyncd restore` did, CID by CID (`restore_items`): each CID it set out to bring
back, from which service, and how that ended. The node's own pinset says what is already
back; this record says why the rest is not, for the summary and for `status`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from pinsyncd import clock
from pinsyncd.store.schema import fetch, scrub

if TYPE_CHECKING:
    from pinsyncd.store.db import StateStore


class Outcome(StrEnum):
    WAITING = "waiting"  # planned; not fetched yet (or a run was stopped while fetching it)
    RESTORED = "restored"  # pinned on the node by a restore
    PRESENT = "present"  # already pinned on the node: not fetched again
    FAILED = "failed"  # fetching it failed from every service that has it pinned
    UNPINNED = "unpinned"  # no service has it pinned (queued, pinning or failed there)


@dataclass(frozen=True, slots=True)
class RestoreItem:
    cid: str
    name: str = ""
    service: str | None = None
    outcome: Outcome = Outcome.WAITING
    reason: str | None = None
    blocks: int = 0
    bytes: int = 0


class RestoreLog:
    """The `restore_items` table of a state file (see `StateStore.restores`)."""

    def __init__(self, store: StateStore) -> None:
        self._store = store

    async def plan(self, items: Iterable[RestoreItem]) -> None:
        """Record what a restore sets out to do. A CID already restored keeps its record."""
        rows = [
            (i.cid, scrub(i.name), i.service, i.outcome.value, scrub(i.reason), clock.now())
            for i in items
        ]
        async with self._store._transaction():
            await self._store._db.executemany(
                "INSERT INTO restore_items (cid, name, service, outcome, reason, updated) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (cid) DO UPDATE SET "
                "name=excluded.name, service=excluded.service, outcome=excluded.outcome, "
                "reason=excluded.reason, updated=excluded.updated "
                "WHERE restore_items.outcome != 'restored' OR excluded.outcome != 'present'",
                rows,
            )

    async def settle(self, items: Sequence[RestoreItem]) -> None:
        """Record how fetching these CIDs ended."""
        rows = [
            (
                i.service,
                i.outcome.value,
                scrub(i.reason),
                i.blocks,
                i.bytes,
                clock.now(),
                i.cid,
            )
            for i in items
        ]
        async with self._store._transaction():
            await self._store._db.executemany(
                "UPDATE restore_items SET service=?, outcome=?, reason=?, blocks=?, bytes=?, "
                "updated=? WHERE cid=?",
                rows,
            )

    async def items(self, cids: Iterable[str] | None = None) -> dict[str, RestoreItem]:
        """The records of `cids` (default: all), by CID."""
        sql = "SELECT cid, name, service, outcome, reason, blocks, bytes FROM restore_items"
        rows = list(await fetch(self._store._db, sql))
        wanted = None if cids is None else set(cids)
        return {
            cid: RestoreItem(cid, name, service, Outcome(outcome), reason, blocks, size)
            for cid, name, service, outcome, reason, blocks, size in rows
            if wanted is None or cid in wanted
        }
