"""Sends the adds and replaces a plan asks for, `concurrency` at a time. Every create is
preceded by a committed `intent` row; an answer that may have been applied keeps the intent, to
be looked up later instead of being sent again."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from pinsyncd import clock
from pinsyncd.answers import Unanswered, looked_again, unanswered, unchanged
from pinsyncd.model import Origin, RemotePin, RemoteStatus
from pinsyncd.ownership import Claim, claim_of, meta_for
from pinsyncd.planner import Add, Replace
from pinsyncd.policy import Directives
from pinsyncd.psa import (
    MalformedResponse,
    NetworkError,
    NotFound,
    NotSent,
    Pin,
    PinningServiceError,
    PinStatus,
    RateLimited,
    ServerError,
    clip_name,
)
from pinsyncd.sync.context import REFUSED, NodeView, Part, ServiceContext, ServiceReport
from pinsyncd.sync.rows import apply_status, listed_of


class Sender(Part):
    """The send pipeline for one service, and what it learned of the service's replace."""

    def __init__(self, ctx: ServiceContext) -> None:
        super().__init__(ctx)
        self._replace_noop: bool | None = None  # None: not read from the state yet
        """The service answers a replace of a request by its own CID with the request as it
        was (Helia's server): such a replace is sent as a delete, then an add."""

    async def load(self) -> None:
        """Read what is known of the service's replace from the state (once)."""
        if self._replace_noop is None:
            self._replace_noop = await self.store.get_meta(self._noop_key) is not None

    def renames(self, d: Directives) -> bool:
        """Whether names are carried to this service. Not where a replace does nothing: a
        rename would then be a delete and an add, and a pinned backup is worth more than its
        name."""
        return d.rename and not self._replace_noop

    @property
    def _noop_key(self) -> str:
        return f"replace_noop:{self.service.name}"

    async def _learn_replace_noop(self, item: Replace, answer: PinStatus) -> None:
        """Remember, for this service and across restarts, that its replace does nothing."""
        if self._replace_noop:
            return
        self._replace_noop = True
        fact = {"requestid": answer.requestid, "status": answer.status.value, "cid": item.cid}
        await self.store.note(self._noop_key, fact)
        self.log.warning(
            "the service answers a replace with the request as it was: a failed pin is now "
            "deleted, then added again, and names are no longer carried to it",
            requestid=answer.requestid,
            status=answer.status.value,
        )

    async def send_all(
        self,
        adds: Sequence[Add],
        replaces: Sequence[Replace],
        remote: dict[str, RemotePin],
        node: NodeView,
        report: ServiceReport,
    ) -> None:
        """Send the creates, `concurrency` at a time with no pause between blocks. A block's
        intents are committed before any of its requests is sent (at most two blocks ahead
        of the answers); the answers are committed a block at a time while the next block
        is being sent."""
        work: list[Add | Replace] = [*replaces, *adds]
        if not work:
            return
        block = max(64, self.service.concurrency * 16)
        queue: asyncio.Queue[tuple[Add | Replace, RemotePin] | None] = asyncio.Queue(block)
        previous: dict[str, RemotePin | None] = {}
        answers: list[tuple[Add | Replace, RemotePin | BaseException | None]] = []
        crashed = False
        settled = 0

        async def sender() -> None:
            nonlocal crashed
            while (entry := await queue.get()) is not None:
                item, intent = entry
                result: RemotePin | BaseException | None = None
                if not crashed:  # after a crash nothing more is sent; the intent is undone
                    try:
                        result = await self._send_one(item, intent, node)
                    except Exception as exc:  # judged in _settle
                        result = exc
                        crashed = crashed or not isinstance(exc, REFUSED)
                answers.append((item, result))

        async def settle() -> BaseException | None:
            nonlocal settled
            batch = answers[:]
            del answers[: len(batch)]
            settled += len(batch)
            failure = await self._settle(batch, previous, remote, report)
            if self.ctx.progress is not None and batch:
                self.ctx.progress(self.service.name, settled, len(work))
            return failure

        failure: BaseException | None = None
        senders = [asyncio.create_task(sender()) for _ in range(self.service.concurrency)]
        try:
            for start in range(0, len(work), block):
                if self.ctx.idle() or crashed:
                    break
                items = work[start : start + block]
                intents = []
                for item in items:
                    previous[item.cid] = remote.get(item.cid)
                    intents.append(self._intent(item, previous[item.cid]))
                await self.store.save(intents)  # committed before anything is sent
                for entry in zip(items, intents, strict=True):
                    await queue.put(entry)
                found = await settle()  # always: every answer is committed, even after a failure
                failure = failure or found
            for _ in senders:
                await queue.put(None)
            await asyncio.gather(*senders)
        finally:
            for task in senders:
                task.cancel()
        found = await settle()
        failure = failure or found
        if failure is not None:
            raise failure

    async def _settle(
        self,
        answers: Sequence[tuple[Add | Replace, RemotePin | BaseException | None]],
        previous: Mapping[str, RemotePin | None],
        remote: dict[str, RemotePin],
        report: ServiceReport,
    ) -> BaseException | None:
        """Commit a block of answers. A create that was not sent (or refused) goes back to
        what was there before; one that crashed keeps its intent, to be looked up later.
        Returns the exception that must end the cycle, if any (a crash before a refusal)."""
        updates: list[RemotePin] = []
        unsent: list[str] = []
        superseded: list[str] = []
        halt: BaseException | None = None
        crash: BaseException | None = None
        for item, result in answers:
            if isinstance(result, BaseException):
                if not isinstance(result, REFUSED):
                    crash = crash or result  # outcome unknown: the intent stays
                    continue
                halt = halt or result  # refused, so not applied
                result = None
            if result is None:  # nothing was created: back to what was there before
                before = previous[item.cid]
                if before is None:
                    unsent.append(item.cid)
                else:
                    updates.append(before)
                continue
            updates.append(result)
            if result.status is RemoteStatus.ERROR:
                report.errors += 1
            elif result.status is not RemoteStatus.INTENT:
                if isinstance(item, Replace):
                    report.replaced += 1
                    if item.supersedes and result.requestid != item.requestid:
                        superseded.append(item.supersedes)  # the old MFS root is gone
                else:
                    report.added += 1
        for row in updates:
            remote[row.cid] = row
        for cid in [*unsent, *superseded]:
            remote.pop(cid, None)
        await self.store.save(updates)
        await self.store.forget(self.service.name, [*unsent, *superseded])
        return crash or halt

    def _intent(self, item: Add | Replace, previous: RemotePin | None) -> RemotePin:
        name = clip_name(item.name or item.cid)
        base = previous or RemotePin(self.service.name, item.cid, RemoteStatus.INTENT)
        replacing = isinstance(item, Replace)
        return base.evolve(
            status=RemoteStatus.INTENT,
            name=name,
            attempts=base.attempts + 1,
            requestid=item.requestid if isinstance(item, Replace) else base.requestid,
            # An add makes a new request of ours (the one it follows, if any, is left alone).
            origin=base.origin if previous is not None and replacing else Origin.CREATED,
            owned=True,
        )

    async def _send_one(
        self, item: Add | Replace, intent: RemotePin, node: NodeView
    ) -> RemotePin | None:
        """Send one create; the new row, or None when nothing was sent."""
        pin = Pin(
            cid=item.cid,
            name=intent.name,
            origins=list(node.origins) if node.online else [],
            meta=self._meta(item.name, node),
        )
        async with self.ctx.limit:
            if self.ctx.idle():
                return None  # not sent
            replacing = isinstance(item, Replace)
            if isinstance(item, Replace) and item.reason == "failed":
                look = await self._second_look(item, intent)
                if look is None or isinstance(look, RemotePin):
                    return look
                replacing = look
            try:
                sent = await self._send(item, intent, pin, replacing)
            except NotSent:
                return None
            except NotFound:
                return self._unanswered(intent, Unanswered.NOT_APPLIED, "HTTP 404 on add")
            except REFUSED:
                self.ctx.halted = True
                raise
            except PinningServiceError as exc:
                return self._unanswered(intent, how_unanswered(exc), str(exc))
        if not isinstance(sent, PinStatus):
            return sent
        status = sent
        if status.delegates and node.online and self.dialer is not None:
            self.dialer.submit(
                status.delegates, service=self.service.name, origins=len(node.origins)
            )
        # A service that keeps one request per CID (ipfs-cluster) may answer with another
        # device's request: then it is shared, and not ours to delete.
        owned = claim_of(status.pin.meta, self.ctx.ours(node)) is not Claim.OTHER
        return apply_status(intent, status, last_error=None, owned=owned)

    async def _second_look(self, item: Replace, intent: RemotePin) -> RemotePin | bool | None:
        """`failed` can be transient or wrong on a service: look once more before replacing.
        True: replace it; False: the failed request is gone, add afresh; a row: it is not
        failed (any more), nothing to send; None: the look failed, the replace waits."""
        try:
            current = await self.client.get_pin(item.requestid)
        except NotFound:
            return False
        except REFUSED:
            self.ctx.halted = True
            raise
        except PinningServiceError:  # NotSent included
            return None  # nothing was created; the replace waits for a later cycle
        return looked_again(intent, listed_of(current)) or True

    async def _send(
        self, item: Add | Replace, intent: RemotePin, pin: Pin, replacing: bool
    ) -> PinStatus | RemotePin | None:
        """The create for `item`: the service's answer; a row when a rename turned out to
        change nothing; None when nothing was sent, or the request replaced is as it was."""
        if not (isinstance(item, Replace) and replacing):
            return await self._create(item, pin, replacing=False)
        if self._replace_noop and item.reason != "mfs":
            # What was learned holds for a replace by the same CID; one by another
            # (a new MFS root) is tried as such, and falls back only if it does nothing.
            if item.reason == "rename":
                return None  # planned before the no-op was seen: not worth a delete
            return await self._delete_then_add(item, pin)
        status = await self._create(item, pin, replacing=True)
        if unchanged(item.requestid, item.reason, pin.cid, pin.name, listed_of(status)):
            await self._learn_replace_noop(item, status)
            if item.reason == "rename":  # the old name stays; nothing else to do
                return apply_status(intent, status, last_error=None)
            return await self._delete_then_add(item, pin)
        return status

    async def _delete_then_add(self, item: Replace, pin: Pin) -> PinStatus | None:
        """A replace where the service's own does nothing: delete the request, and add the pin
        once the delete is answered, so there is never more than one request for the CID.
        None when the delete did not go through (the request is as it was before)."""
        try:
            await self.client.delete_pin(item.requestid)
        except NotFound:
            pass  # already gone
        except (*REFUSED, NotSent):
            raise
        except PinningServiceError as exc:
            self.log.info("a delete before an add again failed", cid=item.cid, error=str(exc))
            return None
        return await self._create(item, pin, replacing=False)

    async def _create(self, item: Add | Replace, pin: Pin, replacing: bool) -> PinStatus:
        """Send the create. A 429 means it was not applied: after a short Retry-After (which
        the throttle waits out before the next try) it is sent again, up to three times."""
        for attempt in range(3):
            try:
                if isinstance(item, Replace) and replacing:
                    try:
                        return await self.client.replace_pin(item.requestid, pin)
                    except NotFound:  # nothing was created: the same intent covers an add
                        replacing = False
                return await self.client.add_pin(pin)
            except RateLimited as exc:
                short = exc.retry_after is not None and exc.retry_after <= self.tuning.inline_wait
                if not short or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _meta(self, local_name: str, node: NodeView) -> dict[str, str]:
        return meta_for(node.peer_id, clip_name(local_name, 1000) if local_name else "")

    def _unanswered(self, intent: RemotePin, how: Unanswered, message: str) -> RemotePin:
        delay = self.retry.delay(max(1, intent.attempts), self.ctx.rng)
        return unanswered(intent, how, message, now=clock.now(), delay=delay)


def how_unanswered(exc: PinningServiceError) -> Unanswered:
    """What the client's error says of a create: a lost or reset answer, a timeout, a 5xx or
    a garbled body may have been applied; a 400 or another 4xx, or a connection that never
    sent the request, was not."""
    if isinstance(exc, NetworkError):
        return Unanswered.MAYBE_APPLIED if exc.maybe_applied else Unanswered.NOT_APPLIED
    if isinstance(exc, ServerError | MalformedResponse):
        return Unanswered.MAYBE_APPLIED
    return Unanswered.NOT_APPLIED
