"""What each service holds, for a restore: every request it lists (all statuses, through the
pager that copes with each server's way of paging), or, when only some CIDs are asked for,
a lookup of those. One service failing leaves the others' listings usable."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pinsyncd.psa import (
    ALL_STATUSES,
    ListingReport,
    PinningServiceClient,
    PinningServiceError,
    PinStatus,
    find_pins,
    iter_pins,
)
from pinsyncd.restore.choose import Offer


@dataclass
class Listings:
    offers: dict[str, list[Offer]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    """Services that could not be listed, and why."""
    incomplete: dict[str, str] = field(default_factory=dict)
    """Services whose listing may have missed requests, and why."""
    requests: int = 0
    """Requests sent to the services."""


async def list_services(
    clients: Mapping[str, PinningServiceClient], cids: Sequence[str] = ()
) -> Listings:
    """Every request on each service (or only those for `cids`, when given)."""
    listings = Listings()

    async def one(name: str, client: PinningServiceClient) -> None:
        report = ListingReport()
        try:
            if cids:
                found = await find_pins(client, cids, statuses=ALL_STATUSES, report=report)
                statuses = [status for group in found.values() for status in group]
            else:
                statuses = [
                    s async for s in iter_pins(client, statuses=ALL_STATUSES, report=report)
                ]
        except PinningServiceError as exc:
            listings.failed[name] = str(exc)
            return
        listings.offers[name] = [offer_of(name, status) for status in statuses]
        if not report.complete:
            listings.incomplete[name] = (
                report.cut_off
                or report.skipped_reason
                or (f"{report.skipped} records did not match the spec and were skipped")
            )

    await asyncio.gather(*(one(name, client) for name, client in clients.items()))
    listings.requests = sum(sum(c.requests.values()) for c in clients.values())
    return listings


def offer_of(service: str, status: PinStatus) -> Offer:
    return Offer(
        service=service,
        requestid=status.requestid,
        cid=status.pin.cid,
        status=status.status.value,
        name=status.pin.name or "",
        meta=dict(status.pin.meta),
        delegates=tuple(status.delegates),
    )
