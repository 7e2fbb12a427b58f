"""One sync cycle: list the local pinset, then bring every service up to date, each on its own
so that one service failing never stops the others."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import aiosqlite
import structlog

from pinsyncd import clock
from pinsyncd.backoff import RetryPolicy
from pinsyncd.config import Config
from pinsyncd.delegates import DelegateDialer
from pinsyncd.kubo import LocalNode, NodeError, PinListing, pin_kind
from pinsyncd.kubo_setup.overlap import mfs_warnings
from pinsyncd.origins import select_origins
from pinsyncd.policy import Answers, Directives, Policy, mfs_name
from pinsyncd.psa import PinningServiceClient
from pinsyncd.psa.errors import MAX_WAIT
from pinsyncd.selection import Selector
from pinsyncd.store import ListingDigest, ListingVetting, StateStore, StoredListing
from pinsyncd.store.readonly import KUBO_MFS_NOTE
from pinsyncd.sync.context import NodeView, ServiceReport
from pinsyncd.sync.service import ServiceExecutor
from pinsyncd.sync.snapshot import ListingSnapshot
from pinsyncd.throttle import Throttle
from pinsyncd.tuning import DEFAULT, Tuning

log = structlog.get_logger("pinsyncd.engine")


_T = TypeVar("_T")


class ListingStopped(NodeError):
    """The daemon stops: the node's listing was abandoned (the last one is used)."""


@dataclass
class CycleReport:
    started: float
    duration: float = 0.0
    node_online: bool = False
    node_error: str | None = None
    local_pins: int = 0
    selected: int = 0
    local_added: int = 0
    local_removed: int = 0
    local_renamed: int = 0
    listing_unchanged: bool = False
    """The node's listing was the same as the last one taken in: it was not diffed."""
    listing_probed: bool = False
    """... and that was known from a listing without names (see `ListingSnapshot`)."""
    skipped: ListingVetting | None = None
    """What the node's listing left out (lines that are not a pin, CIDs that do not parse,
    second spellings of one CID)."""
    node_came_back: bool = False
    services: dict[str, ServiceReport] = field(default_factory=dict)


