"""Bringing one CID back: connect the node to the delegates of a service that has it pinned,
then pin it through the node's RPC (`pin/add`, recursive, with its name), which fetches what
the node lacks. When a service's copy cannot be fetched, the next service that has it
pinned is tried. Nothing is ever unpinned or deleted, here or on a service."""

from __future__ import annotations

import time
from collections.abc import Callable

from pinsyncd.delegates import cause_of
from pinsyncd.kubo import LocalNode, NodeRequestError, PinProgress, PinStalled
from pinsyncd.restore.choose import Item, Offer
from pinsyncd.spec_limits import clip_name
from pinsyncd.store.restores import Outcome, RestoreItem

DIAL_AGAIN_AFTER = 60.0
"""A delegate dialled this recently is not dialled again before the next CID it serves."""


class Fetcher:
    """Fetches CIDs into the node, one call per CID (the caller bounds how many at a time)."""

    def __init__(
        self,
        node: LocalNode,
        *,
        stall: float,
        on_progress: Callable[[str, PinProgress], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._node = node
        self._stall = stall
        self._on_progress = on_progress
        self._clock = clock
        self._dialled: dict[str, tuple[float, str | None]] = {}  # address -> (when, error)

    async def fetch(self, item: Item) -> RestoreItem:
        """Pin `item` on the node from the first of its sources that works; the record of how
        it ended. A node that goes away is raised (`NodeUnavailable`): nothing more can be
        restored then."""
        reasons: list[str] = []
        progress = PinProgress()
        for source in item.sources:
            reachable, error = await self._dial(item.delegates(source))
            try:
                progress = await self._node.pin_add(
                    item.cid,
                    name=clip_name(item.name),
                    stall=self._stall,
                    on_progress=lambda p: self._told(item.cid, p),
                    clock=self._clock,
                )
            except PinStalled as exc:
                reasons.append(f"{source.service}: {_stalled(exc, source, reachable, error)}")
                progress = exc.progress
                continue
            except NodeRequestError as exc:  # the node refused this CID: no service helps
                return self._failed(item, source, f"node error: {exc}", progress)
            return RestoreItem(
                item.cid,
                item.name,
                source.service,
                Outcome.RESTORED,
                None,
                progress.blocks,
                progress.bytes,
            )
        return self._failed(item, item.sources[-1], "; ".join(reasons), progress)

    def _told(self, cid: str, progress: PinProgress) -> None:
        if self._on_progress is not None:
            self._on_progress(cid, progress)

    def _failed(self, item: Item, source: Offer, reason: str, progress: PinProgress) -> RestoreItem:
        return RestoreItem(
            item.cid,
            item.name,
            source.service,
            Outcome.FAILED,
            reason,
            progress.blocks,
            progress.bytes,
        )

    async def _dial(self, addresses: list[str]) -> tuple[int, str | None]:
        """Connect the node to `addresses` (those not dialled within `DIAL_AGAIN_AFTER`);
        how many of them answered, and the first error."""
        now = self._clock()
        due = [
            a
            for a in addresses
            if a not in self._dialled or now - self._dialled[a][0] >= DIAL_AGAIN_AFTER
        ]
        for result in await self._node.swarm_connect(due) if due else []:
            self._dialled[result.address] = (now, result.error)
        outcomes = [self._dialled[a][1] for a in addresses if a in self._dialled]
        errors = [e for e in outcomes if e is not None]
        return len(outcomes) - len(errors), (cause_of(errors[0]) if errors else None)


def _stalled(exc: PinStalled, source: Offer, reachable: int, error: str | None) -> str:
    """Why a fetch from `source` stalled, in the user's terms."""
    why = str(exc).split(": ", 1)[-1]
    delegates = len(dict.fromkeys(source.delegates))
    if not delegates:
        return f"{why} (the service named no delegate to connect to)"
    if error is not None:
        return f"{why} ({reachable} of {delegates} delegates reachable: {error})"
    return f"{why} (connected to its {delegates} delegates)"
