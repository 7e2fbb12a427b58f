"""First contact with a service: list everything on it once and take over the requests for our
CIDs that are this device's or unclaimed, so nothing already there is pinned again."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from pinsyncd import clock
from pinsyncd.answers import AdoptionCounts, take_over
from pinsyncd.cids import InvalidCIDError, multihash_of
from pinsyncd.model import Listed, RemotePin, RemoteStatus
from pinsyncd.ownership import Claim, claim_of
from pinsyncd.psa import ALL_STATUSES, ListingReport, iter_pins
from pinsyncd.sync.context import NodeView, Part, ServiceReport
from pinsyncd.sync.rows import hash_index, listed_of


class Adoption(Part):
    """Takes over a service's existing requests for our CIDs (`adopt`)."""

    async def adopt(self, report: ServiceReport, node: NodeView) -> None:
        """First contact: list everything on the service and take over the requests for our
        CIDs that are ours or unclaimed (and settle our intents), so nothing already there
        is pinned again; another device's requests are counted and left alone. The listing
        is staged in a temporary table and matched against the state in CID order, a chunk
        at a time: memory stays flat and the state is written in key order."""
        start = clock.now()
        matched = 0
        ours = self.ctx.ours(node)
        listing = ListingReport()
        async with self.store.staging(self.service.name) as staged:
            batch: list[Listed] = []
            async for status in iter_pins(self.client, statuses=ALL_STATUSES, report=listing):
                claim = claim_of(status.pin.meta, ours)
                if claim is Claim.OTHER:
                    report.others += 1
                    continue
                batch.append(listed_of(status, owned=claim is Claim.OURS))
                if len(batch) >= self.tuning.adopt_batch:
                    await staged.add(batch)
                    batch = []
            if batch:
                await staged.add(batch)
            async for chunk in staged.matched(self.tuning.adopt_batch):
                matched += len(chunk)
                await self.store.save(self._take_over(chunk, start, report))
            by_hash: dict[bytes, str] | None = None
            async for others in staged.unmatched(
                self.tuning.adopt_batch
            ):  # foreign, or other spellings
                if by_hash is None:
                    by_hash = hash_index(await self.store.known_cids(self.service.name))
                mapped: list[Listed] = []
                for listed in others:
                    try:
                        cid = by_hash.get(multihash_of(listed.cid))
                    except InvalidCIDError:
                        continue
                    if cid is not None:
                        mapped.append(replace(listed, cid=cid))
                if mapped:
                    matched += len(mapped)
                    rows = await self.store.remote_rows(self.service.name, [x.cid for x in mapped])
                    pairs = [(x, rows.get(x.cid)) for x in mapped]
                    await self.store.save(self._take_over(pairs, start, report))
        await self._hold_unreadable(listing, by_hash)
        await self.note_skipped(listing)
        if report.adopted or report.duplicates or report.others:
            self.log.info(
                "adopted existing pins",
                adopted=report.adopted,
                listed=matched,
                extra_requests_for_same_cid=report.duplicates,
                other_devices_requests=report.others,
            )

    async def _hold_unreadable(
        self, listing: ListingReport, by_hash: dict[bytes, str] | None
    ) -> None:
        """Records of the first listing that do not match the spec are skipped, but a request
        may be behind each: for one whose CID is ours and not tracked yet, an intent is
        written, so it is looked up (and kept while it cannot be read), never added again."""
        if not listing.skipped:
            return
        if by_hash is None:  # not built yet by `_adopt`
            by_hash = hash_index(await self.store.known_cids(self.service.name))
        cids: set[str] = set()
        for raw in listing.skipped_cids:
            try:
                cid = by_hash.get(multihash_of(raw))
            except InvalidCIDError:
                continue
            if cid is not None:
                cids.add(cid)
        rows = await self.store.remote_rows(self.service.name, sorted(cids))
        held = [
            RemotePin(self.service.name, cid, RemoteStatus.INTENT).evolve(attempts=1)
            for cid in sorted(cids - rows.keys())
        ]
        await self.store.save(held)
        self.log.info(
            "our CIDs named only by records that do not match the spec are looked up later",
            ours_held_back=len(held),
        )

    def _take_over(
        self, chunk: Sequence[tuple[Listed, RemotePin | None]], start: float, report: ServiceReport
    ) -> list[RemotePin]:
        found = AdoptionCounts()
        rows = take_over(chunk, start, self.service.name, found)
        report.adopted += found.adopted
        report.resolved += found.resolved
        report.duplicates += found.duplicates
        return rows
