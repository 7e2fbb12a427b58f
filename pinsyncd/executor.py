"""Carries out the plan for one service: adopt its existing pins, resolve unknown outcomes, add
and replace with bounded concurrency, and track pending requests by listing.

Every create (`POST /pins`, `POST /pins/{requestid}`) is preceded by a committed `intent` row.
An answer that says the request may have been applied (lost answer, timeout, 5xx, garbled
body) leaves the `intent` in place, to be looked up later instead of being sent again. So a
crash, a timeout or a retry can never pin a CID twice on the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import structlog

from pinsyncd import clock
from pinsyncd.backoff import RetryPolicy
from pinsyncd.cids import InvalidCIDError, multihash_of
from pinsyncd.config import Service
from pinsyncd.delegates import DelegateDialer, cause_of
from pinsyncd.durations import format_duration
from pinsyncd.model import (
    UNFINISHED_STATUSES,
    Origin,
    RemotePin,
    RemoteStatus,
    ServiceState,
    failed_for_good,
)
from pinsyncd.outcomes import RETRY_AFTER, CycleEnd, Health, Trouble, health_after, is_user_pause
from pinsyncd.ownership import Claim, claim_of, meta_for
from pinsyncd.planner import Add, Remove, Replace, ServicePlan, plan_service
from pinsyncd.policy import Directives
from pinsyncd.psa import (
    ALL_STATUSES,
    PENDING_STATUSES,
    InsufficientFunds,
    ListingReport,
    MalformedResponse,
    NetworkError,
    NotFound,
    NotSent,
    Pin,
    PinningServiceClient,
    PinningServiceError,
    PinStatus,
    RateLimited,
    ServerError,
    Status,
    TokenUnavailable,
    Unauthorized,
    addressable,
    clip_name,
    find_pins,
    iter_pins,
    same_content,
)
from pinsyncd.state import Listed, StateStore
from pinsyncd.tuning import DEFAULT, Tuning

_STATUS_RANK = {Status.PINNED: 3, Status.PINNING: 2, Status.QUEUED: 1, Status.FAILED: 0}
_REFUSED = (Unauthorized, InsufficientFunds, RateLimited)  # a create that was not applied


class NodeNotListed(PinningServiceError):
    """Adoption was asked for before the node was ever listed (its peer id is not known)."""


@dataclass(frozen=True)
class NodeView:
    """What the executor needs to know of the local node for this cycle."""

    online: bool
    peer_id: str | None = None
    origins: tuple[str, ...] = ()


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
    unsent: int = 0  # pins meant for this service with no request on it yet
    paused: str | None = None  # needs the user: a refused token, no funds
    backoff: str | None = None  # temporary: rate limited, or retrying after errors
    error: str | None = None
    requests: dict[str, int] = field(default_factory=dict)


class ServiceExecutor:
    def __init__(
        self,
        service: Service,
        client: PinningServiceClient,
        store: StateStore,
        dialer: DelegateDialer | None,
        *,
        retry: RetryPolicy | None = None,
        verify_interval: float = 86400.0,
        stopping: Callable[[], bool] = lambda: False,
        rng: random.Random | None = None,
        previous_peer_ids: Iterable[str] = (),
        tuning: Tuning = DEFAULT,
    ) -> None:
        self.service = service
        self.tuning = tuning
        self.previous_peer_ids = frozenset(previous_peer_ids)
        """Peer ids this node had before: their requests are ours too."""
        self._turn = asyncio.Lock()  # one cycle or adoption at a time on this service
        self.client = client
        self.store = store
        self.dialer = dialer
        self.retry = retry or RetryPolicy()
        self.verify_interval = verify_interval
        self._stopping = stopping
        self._rng = rng or random.Random()
        self._limit = asyncio.Semaphore(service.concurrency)
        self._halted = False  # a 401/409/429 this cycle: send nothing more to this service
        self._replace_noop: bool | None = None  # None: not read from the state yet
        """The service answers a replace of a request by its own CID with the request as it
        was (Helia's server): such a replace is sent as a delete, then an add."""
        self._rate_restored = False
        client.on_rate_limited = self._remember_block
        self.progress: Callable[[str, int, int], None] | None = None
        """Told (service, done, total) after each batch of adds and replaces."""
        self.log = structlog.get_logger("pinsyncd.service").bind(service=service.name)

    @property
    def intent_grace(self) -> float:
        return intent_grace(self.service)

    def ours(self, node: NodeView) -> frozenset[str]:
        """The peer ids whose requests this device owns."""
        return self.previous_peer_ids | ({node.peer_id} if node.peer_id else set())

    async def sync(
        self, directives: Directives | Mapping[str, str], node: NodeView, *, send: bool = True
    ) -> ServiceReport:
        """One cycle on this service: bring it to what `directives` ask of the selected local
        pins in the state. Given a plain mapping instead, that mapping is first stored as the
        node's listing (for tests and one-off use). `send=False` tracks and resolves only."""
        async with self._turn:
            return await self._sync(directives, node, send=send)

    async def _sync(
        self, directives: Directives | Mapping[str, str], node: NodeView, *, send: bool
    ) -> ServiceReport:
        if not isinstance(directives, Directives):
            await self.store.replace_local_pins(directives)
            directives = Directives()
        report = ServiceReport(self.service.name)
        self._halted = False
        before = dict(self.client.requests)
        state = await self.store.service_state(self.service.name)
        if self._replace_noop is None:
            self._replace_noop = await self.store.get_meta(self._noop_key) is not None
        if not self._rate_restored:  # a restart keeps the slowed-down rate after a 429
            self._rate_restored = True
            if state.rate is not None:
                self.client.throttle.rate = state.rate
        if state.paused_until > clock.now():
            _note_pause(report, state.pause_reason or "paused")
            report.unsent = await self._unsent_count(directives)
            return report
        report.unsent = -1  # set by a cycle that goes through all its windows
        end = await self._run_cycle(state, directives, node, send, report)
        health = health_after(
            state,
            end,
            now=clock.now(),
            recheck=self.tuning.auth_recheck,
            backoff=lambda failures: self.retry.delay(failures, self._rng),
        )
        if health is None:  # stopping: no recount either, the count is as last taken
            report.unsent = state.unsent or 0
        else:
            self._log_health(state, end, health)
            if health.pause_reason:
                _note_pause(report, health.pause_reason)
            if end.trouble is Trouble.FAILING:
                report.error = end.error
        state = await self.store.service_state(self.service.name)
        if report.unsent < 0:  # the cycle ended early: count what is left to send
            report.unsent = await self._unsent_count(directives) if state.adopted else 0
        throttle = self.client.throttle
        if health is not None:
            state = health.applied_to(state)
        rate = throttle.rate if throttle.rate != throttle.ceiling else None
        state = replace(state, last_cycle=time.time(), rate=rate, unsent=report.unsent)
        await self.store.save_service_state(state)
        await self._note_dials()
        counts = await self.store.counts(self.service.name, unsent=False)
        report.pending = sum(counts.get(s, 0) for s in UNFINISHED_STATUSES)
        report.requests = {
            op: n - before.get(op, 0)
            for op, n in self.client.requests.items()
            if n - before.get(op, 0)
        }
        return report

    async def _view(
        self, d: Directives, adopted: bool, *, after: str | None = None
    ) -> tuple[Mapping[str, str], dict[str, RemotePin], str | None]:
        """From the state: the pins meant for this service that need something done, the
        requests the planner must see (see `StateStore.plan_view`), and where the next
        window of pins starts. With `after` (a cycle), pins come in windows of `Tuning.window` CIDs
        and pending requests are left to `_track`; without it (a dry run), all at once.
        Before the first contact nothing is sent, so no candidates are loaded."""
        first = not after  # the MFS root is planned in the first window, whatever its CID
        candidates, remote, next_after = await self.store.plan_view(
            self.service.name,
            names_of=d.mfs_name,
            renamed=self._renames(d),
            cids=d.gone | d.surplus,
            candidates=adopted,
            pending=after is None,
            after=after or "",
            limit=self.tuning.window if after is not None else None,
            include=d.mfs_root if first else None,
        )
        if not first and d.mfs_root:
            candidates.pop(d.mfs_root, None)
        return d.meant_for(candidates), remote, next_after

    async def plan(
        self, d: Directives, adopted: bool, node: NodeView | None = None
    ) -> tuple[ServicePlan, Mapping[str, str], dict[str, RemotePin]]:
        """What a cycle would do now, all at once (reads the state, sends nothing)."""
        desired, remote, _ = await self._view(d, adopted)
        return self._plan(d, desired, remote, adopted, node), desired, remote

    def _renames(self, d: Directives) -> bool:
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

    async def _unsent_count(self, d: Directives) -> int:
        """Pins meant for this service with no request on it, counted a window at a time."""
        count, after = 0, ""
        while True:
            desired, remote, next_after = await self._view(d, True, after=after)
            count += _unsent(desired, remote)
            if next_after is None:
                return count
            after = next_after

    def _plan(
        self,
        d: Directives,
        desired: Mapping[str, str],
        remote: Mapping[str, RemotePin],
        adopted: bool,
        node: NodeView | None,
    ) -> ServicePlan:
        return plan_service(
            self.service.name,
            desired,
            remote,
            now=clock.now(),
            adopted=adopted,
            intent_grace=self.intent_grace,
            intent_age=lambda row: clock.age(row.stamp),
            gone=d.gone,
            surplus=d.surplus,
            mfs_root=d.mfs_root,
            mfs_name=d.mfs_name,
            rename=self._renames(d),
            node_online=node is None or node.online,
        )

    async def _cycle(
        self,
        state: ServiceState,
        directives: Directives,
        node: NodeView,
        send: bool,
        report: ServiceReport,
    ) -> None:
        """Adopt (first contact) and resolve, then go through the pins that need something
        done a window of `Tuning.window` CIDs at a time, so memory does not grow with them (an
        initial backup of a million pins), then track the requests pending from before."""
        since = clock.now()
        if not state.adopted:  # a full listing: it also counts as a verification
            if not node.peer_id:
                # Whose requests are ours is known only from the node's peer id, and what to
                # adopt only from its pins: first contact waits for the node's first listing.
                report.backoff = "waiting for the node's first listing before first contact"
                return
            await self._adopt(report, node)
            state = replace(state, adopted=True, last_verified=clock.now())
            await self.store.save_service_state(state)
        window: str | None = ""
        unsent = 0
        first = True
        while window is not None:
            desired, remote, after = await self._view(directives, True, after=window)
            plan = self._plan(directives, desired, remote, True, node)
            if first and plan.resolve:
                await self._resolve(plan.resolve, remote, report, node)
                desired, remote, after = await self._view(directives, True, after=window)
                plan = self._plan(directives, desired, remote, True, node)
            if send and not self._stopping() and not self._halted:
                await self._send_all(plan.add, plan.replace, remote, node, report)
                if first:  # deletes are planned from the rows, the same in every window
                    await self._remove_all(plan.remove, remote, report)
            if first and plan.drop:
                await self.store.forget(self.service.name, plan.drop)
                for cid in plan.drop:
                    remote.pop(cid, None)
            unsent += _unsent(desired, remote)
            window, first = after, False
        report.unsent = unsent
        await self._track(report, node, since)
        if send and clock.now() - state.last_verified >= self.verify_interval:
            await self._verify(report)
            latest = await self.store.service_state(self.service.name)
            await self.store.save_service_state(replace(latest, last_verified=clock.now()))

    # --- adoption and resolution ------------------------------------------------------------

    async def adopt(self, node: NodeView) -> ServiceReport:
        """`pinsyncd adopt`: list the whole service once and take over its requests for our
        selected CIDs that are ours or unclaimed (pins made by `ipfs pin remote add`, a web UI
        or an earlier install); other devices' requests are left alone."""
        if not node.peer_id:
            raise NodeNotListed(
                self.service.name,
                "adopt",
                "the node has never been listed: its peer id tells "
                "this device's requests from other devices'; start the node and try again",
            )
        async with self._turn:
            return await self._adopt_alone(node)

    async def _adopt_alone(self, node: NodeView) -> ServiceReport:
        report = ServiceReport(self.service.name)
        await self._adopt(report, node)
        state = await self.store.service_state(self.service.name)
        await self.store.save_service_state(replace(state, adopted=True, last_verified=clock.now()))
        report.requests = dict(self.client.requests)
        return report

    async def _adopt(self, report: ServiceReport, node: NodeView) -> None:
        """First contact: list everything on the service and take over the requests for our
        CIDs that are ours or unclaimed (and settle our intents), so nothing already there
        is pinned again; another device's requests are counted and left alone. The listing
        is staged in a temporary table and matched against the state in CID order, a chunk
        at a time: memory stays flat and the state is written in key order."""
        start = clock.now()
        matched = 0
        ours = self.ours(node)
        listing = ListingReport()
        async with self.store.staging(self.service.name) as staged:
            batch: list[Listed] = []
            async for status in iter_pins(self.client, statuses=ALL_STATUSES, report=listing):
                claim = claim_of(status.pin.meta, ours)
                if claim is Claim.OTHER:
                    report.others += 1
                    continue
                batch.append(_listed(status, owned=claim is Claim.OURS))
                if len(batch) >= self.tuning.adopt_batch:
                    await staged.add(batch)
                    batch = []
            if batch:
                await staged.add(batch)
            async for chunk in staged.matched(self.tuning.adopt_batch):
                matched += len(chunk)
                await self.store.save(_take_over(chunk, start, report))
            by_hash: dict[bytes, str] | None = None
            async for others in staged.unmatched(
                self.tuning.adopt_batch
            ):  # foreign, or other spellings
                if by_hash is None:
                    by_hash = _hash_index(await self.store.known_cids(self.service.name))
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
                    await self.store.save(_take_over(pairs, start, report))
        await self._hold_unreadable(listing, by_hash)
        await self._note_skipped(listing)
        if report.adopted or report.duplicates or report.others:
            self.log.info(
                "adopted existing pins",
                adopted=report.adopted,
                listed=matched,
                extra_requests_for_same_cid=report.duplicates,
                other_devices_requests=report.others,
            )

    async def _note_dials(self) -> None:
        """Keep, for `status`, which of the service's delegates the node failed to dial at
        their latest try (the dials run beside the cycles: this is what had been learned by
        the end of this one)."""
        trouble = self.dialer.trouble(self.service.name) if self.dialer is not None else None
        fact: dict[str, object] = {}
        if trouble is not None:
            fact = {
                "delegates": list(trouble.addresses),
                "error": trouble.error,
                "cause": cause_of(trouble.error),
                "origins_sent": trouble.origins,
            }
        await self.store.note(f"delegates:{self.service.name}", fact)

    async def _note_skipped(self, listing: ListingReport) -> None:
        """After a full listing: keep how many of its records were skipped (they do not match
        the spec) for `status`, and say why once, when it changes."""
        fact = {"records": listing.skipped, "reason": listing.skipped_reason}
        if await self.store.note(f"skipped_records:{self.service.name}", fact) and fact["records"]:
            self.log.warning(
                "the service lists records that do not match the spec; they are skipped",
                skipped=listing.skipped,
                first=listing.skipped_reason,
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
            by_hash = _hash_index(await self.store.known_cids(self.service.name))
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

    async def _resolve(
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
            if _parses(cid):
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
        ours = self.ours(node)
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
            best = max(matches, key=_rank)
            updates.append(_apply_status(row, best, owned=bool(mine)))
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

    # --- adds and replaces ------------------------------------------------------------------

    async def _send_all(
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
                        crashed = crashed or not isinstance(exc, _REFUSED)
                answers.append((item, result))

        async def settle() -> BaseException | None:
            nonlocal settled
            batch = answers[:]
            del answers[: len(batch)]
            settled += len(batch)
            failure = await self._settle(batch, previous, remote, report)
            if self.progress is not None and batch:
                self.progress(self.service.name, settled, len(work))
            return failure

        failure: BaseException | None = None
        senders = [asyncio.create_task(sender()) for _ in range(self.service.concurrency)]
        try:
            for start in range(0, len(work), block):
                if self._stopping() or self._halted or crashed:
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
                if not isinstance(result, _REFUSED):
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
        async with self._limit:
            if self._stopping() or self._halted:
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
                return self._error(intent, "HTTP 404 on add")
            except (NetworkError, ServerError, MalformedResponse) as exc:
                if isinstance(exc, NetworkError) and not exc.maybe_applied:
                    return self._error(intent, str(exc))
                # May have been applied: keep the intent; it is looked up after the grace time.
                return intent.evolve(last_error=str(exc))
            except (Unauthorized, InsufficientFunds, RateLimited):
                self._halted = True
                raise
            except PinningServiceError as exc:  # 400 and other 4xx: not applied
                return self._error(intent, str(exc))
        if not isinstance(sent, PinStatus):
            return sent
        status = sent
        if status.delegates and node.online and self.dialer is not None:
            self.dialer.submit(
                status.delegates, service=self.service.name, origins=len(node.origins)
            )
        # A service that keeps one request per CID (ipfs-cluster) may answer with another
        # device's request: then it is shared, and not ours to delete.
        owned = claim_of(status.pin.meta, self.ours(node)) is not Claim.OTHER
        return _apply_status(intent, status, last_error=None, owned=owned)

    async def _second_look(self, item: Replace, intent: RemotePin) -> RemotePin | bool | None:
        """`failed` can be transient or wrong on a service: look once more before replacing.
        True: replace it; False: the failed request is gone, add afresh; a row: it is not
        failed (any more), nothing to send; None: the look failed, the replace waits."""
        try:
            current = await self.client.get_pin(item.requestid)
        except NotFound:
            return False
        except (Unauthorized, InsufficientFunds, RateLimited):
            self._halted = True
            raise
        except PinningServiceError:  # NotSent included
            return None  # nothing was created; the replace waits for a later cycle
        if current.status is not Status.FAILED:
            return _apply_status(intent, current, attempts=intent.attempts - 1, last_error=None)
        return True

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
        if _unchanged(item, pin, status):
            await self._learn_replace_noop(item, status)
            if item.reason == "rename":  # the old name stays; nothing else to do
                return _apply_status(intent, status, last_error=None)
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
        except (Unauthorized, InsufficientFunds, RateLimited, NotSent):
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

    def _error(self, intent: RemotePin, message: str) -> RemotePin:
        delay = self.retry.delay(max(1, intent.attempts), self._rng)
        return intent.evolve(
            status=RemoteStatus.ERROR, last_error=message, next_attempt=clock.now() + delay
        )

    # --- deletes ----------------------------------------------------------------------------

    async def _remove_all(
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
            if isinstance(result, Unauthorized | InsufficientFunds | RateLimited):
                raise result
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result

    async def _remove_one(self, item: Remove) -> bool:
        async with self._limit:
            if self._stopping() or self._halted:
                return False
            try:
                await self.client.delete_pin(item.requestid)
            except NotFound:
                if addressable(item.requestid):
                    return True  # already gone
                return await self._deleted_unaddressable(item)
            except (Unauthorized, InsufficientFunds, RateLimited):
                self._halted = True
                raise
            except PinningServiceError as exc:
                self.log.debug("delete failed; tried next cycle", cid=item.cid, error=str(exc))
                return False
            return True

    async def _deleted_unaddressable(self, item: Remove) -> bool:
        """A delete of a request whose id does not survive a URL answered 404: it is gone only
        if the service no longer lists it (else it stays recorded, and is tried again)."""
        listed, untold = await self._still_listed([(item.cid, item.requestid)])
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

    # --- status tracking --------------------------------------------------------------------

    async def _track(self, report: ServiceReport, node: NodeView, since: float) -> None:
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
            pages = _pages(
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
                            updates.append(_apply_status(row, status))
                    await self._record(updates, report)
            oldest = await tracked.oldest_created() if tracked.remaining() else None
            if oldest is not None:  # left the pending set: pinned or failed since `oldest`
                after = _parse_time(oldest) - timedelta(seconds=1)
                done = iter_pins(self.client, statuses=(Status.PINNED, Status.FAILED), after=after)
                async with (
                    contextlib.aclosing(done),
                    contextlib.aclosing(_pages(done, self.tuning.track_page)) as pages,
                ):
                    async for page in pages:
                        rows = await tracked.take([status.requestid for status in page])
                        await self._record(
                            [
                                _apply_status(rows[s.requestid], s)
                                for s in page
                                if s.requestid in rows
                            ],
                            report,
                        )
                        if not tracked.remaining():
                            break
            updates = []
            answered_404: list[RemotePin] = []
            for row in await tracked.rest(100):  # the rest waits for a later round
                assert row.requestid is not None
                try:
                    updates.append(_apply_status(row, await self.client.get_pin(row.requestid)))
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
                wait = self.retry.after_failed(attempts, self._rng)
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
        listed, untold = await self._still_listed(pairs)
        still: list[RemotePin] = []
        gone: list[RemotePin] = []
        for row, pair in zip(rows, pairs, strict=True):
            if pair in listed:
                still.append(_apply_status(row, listed[pair]))
            elif pair not in untold:
                gone.append(row)
        if still:
            self.log.warning(
                "the service answered 404 for requests it still lists; they are kept",
                count=len(still),
                requestid_addressable=all(addressable(r.requestid or "") for r in still),
            )
        return still, gone

    async def _still_listed(
        self, pairs: Sequence[tuple[str, str]]
    ) -> tuple[dict[tuple[str, str], PinStatus], set[tuple[str, str]]]:
        """Which (cid, requestid) pairs the service still lists, with their listed status,
        and which cannot be told (a lookup by the CID met records that do not match the
        spec: the request may be behind one). The rest are gone."""
        if not pairs:
            return {}, set()
        unreadable: set[bytes] = set()
        found = await find_pins(self.client, [cid for cid, _ in pairs], uncertain=unreadable)
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

    # --- verification -----------------------------------------------------------------------

    async def _verify(self, report: ServiceReport) -> None:
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
        for row in missing[:200]:  # the rest is checked at the next verification
            assert row.requestid is not None
            try:
                current = await self.client.get_pin(row.requestid)
            except NotFound:
                answered_404.append(row)
                continue
            if current.status is not Status.PINNED:
                updates.append(_apply_status(row, current))
        still, gone = await self._confirm_gone(answered_404)
        updates.extend(row for row in still if row.status is not RemoteStatus.PINNED)
        vanished = [row.cid for row in gone]
        await self.store.save(updates)
        await self.store.forget(self.service.name, vanished)
        report.vanished += len(vanished)
        await self._note_skipped(listing)
        counts = await self.store.counts(self.service.name, unsent=False)
        (self.log.warning if vanished or updates else self.log.info)(
            "verified the pinned set",
            pinned=counts.get("pinned", 0),
            listed=listed,
            vanished=len(vanished),
            changed=len(updates),
            unconfirmed=max(0, len(missing) - 200),
        )

    # --- pauses -----------------------------------------------------------------------------

    async def _remember_block(self, until: float) -> None:
        """A 429 arrived: write down at once that nothing may be sent before `until`, so that
        a process killed right now does not let its successor send too early."""
        state = await self.store.service_state(self.service.name)
        if until > state.paused_until:
            reason = state.pause_reason if state.paused_until > clock.now() else None
            await self.store.save_service_state(
                replace(state, paused_until=until, pause_reason=reason or RETRY_AFTER)
            )

    async def _run_cycle(
        self,
        state: ServiceState,
        directives: Directives,
        node: NodeView,
        send: bool,
        report: ServiceReport,
    ) -> CycleEnd:
        """Run the cycle; how it ended, named for `outcomes.health_after`."""
        try:
            await self._cycle(state, directives, node, send, report)
        except NotSent:
            return CycleEnd(Trouble.STOPPING)
        except (Unauthorized, InsufficientFunds) as exc:
            return CycleEnd(Trouble.REFUSED, str(exc), refusal=self._refusal(exc))
        except RateLimited as exc:
            return CycleEnd(Trouble.RATE_LIMITED, str(exc), retry_after=exc.retry_after)
        except PinningServiceError as exc:
            return CycleEnd(Trouble.FAILING, str(exc))
        return CycleEnd(Trouble.NONE, blocked_for=self.client.throttle.blocked_for())

    def _refusal(self, exc: PinningServiceError) -> str:
        if isinstance(exc, TokenUnavailable):
            return str(exc).split(": ", 2)[-1]
        if isinstance(exc, Unauthorized):
            return f"the token from {self.service.token.source} was refused"
        return "the service says the account has insufficient funds"

    def _log_health(self, before: ServiceState, end: CycleEnd, health: Health) -> None:
        """A pause is logged when it starts (or is long), not on every recheck."""
        if end.trouble is Trouble.NONE:
            if before.pause_reason:
                self.log.info("service is answering again", after=before.pause_reason)
            if health.announce:
                self.log.warning(
                    "the service asked to wait: nothing is sent to it until then",
                    next_try=format_duration(health.wait),
                )
            return
        if not health.announce:
            self.log.debug(health.pause_reason, error=end.error)
            return
        log = self.log.error if health.needs_user else self.log.warning
        log(health.pause_reason, error=end.error, next_try=format_duration(health.wait))


def _note_pause(report: ServiceReport, reason: str) -> None:
    if is_user_pause(reason):
        report.paused = reason
    else:
        report.backoff = reason


def _unsent(desired: Mapping[str, str], remote: Mapping[str, RemotePin]) -> int:
    """Pins meant for the service with no request on it (never sent, or the add failed)."""
    return sum(
        1 for cid in desired if (row := remote.get(cid)) is None or row.status is RemoteStatus.ERROR
    )


def intent_grace(service: Service) -> float:
    """How old an `intent` must be before it is looked up: long enough that no request sent
    for it can still be on its way or being handled."""
    return 2 * service.timeout


def _rank(status: PinStatus) -> tuple[int, float]:
    return _STATUS_RANK[status.status], status.created.timestamp()


def _row_rank(row: RemotePin) -> tuple[int, float]:
    created = _parse_time(row.created).timestamp() if row.created else 0.0
    return _STATUS_RANK[Status(row.status.value)], created


def _unchanged(item: Replace, sent: Pin, answer: PinStatus) -> bool:
    """Whether a replace came back as the request it was meant to replace: the same
    requestid, still `failed`, or still for the old CID or name."""
    if answer.requestid != item.requestid or same_content(item.requestid, sent.cid):
        return False  # a new request, or a pin made again by its CID (ipfs-cluster)
    if answer.status is Status.FAILED or not same_content(answer.pin.cid, sent.cid):
        return True
    return item.reason == "rename" and answer.pin.name != sent.name


def _apply_status(row: RemotePin, status: PinStatus, **changes: Any) -> RemotePin:
    return row.evolve(
        status=RemoteStatus(status.status.value),
        requestid=status.requestid,
        created=status.created.isoformat(),
        name=status.pin.name if status.pin.name is not None else row.name,
        details=status.info.get("status_details"),
        **changes,
    )


def _take_over(
    chunk: Sequence[tuple[Listed, RemotePin | None]], start: float, report: ServiceReport
) -> list[RemotePin]:
    """The state's rows after adoption of a chunk of listed requests (with each CID's row as
    it was before the chunk). A request for a CID with no live row is taken over (or settles
    our intent); another request for a CID that has one is counted as a duplicate, and
    among duplicates first seen in this adoption the best (pinned, then newest) is kept."""
    updates: dict[str, RemotePin] = {}
    for listed, stored in chunk:
        row = updates.get(listed.cid) or stored
        if row is not None and row.requestid == listed.requestid:  # known: its claim may be
            owned = row.owned or listed.owned  # news to a state from before ownership
            updates[listed.cid] = _apply_listed(row.evolve(owned=owned), listed)
        elif row is None or row.status in (RemoteStatus.INTENT, RemoteStatus.ERROR):
            origin = Origin.CREATED if row is not None else Origin.ADOPTED
            base = row or RemotePin(report.service, listed.cid, RemoteStatus.QUEUED)
            updates[listed.cid] = _apply_listed(
                base.evolve(origin=origin, owned=listed.owned), listed
            )
            report.adopted += row is None
            report.resolved += row is not None
        else:  # another request for a CID that already has one
            report.duplicates += 1
            adopted_now = row.origin is Origin.ADOPTED and row.updated >= start
            rank = (_STATUS_RANK[Status(listed.status.value)], listed.created_ts)
            if adopted_now and rank > _row_rank(row):
                updates[listed.cid] = _apply_listed(row, listed)
    return list(updates.values())


def _listed(status: PinStatus, *, owned: bool) -> Listed:
    return Listed(
        status.pin.cid,
        status.requestid,
        RemoteStatus(status.status.value),
        status.created.isoformat(),
        status.created.timestamp(),
        status.pin.name,
        status.info.get("status_details"),
        owned,
    )


def _apply_listed(row: RemotePin, listed: Listed) -> RemotePin:
    return row.evolve(
        status=listed.status,
        requestid=listed.requestid,
        created=listed.created,
        name=listed.name if listed.name is not None else row.name,
        details=listed.details,
    )


async def _pages(
    statuses: AsyncIterator[PinStatus], size: int
) -> AsyncGenerator[list[PinStatus], None]:
    page: list[PinStatus] = []
    async for status in statuses:
        page.append(status)
        if len(page) >= size:
            yield page
            page = []
    if page:
        yield page


def _parses(cid: str) -> bool:
    try:
        multihash_of(cid)
    except InvalidCIDError:
        return False
    return True


def _hash_index(cids: Iterable[str]) -> dict[bytes, str]:
    index: dict[bytes, str] = {}
    for cid in cids:
        try:
            index.setdefault(multihash_of(cid), cid)
        except InvalidCIDError:
            continue
    return index


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)
