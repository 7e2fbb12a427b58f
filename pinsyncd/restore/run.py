"""`pinsyncd restore`: bring the pins that pinsyncd backed up back onto a node.

1. Ask the node who it is, and list the services (or look up the CIDs asked for).
2. Choose (`choose`): the requests of this node (or of the `--from-peer` nodes it replaces,
   or every pinsyncd request), each CID once, from the first service that has it `pinned`.
3. Skip what the node already has pinned; record the rest in the state (`restore_items`),
   then fetch it (`fetch`), a bounded number at a time, recording each outcome.
4. Leave the next sync able to see every restored pin as backed up: the `--from-peer` ids
   become this node's previous ids, and each service's first-contact adoption is run again,
   so the requests already there are taken over by owner and CID, and nothing is pinned twice.

A `kill -9` leaves the state consistent: a second run finds what the node already pinned and
fetches only the rest. Nothing is ever deleted, on the node or on a service."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import structlog

from pinsyncd.config import Config
from pinsyncd.kubo import LocalNode, NodeError, NodeUnavailable
from pinsyncd.psa import PinningServiceClient
from pinsyncd.restore.choose import Item, Plan, Wanted, choose, cid_key
from pinsyncd.restore.display import RestoreProgress
from pinsyncd.restore.fetch import Fetcher
from pinsyncd.restore.listing import Listings, list_services
from pinsyncd.store import StateStore
from pinsyncd.store.restores import Outcome, RestoreItem
from pinsyncd.throttle import Throttle

log = structlog.get_logger("pinsyncd.restore")


class RestoreFailed(Exception):
    """The restore could not run (or go on): the node or every service is unreachable."""


@dataclass(frozen=True)
class RestoreOptions:
    services: tuple[str, ...]
    """Where from, in the order tried."""
    from_peers: tuple[str, ...] = ()
    everyone: bool = False
    """Every request pinsyncd made, whichever node made it (`--all`)."""
    cids: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    parallel: int = 8
    stall: float = 120.0
    """Give up a CID (on one service) when no new block came for this long."""
    dry_run: bool = False


@dataclass
class RestoreReport:
    peer_id: str
    owners: frozenset[str] | None
    listings: Listings
    plan: Plan
    present: list[Item]
    """Wanted CIDs the node already has pinned: not fetched again."""
    todo: list[Item]
    results: list[RestoreItem] = field(default_factory=list)
    taken_over: list[str] = field(default_factory=list)
    """The `--from-peer` ids, whose requests this node now owns."""
    seconds: float = 0.0
    stopped: str | None = None
    """Why fetching stopped before the end (the node went away)."""

    @property
    def restored(self) -> list[RestoreItem]:
        return [r for r in self.results if r.outcome is Outcome.RESTORED]

    @property
    def failed(self) -> list[RestoreItem]:
        return [r for r in self.results if r.outcome is Outcome.FAILED]

    @property
    def complete(self) -> bool:
        """Every wanted CID is on the node, and every service could be listed in full."""
        return (
            self.stopped is None
            and not self.failed
            and not self.plan.unpinned
            and len(self.results) == len(self.todo)
            and not self.listings.failed
            and not self.listings.incomplete
        )


async def restore(
    config: Config,
    options: RestoreOptions,
    store: StateStore | None,
    *,
    taken_over: frozenset[str] = frozenset(),
    terminal: bool | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> RestoreReport:
    """Run a restore (`store` is None for a dry run: nothing is written or fetched).
    `taken_over` is what the state says this node took over before."""
    started = clock()
    node = LocalNode.for_config(config)
    clients = _clients(config, options.services)
    try:
        try:
            identity = await node.identity()
        except NodeError as exc:
            raise RestoreFailed(str(exc)) from None
        owners = None
        if not options.everyone:
            owners = frozenset(
                {identity.peer_id, *config.node.previous_peer_ids, *taken_over}
                | set(options.from_peers)
            )
        listings = await list_services(clients, options.cids)
        if len(listings.failed) == len(clients):
            raise RestoreFailed(
                "no service could be listed: "
                + "; ".join(f"{n}: {why}" for n, why in listings.failed.items())
            )
        wanted = Wanted(owners, frozenset(map(cid_key, options.cids)), options.names)
        plan = choose(listings.offers, options.services, wanted)
        on_node = await _pinned_on(node)
        present = [i for i in plan.items if cid_key(i.cid) in on_node]
        todo = [i for i in plan.items if cid_key(i.cid) not in on_node]
        report = RestoreReport(identity.peer_id, owners, listings, plan, present, todo)
        if store is not None:
            await _fetch_all(config, report, node, store, options, terminal, clock)
    finally:
        for client in clients.values():
            await client.close()
        await node.close()
    report.seconds = clock() - started
    return report


async def _fetch_all(
    config: Config,
    report: RestoreReport,
    node: LocalNode,
    store: StateStore,
    options: RestoreOptions,
    terminal: bool | None,
    clock: Callable[[], float],
) -> None:
    """Record the plan, make the next sync adopt what is restored, then fetch."""
    await store.add_previous_peer_ids(options.from_peers)
    report.taken_over = sorted(set(options.from_peers))
    # Every service, not only those restored from: any of them may hold a request, now
    # this node's own, for a CID that is about to become a local pin.
    everywhere = [s.name for s in config.services]
    await _adopt_again(store, everywhere)
    records = store.restores()
    await records.plan(
        [RestoreItem(i.cid, i.name, i.service, Outcome.PRESENT) for i in report.present]
        + [RestoreItem(i.cid, i.name, i.service) for i in report.todo]
        + [
            RestoreItem(i.cid, i.name, None, Outcome.UNPINNED, _elsewhere(i))
            for i in report.plan.unpinned
        ]
    )
    with RestoreProgress(len(report.todo), terminal=terminal, clock=clock) as progress:
        fetcher = Fetcher(node, stall=options.stall, on_progress=progress.fetching, clock=clock)
        queue = iter(report.todo)

        async def worker() -> None:
            for item in _next(queue, report):
                try:
                    result = await fetcher.fetch(item)
                except NodeUnavailable as exc:  # the others stop before their next CID
                    report.stopped = str(exc)
                    return
                await records.settle([result])
                report.results.append(result)
                progress.settled(result)
                if result.outcome is Outcome.FAILED:
                    log.warning("not restored", cid=item.cid, name=item.name, reason=result.reason)

        await asyncio.gather(*(worker() for _ in range(max(1, options.parallel))))
    await _adopt_again(store, everywhere)


def _next(queue: Iterator[Item], report: RestoreReport) -> Iterator[Item]:
    """The items left, until the restore is stopped."""
    for item in queue:
        if report.stopped is not None:
            return
        yield item


async def _adopt_again(store: StateStore, services: Sequence[str]) -> None:
    """Make each service's next cycle start with its first-contact adoption: its requests for
    the node's CIDs that this node owns are taken over, restored ones among them."""
    for name in services:
        state = await store.service_state(name)
        if state.adopted:
            await store.save_service_state(replace(state, adopted=False))


async def _pinned_on(node: LocalNode) -> set[bytes]:
    """The multihashes of the node's recursive pins."""
    try:
        return {cid_key(pin.cid) async for pin in node.iter_pins("recursive")}
    except NodeError as exc:
        raise RestoreFailed(str(exc)) from None


def _clients(config: Config, names: Sequence[str]) -> dict[str, PinningServiceClient]:
    services = {s.name: s for s in config.services}
    return {
        name: PinningServiceClient(
            name,
            services[name].endpoint,
            services[name].token,
            timeout=services[name].timeout,
            connections=services[name].concurrency + 2,
            throttle=Throttle(services[name].rate_limit),
        )
        for name in names
    }


def _elsewhere(item: Item) -> str:
    return (
        "not pinned on any service ("
        + ", ".join(f"{status} on {service}" for service, status in item.elsewhere.items())
        + ")"
    )
