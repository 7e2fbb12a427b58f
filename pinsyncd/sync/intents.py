"""Settles intents (adds whose outcome is not known, after a crash or a lost answer) by
looking their CIDs up on the service, never by sending them again."""

from __future__ import annotations

from collections.abc import Sequence

from pinsyncd.answers import rank
from pinsyncd.cids import multihash_of
from pinsyncd.model import RemotePin
from pinsyncd.ownership import Claim, claim_of
from pinsyncd.psa import find_pins
from pinsyncd.sync.context import NodeView, Part, ServiceReport
from pinsyncd.sync.rows import apply_status, listed_of, parses


class Intents(Part):
    """Looks intents up by CID and settles them (`resolve`)."""

    async def resolve(
        self,
        cids: Sequence[str],
        remote: dict[str, RemotePin],
        report: ServiceReport,
        node: NodeView,
    ) -> None:
        """Settle intents: the request was created (take it) or it was not (add again).
        Another device's requests for the CID are not ours to take. What each batch of
        lookups learned is committed before the next is asked, so a crash loses one batch,
        not the whole step (repeated crashes would otherwise never get past it)."""
        valid: list[str] = []
        for cid in cids:
            if parses(cid):
                valid.append(cid)
                continue
            # No service can hold a request for it, and none can be looked up: settle it
            # rather than retry a lookup that fails every cycle.
            self.log.warning("dropped an intent for a CID that does not parse", cid=cid)
            await self.store.forget(self.service.name, [cid])
            remote.pop(cid, None)
        for start in range(0, len(valid), self.tuning.resolve_batch):
            await self._resolve_batch(
                valid[start : start + self.tuning.resolve_batch], remote, report, node
            )

    async def _resolve_batch(
        self,
        cids: Sequence[str],
        remote: dict[str, RemotePin],
        report: ServiceReport,
        node: NodeView,
    ) -> None:
        unreadable: set[bytes] = set()
        found = await find_pins(self.client, cids, uncertain=unreadable)
        ours = self.ctx.ours(node)
        updates: list[RemotePin] = []
        lost: list[str] = []
        unsure = 0
        for cid in cids:
            key = multihash_of(cid)
            claims = [(claim_of(s.pin.meta, ours), s) for s in found.get(key, [])]
            mine = [s for claim, s in claims if claim is Claim.OURS]
            matches = mine or [s for claim, s in claims if claim is Claim.UNCLAIMED]
            row = remote[cid]
            if not matches:
                if key in unreadable:  # a request may be there that cannot be read
                    unsure += 1
                else:
                    lost.append(cid)
                continue
            if len(matches) > 1:
                report.duplicates += len(matches) - 1
                self.log.warning("more than one request for a CID", cid=cid, requests=len(matches))
            best = max(matches, key=lambda status: rank(listed_of(status)))
            updates.append(apply_status(row, best, owned=bool(mine)))
        if unsure:
            self.log.warning(
                "intents kept: the service lists records for them that do not match the spec, "
                "so whether a request exists is not known; they are looked up again later",
                count=unsure,
            )
        report.resolved += len(updates)
        for row in updates:
            remote[row.cid] = row
        await self.store.save(updates)
        if lost:
            await self.store.forget(self.service.name, lost)
            for cid in lost:
                del remote[cid]
