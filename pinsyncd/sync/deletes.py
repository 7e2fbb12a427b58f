"""Deletes the requests the policy no longer wants: only this device's, by requestid."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from pinsyncd.model import RemotePin
from pinsyncd.planner import Remove
from pinsyncd.psa import (
    NotFound,
    PinningServiceError,
    addressable,
)
from pinsyncd.sync.context import REFUSED, Part, ServiceReport
from pinsyncd.sync.tracking import still_listed


class Deleter(Part):
    """Deletes requests (`remove_all`); a delete is idempotent, 404 means done."""

    async def remove_all(
        self, removes: Sequence[Remove], remote: dict[str, RemotePin], report: ServiceReport
    ) -> None:
        """Delete requests the policy no longer wants: only ones recorded in the state, by
        their requestid. A delete is idempotent (404 means done), so an error leaves the row
        to be deleted at a later cycle."""
        if not removes:
            return
        results = await asyncio.gather(
            *(self._remove_one(item) for item in removes), return_exceptions=True
        )
        done = [item for item, ok in zip(removes, results, strict=True) if ok is True]
        for item in done:
            report.removed[item.reason] = report.removed.get(item.reason, 0) + 1
            remote.pop(item.cid, None)
        await self.store.forget(self.service.name, [item.cid for item in done])
        if done:
            self.log.info(
                "deleted pins",
                **{reason.replace(" ", "_"): n for reason, n in report.removed.items()},
            )
        for result in results:
            if isinstance(result, REFUSED):
                raise result
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result

    async def _remove_one(self, item: Remove) -> bool:
        async with self.ctx.limit:
            if self.ctx.idle():
                return False
            try:
                await self.client.delete_pin(item.requestid)
            except NotFound:
                if addressable(item.requestid):
                    return True  # already gone
                return await self._deleted_unaddressable(item)
            except REFUSED:
                self.ctx.halted = True
                raise
            except PinningServiceError as exc:
                self.log.debug("delete failed; tried next cycle", cid=item.cid, error=str(exc))
                return False
            return True

    async def _deleted_unaddressable(self, item: Remove) -> bool:
        """A delete of a request whose id does not survive a URL answered 404: it is gone only
        if the service no longer lists it (else it stays recorded, and is tried again)."""
        listed, untold = await still_listed(self.client, [(item.cid, item.requestid)])
        if listed:
            self.log.warning(
                "cannot delete a request: the service answers 404 for its id but still lists "
                "it; delete it in the service's own interface",
                cid=item.cid,
                requestid=item.requestid,
            )
        elif untold:
            self.log.debug("a deleted request cannot be told gone; asked again", cid=item.cid)
        return not (listed or untold)