class SyncEngine:
    """Owns the clients for one config. The constructor does no I/O; `close()` is idempotent."""

    def __init__(
        self,
        config: Config,
        store: StateStore,
        *,
        retry: RetryPolicy | None = None,
        stopping: Callable[[], bool] = lambda: False,
        halt: asyncio.Event | None = None,
        tuning: Tuning = DEFAULT,
    ) -> None:
        self.config = config
        self.tuning = tuning
        self._halt = halt  # set: a listing under way is abandoned
        self.store = store
        self.node = LocalNode.for_config(config)
        self.dialer = DelegateDialer(self.node)
        retry = retry or RetryPolicy.from_config(config.retry)
        self.clients = {
            s.name: PinningServiceClient(
                s.name,
                s.endpoint,
                s.token,
                timeout=s.timeout,
                connections=s.concurrency + 2,
                throttle=Throttle(s.rate_limit),
                max_wait=max(config.retry.cap, MAX_WAIT),  # an hour is always honoured
            )
            for s in config.services
        }
        self.executors = {
            s.name: ServiceExecutor(
                s,
                self.clients[s.name],
                store,
                self.dialer,
                retry=retry,
                verify_interval=config.sync.verify_interval,
                stopping=stopping,
                previous_peer_ids=config.node.previous_peer_ids,
                tuning=tuning,
            )
            for s in config.services
        }
        self.policy = Policy(config)
        self.selector = Selector(config.sync.include, config.sync.exclude)
        self._node_was_online: bool | None = None
        self._kubo_policy_checked = False  # once per engine (a start or a reload)
        self.selection_key = repr((config.sync.include, config.sync.exclude))
        self._selection_stored: str | None = None  # as this process last wrote it
        self._spool = config.state_path.parent  # where a large listing is kept while read
        self.mfs_root: str | None = None
        self.peer_id: str | None = None  # the node's, once listed (also from the state)
        self.taken_over: frozenset[str] = frozenset()  # peer ids taken over, from the state
        self.node_view = NodeView(online=False)
        self.look_seconds = 0.0
        """How long the node took to answer the last probe: what looking at it costs."""

    def interrupt(self) -> None:
        """Stop waiting for turns: requests not yet sent are abandoned (the daemon stops)."""
        for client in self.clients.values():
            client.throttle.interrupt()

    async def close(self) -> None:
        await self.dialer.close()
        for client in self.clients.values():
            await client.close()
        await self.node.close()

    async def cycle(self, *, send: bool = True, list_node: bool = True) -> CycleReport:
        """List the node's pins (or fall back to the last complete listing when the node is
        unreachable), then sync every service concurrently. `list_node=False` works from the
        last listing, as this engine last saw the node (online, with its origins, when it was
        listed by this process); `send=False, list_node=False` is a status round: it resolves
        and tracks what is pending, and sends nothing."""
        if list_node:
            report = await self.refresh_node()
        else:
            report = CycleReport(started=time.time())
            await self._use_stored_listing(report)
            report.node_online = self.node_view.online
            if not self.node_view.online:
                self.node_view = NodeView(False, self.peer_id, taken_over=self.taken_over)
        results = await asyncio.gather(
            *(self.sync_service(name, send=send) for name in self.executors)
        )
        report.services = dict(zip(self.executors, results, strict=True))
        report.duration = time.time() - report.started
        return report

    async def refresh_node(self) -> CycleReport:
        """List the node's pins into the state (or fall back to the last complete listing
        when the node is unreachable); services then work from this snapshot."""
        report = CycleReport(started=time.time())
        self.node_view = await self._read_node(report)
        await self.store.set_meta("last_cycle", str(report.started))
        report.duration = time.time() - report.started
        return report

    async def sync_service(self, name: str, *, send: bool = True) -> ServiceReport:
        """One service's cycle on the current snapshot; an internal error is reported, not
        raised, so one service can never stop the others. A state file error (full disk,
        damage) is raised: it is every service's."""
        try:
            directives = await self.directives(name)
            return await self.executors[name].sync(directives, self.node_view, send=send)
        except aiosqlite.Error:
            raise  # the state file's trouble, not this service's: the caller decides
        except Exception as exc:
            log.exception("service cycle crashed", service=name)
            return ServiceReport(name, error=f"internal error: {exc!r}")

    async def directives(self, name: str) -> Directives:
        """What the policy asks of service `name` in this cycle: its questions answered from
        the state, then its decision."""
        policy, store = self.policy, self.store
        states = {s: await store.service_state(s) for s in policy.order}
        asked = policy.ask(name, states, clock.now())
        answers = Answers(
            lost=await store.failed_for_good(asked.ahead, policy.max_attempts)
            if asked.lost
            else None,
            surplus=frozenset(await store.surplus(name, asked.ahead, policy.replicas))
            if asked.surplus
            else frozenset(),
            gone=frozenset(await store.gone_since(name, asked.gone_before))
            if asked.gone_before is not None
            else frozenset(),
        )
        return policy.decide(asked, answers, peer_id=self.peer_id, mfs_root=self.mfs_root)

    async def _check_kubo_policy(self) -> None:
        """Kubo's own MFS policy against `sync.mfs`: logged once per start or reload, and
        kept for `status` (cleared when it no longer holds)."""
        self._kubo_policy_checked = True  # the node answered `id`: a failure here is no
        try:  # reason to ask again every cycle (a node without these calls)
            warnings = await mfs_warnings(self.config, self.node)
        except NodeError:
            return
        await self.store.note(KUBO_MFS_NOTE, {"warnings": warnings})
        for warning in warnings:
            log.warning("the MFS root is pinned twice", problem=warning)

    async def adopt(self, name: str) -> ServiceReport:
        """`pinsyncd adopt` on one service, from the current node listing."""
        return await self.executors[name].adopt(self.node_view)

    async def _read_node(self, report: CycleReport) -> NodeView:
        vetting = ListingVetting()
        try:
            identity = await self.node.identity()
            context = self._context(identity.peer_id)
            stored = await self.store.listing_digest()
            if stored is not None and await self._probe_unchanged(stored, context):
                report.listing_unchanged = report.listing_probed = True
                report.local_pins, report.selected = stored.pins, stored.selected
            else:
                await self._full_listing(report, stored, context, identity.peer_id, vetting)
        except ListingStopped as exc:
            report.node_error = str(exc)
            await self._use_stored_listing(report)
            return NodeView(False, self.peer_id, taken_over=self.taken_over)
        except NodeError as exc:
            report.node_error = str(exc)
            if self._node_was_online is not False:
                log.warning("local node unreachable; working from the last listing", error=str(exc))
            self._node_was_online = False
            await self._use_stored_listing(report)
            return NodeView(False, self.peer_id, taken_over=self.taken_over)
        if self._node_was_online is False:
            # Pins that failed while the node, usually their only provider, was away get a
            # fresh try now, with fresh origins, rather than after their backoff.
            retried = await self.store.failed_due_now(self.config.retry.max_attempts)
            log.info("local node is back", node=self.config.node.api, failed_retried_now=retried)
            report.node_came_back = True
        self._node_was_online = True
        if not self._kubo_policy_checked:
            await self._check_kubo_policy()
        if self.peer_id != identity.peer_id:
            await self.store.set_meta("node_peer_id", identity.peer_id)
            self.peer_id = identity.peer_id
        if self._selection_stored != self.selection_key:
            await self.store.set_meta("selection", self.selection_key)
            self._selection_stored = self.selection_key
        await self._count(report, counted=report.listing_unchanged)
        report.node_online = True
        if not report.listing_unchanged:
            report.skipped = vetting
            await self._note_skipped(vetting)
        origins = select_origins(
            identity.addresses,
            identity.peer_id,
            include_private=self.config.sync.origins == "all",
        )
        return NodeView(True, identity.peer_id, tuple(origins), self.taken_over)

    def _context(self, peer_id: str) -> str:
        """What turns a listing into the state's rows besides the listing itself: a change
        in any of it makes the next listing a full diff (`ListingSnapshot`)."""
        sync = self.config.sync
        return repr((peer_id, tuple(sync.pin_types), self.selection_key, sync.mfs))

    async def _probe_unchanged(self, stored: StoredListing, context: str) -> bool:
        """Whether a listing without names (a probe: the node answers it several times
        faster) shows the same pins as the last full listing, which is recent enough that
        a pin renamed since is not yet due to be seen."""
        age = clock.now() - stored.digest.taken
        if self.node.names_supported is False or not 0 <= age < self.tuning.full_listing_every:
            return False
        started = time.monotonic()
        with ListingSnapshot(self._spool, context, keep=False) as probe:
            await self._read_listing(probe, names=False)
            self.look_seconds = time.monotonic() - started
            return probe.probe_digest == stored.digest.probe

    async def _full_listing(
        self,
        report: CycleReport,
        stored: StoredListing | None,
        context: str,
        peer_id: str,
        vetting: ListingVetting,
    ) -> None:
        """List the node's pins with their names, and take them into the state unless they
        are the very listing it holds."""
        with ListingSnapshot(self._spool, context) as snapshot:
            await self._read_listing(snapshot)
            digest = ListingDigest(snapshot.digest, snapshot.probe_digest, clock.now())
            if stored is not None and stored.digest.full == digest.full:
                report.listing_unchanged = True
                report.local_pins, report.selected = stored.pins, stored.selected
                await self.store.listing_seen_again(stored, digest)
                return
            added, removed, renamed = await self.store.replace_local_listing(
                self._listing(snapshot, peer_id, vetting),
                vetting,
                listed_twice=len(self.config.sync.pin_types) > 1,
                digest=digest,
            )
            report.local_added, report.local_removed = added, removed
            report.local_renamed = renamed

    async def _read_listing(self, snapshot: ListingSnapshot, *, names: bool = True) -> None:
        """Read the node's pins of the configured types (one streamed `pin/ls` each), then
        its MFS root when `sync.mfs` is on, into `snapshot`."""
        for pin_type in self.config.sync.pin_types:
            body = self.node.pin_ls_body(pin_type, names=names)
            await snapshot.read(pin_type, self._unless_halted(body))
        if self.config.sync.mfs:
            snapshot.note_mfs_root(await self.node.mfs_root())

    async def _listing(
        self, snapshot: ListingSnapshot, peer_id: str, vetting: ListingVetting
    ) -> AsyncIterator[list[tuple[str, str, str, int]]]:
        """The pins read into `snapshot`, in batches of (cid, name, kind, selected). Each
        pin is labelled with the type its entry gives, and one of a type not configured is
        left out; a CID listed under two types keeps its first entry. The MFS root is
        always selected; if it is also pinned, the pin's entry wins. Lines that are not a
        pin are counted in `vetting`."""
        selected = self.selector.selected
        skipped = PinListing()
        wanted = set(self.config.sync.pin_types)
        for pin_type in self.config.sync.pin_types:
            async for pins in self.node.parse_pins(snapshot.body(pin_type), skipped):
                yield [
                    (p.cid, p.name, kind, int(selected(p.cid, p.name)))
                    for p in pins
                    if (kind := pin_kind(p.type, pin_type)) in wanted
                ]
        vetting.bad_lines = skipped.bad_lines
        vetting.examples.extend(skipped.examples)
        if snapshot.mfs_root is not None:
            yield [(snapshot.mfs_root, mfs_name(peer_id), "mfs", 1)]

    async def _unless_halted(self, source: AsyncGenerator[_T, None]) -> AsyncIterator[_T]:
        """`source`, abandoned (`ListingStopped`) as soon as the daemon stops, even while it
        waits for a node that sends its listing a line at a time."""
        if self._halt is None:
            async for item in source:
                yield item
            return
        halted = asyncio.ensure_future(self._halt.wait())
        try:
            while True:
                step = asyncio.ensure_future(anext(source))
                await asyncio.wait((step, halted), return_when=asyncio.FIRST_COMPLETED)
                if not step.done():
                    step.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await step
                    raise ListingStopped("the daemon is stopping; the node's listing was abandoned")
                try:
                    item = step.result()
                except StopAsyncIteration:
                    return
                yield item
        finally:
            halted.cancel()
            with contextlib.suppress(Exception):
                await source.aclose()

    async def _note_skipped(self, vetting: ListingVetting) -> None:
        """Keep what the listing left out for `status`, and say so when it changes."""
        counts = {
            "lines": vetting.bad_lines,
            "unparsable": vetting.unparsable,
            "spellings": vetting.spellings,
        }
        if not await self.store.note("node_skipped", counts):
            return
        if not vetting.complete:
            log.warning(
                "the node's listing has entries that are not pins or whose CID does not parse; "
                "they are left out, and nothing is unpinned from the services while they last",
                not_a_pin=vetting.bad_lines,
                unparsable_cids=vetting.unparsable,
                examples=vetting.examples,
            )
        if vetting.spellings:
            log.info(
                "the node pins some CIDs in two spellings (CIDv0 and CIDv1); each is one pin "
                "to the services",
                second_spellings=vetting.spellings,
            )

    async def _count(self, report: CycleReport, *, counted: bool = False) -> None:
        """The counts of the stored listing into `report` (unless `counted` already), and
        what else the services need of it."""
        self.taken_over = await self.store.previous_peer_ids()
        if not counted:
            report.local_pins, report.selected = await self.store.local_counts()
        self.mfs_root = await self.store.mfs_root() if self.config.sync.mfs else None

    async def _use_stored_listing(self, report: CycleReport) -> None:
        """Work from the last complete listing (the node is offline). If include/exclude
        changed since it was stored, the stored selection is made again first."""
        if await self.store.get_meta("selection") != self.selection_key:
            changed = await self.store.reselect(
                lambda cid, name, kind: kind == "mfs" or self.selector.selected(cid, name)
            )
            await self.store.set_meta("selection", self.selection_key)
            self._selection_stored = self.selection_key
            log.info("include/exclude applied to the last listing", changed=changed)
        self.peer_id = self.peer_id or await self.store.get_meta("node_peer_id")
        await self._count(report)
