"""Follows pending requests by listing (about one request per 1000 pending pins, not one
GET per pin), and verifies the pinned set in full once a day; a pin gone from the service is
pinned again only once a GET and a listing agree that it is gone."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta

from pinsyncd import clock
from pinsyncd.cids import multihash_of
from pinsyncd.durations import format_duration
from pinsyncd.model import RemotePin, RemoteStatus, failed_for_good
from pinsyncd.psa import (
    PENDING_STATUSES,
    ListingReport,
    NotFound,
    PinningServiceClient,
    PinStatus,
    Status,
    addressable,
    find_pins,
    iter_pins,
)
from pinsyncd.sync.context import NodeView, Part, ServiceReport
from pinsyncd.sync.rows import apply_status, in_pages, parse_time


class Tracker(Part):
    """Status tracking and verification for one service."""

    async def track(self, report: ServiceReport, node: NodeView, since: float) -> None:
        """Follow the requests pending since before `since` (not those made or looked up in
        this cycle: the next status round does) by listing, about one request per 1000
        pending pins, not one GET per pin; only requests that left the pending set are
        looked up further. The pending requests wait in a temporary table and are matched
        a page at a time, so memory stays flat however many there are.
        While a pin is pending and the node is online, the node keeps (re)connecting to its
        delegates: after an offline window that is what lets the service fetch the blocks."""
        async with self.store.tracking(self.service.name, before=since) as tracked:
            if not tracked.remaining():
                return
            redial = node.online and self.dialer is not None
            pages = in_pages(
                iter_pins(self.client, statuses=PENDING_STATUSES), self.tuning.track_page
            )
            async with contextlib.aclosing(pages):
                async for page in pages:
                    rows = await tracked.take([status.requestid for status in page])
                    updates: list[RemotePin] = []
                    for status in page:
                        row = rows.get(status.requestid)
                        if row is None:
                            continue
                        if status.delegates and redial and self.dialer is not None:
                            self.dialer.keep_connected(
                                status.delegates,
                                service=self.service.name,
                                origins=len(node.origins),
                            )
                        if row.status.value != status.status.value:
                            updates.append(apply_status(row, status))
                    await self._record(updates, report)
            oldest = await tracked.oldest_created() if tracked.remaining() else None
            if oldest is not None:  # left the pending set: pinned or failed since `oldest`
                after = parse_time(oldest) - timedelta(seconds=1)
                done = iter_pins(self.client, statuses=(Status.PINNED, Status.FAILED), after=after)
                async with (
                    contextlib.aclosing(done),
                    contextlib.aclosing(in_pages(done, self.tuning.track_page)) as pages,
                ):
                    async for page in pages:
                        rows = await tracked.take([status.requestid for status in page])
                        await self._record(
                            [
                                apply_status(rows[s.requestid], s)
                                for s in page
                                if s.requestid in rows
                            ],
                            report,
                        )
                        if not tracked.remaining():
                            break
            updates = []
            answered_404: list[RemotePin] = []
            for row in await tracked.rest(self.tuning.track_lookups):  # the rest: a later round
                assert row.requestid is not None
                try:
                    updates.append(apply_status(row, await self.client.get_pin(row.requestid)))
                except NotFound:
                    answered_404.append(row)
            still, gone = await self._confirm_gone(answered_404)
            await self._record([*updates, *still], report)
            vanished = [row.cid for row in gone]
        if vanished:
            report.vanished += len(vanished)
            self.log.warning(
                "pins vanished from the service; they will be added again", count=len(vanished)
            )
            await self.store.forget(self.service.name, vanished)

    async def _record(self, updates: Sequence[RemotePin], report: ServiceReport) -> None:
        """Save status changes found by tracking; a failed pin gets its retry time."""
        rows: list[RemotePin] = []
        for row in updates:
            if row.status is RemoteStatus.PINNED:
                report.became_pinned += 1
            elif row.status is RemoteStatus.FAILED:
                report.became_failed += 1
                attempts = max(1, row.attempts)
                wait = self.retry.after_failed(attempts, self.ctx.rng)
                row = row.evolve(next_attempt=clock.now() + wait)
                for_good = failed_for_good(row.status, attempts, self.retry.max_attempts)
                (self.log.warning if for_good else self.log.debug)(
                    "pin failed for good on the service" if for_good else "pin failed",
                    cid=row.cid,
                    attempts=attempts,
                    details=row.details or "(none given)",
                    retry_in=format_duration(wait),
                )
            rows.append(row)
        await self.store.save(rows)

    async def _confirm_gone(
        self, rows: Sequence[RemotePin]
    ) -> tuple[list[RemotePin], list[RemotePin]]:
        """Of requests whose GET answered 404: those the service still lists by CID (updated
        to the status listed), and those really gone. A 404 alone is not proof: the id may
        not survive a URL's normalisation (`addressable`), or a server or proxy may answer
        404 for a path it mishandles; a wrong "gone" would pin the CID a second time. One
        that cannot be told is in neither: it is asked about again later."""
        pairs = [(row.cid, row.requestid or "") for row in rows]
        listed, untold = await still_listed(self.client, pairs)
        still: list[RemotePin] = []
        gone: list[RemotePin] = []
        for row, pair in zip(rows, pairs, strict=True):
            if pair in listed:
                still.append(apply_status(row, listed[pair]))
            elif pair not in untold:
                gone.append(row)
        if still:
            self.log.warning(
                "the service answered 404 for requests it still lists; they are kept",
                count=len(still),
                requestid_addressable=all(addressable(r.requestid or "") for r in still),
            )
        return still, gone

    async def verify(self, report: ServiceReport) -> None:
        """List the service's pinned set in full and pin again what vanished from it. A pin
        missing from the listing counts as vanished only once a GET answers 404: a listing
        can be incomplete (servers page differently), and a wrong "vanished" would pin twice.
        The listed requestids go to a temporary table, so memory stays flat."""
        if not (await self.store.counts(self.service.name, unsent=False)).get("pinned"):
            return
        listed = 0
        listing = ListingReport()

        async def batches() -> AsyncIterator[list[str]]:
            nonlocal listed
            batch: list[str] = []
            async for status in iter_pins(self.client, statuses=(Status.PINNED,), report=listing):
                batch.append(status.requestid)
                if len(batch) >= 1000:
                    listed += len(batch)
                    yield batch
                    batch = []
            listed += len(batch)
            yield batch

        missing = await self.store.missing_from(self.service.name, batches())
        updates: list[RemotePin] = []
        answered_404: list[RemotePin] = []
        for row in missing[: self.tuning.verify_lookups]:  # the rest: the next verification
            assert row.requestid is not None
            try:
                current = await self.client.get_pin(row.requestid)
            except NotFound:
                answered_404.append(row)
                continue
            if current.status is not Status.PINNED:
                updates.append(apply_status(row, current))
        still, gone = await self._confirm_gone(answered_404)
        updates.extend(row for row in still if row.status is not RemoteStatus.PINNED)
        vanished = [row.cid for row in gone]
        await self.store.save(updates)
        await self.store.forget(self.service.name, vanished)
        report.vanished += len(vanished)
        await self.note_skipped(listing)
        counts = await self.store.counts(self.service.name, unsent=False)
        (self.log.warning if vanished or updates else self.log.info)(
            "verified the pinned set",
            pinned=counts.get("pinned", 0),
            listed=listed,
            vanished=len(vanished),
            changed=len(updates),
            unconfirmed=max(0, len(missing) - self.tuning.verify_lookups),
        )


async def still_listed(
    client: PinningServiceClient, pairs: Sequence[tuple[str, str]]
) -> tuple[dict[tuple[str, str], PinStatus], set[tuple[str, str]]]:
    """Which (cid, requestid) pairs the service still lists, with their listed status,
    and which cannot be told (a lookup by the CID met records that do not match the
    spec: the request may be behind one). The rest are gone."""
    if not pairs:
        return {}, set()
    unreadable: set[bytes] = set()
    found = await find_pins(client, [cid for cid, _ in pairs], uncertain=unreadable)
    listed: dict[tuple[str, str], PinStatus] = {}
    untold: set[tuple[str, str]] = set()
    for cid, requestid in pairs:
        key = multihash_of(cid)
        match = [s for s in found.get(key, []) if s.requestid == requestid]
        if match:
            listed[(cid, requestid)] = match[0]
        elif key in unreadable:
            untold.add((cid, requestid))
    return listed, untold
