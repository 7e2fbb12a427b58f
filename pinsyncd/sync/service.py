"""One service's cycle: adopt on first contact, settle intents, then plan and carry out a
window of pins at a time (send, delete, forget), track what is pending, verify once a day, and
save what the end of the cycle means for the service's health (`outcomes`).

Each job is its own part (`adoption`, `intents`, `sender`, `deletes`, `tracking`); they share
one `ServiceContext`. The planner decides, these parts carry out."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import replace

from pinsyncd import clock
from pinsyncd.backoff import RetryPolicy
from pinsyncd.config import Service
from pinsyncd.delegates import DelegateDialer, cause_of
from pinsyncd.durations import format_duration
from pinsyncd.model import RemotePin, ServiceState
from pinsyncd.outcomes import RETRY_AFTER, CycleEnd, Health, Trouble, health_after
from pinsyncd.planner import ServicePlan, plan_service
from pinsyncd.policy import Directives
from pinsyncd.psa import (
    InsufficientFunds,
    NotSent,
    PinningServiceClient,
    PinningServiceError,
    RateLimited,
    TokenUnavailable,
    Unauthorized,
)
from pinsyncd.store import StateStore
from pinsyncd.sync.adoption import Adoption
from pinsyncd.sync.context import (
    NodeNotListed,
    NodeView,
    Part,
    ServiceContext,
    ServiceReport,
    intent_grace,
    note_pause,
)
from pinsyncd.sync.deletes import Deleter
from pinsyncd.sync.intents import Intents
from pinsyncd.sync.rows import count_unsent
from pinsyncd.sync.sender import Sender
from pinsyncd.sync.tracking import Tracker
from pinsyncd.tuning import DEFAULT, Tuning


class ServiceExecutor(Part):
    """Runs cycles on one service, one cycle or adoption at a time, through its parts (each
    a `Part` on the same context, as this driver is)."""

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
        super().__init__(
            ServiceContext(
                service=service,
                client=client,
                store=store,
                dialer=dialer,
                retry=retry or RetryPolicy(),
                tuning=tuning,
                rng=rng or random.Random(),
                stopping=stopping,
                previous_peer_ids=frozenset(previous_peer_ids),
            )
        )
        self.verify_interval = verify_interval
        self.adoption = Adoption(self.ctx)
        self.intents = Intents(self.ctx)
        self.sender = Sender(self.ctx)
        self.deleter = Deleter(self.ctx)
        self.tracker = Tracker(self.ctx)
        self._turn = asyncio.Lock()  # one cycle or adoption at a time on this service
        # `StateStore.rowless_mark` as it was when every selected local pin had a row here.
        self._covered: tuple[int, int] | None = None
        self._rowless_seen = 0  # candidates without a row met by this cycle's windows
        self._rate_restored = False
        client.on_rate_limited = self._remember_block

    @property
    def progress(self) -> Callable[[str, int, int], None] | None:
        """Told (service, done, total) after each batch of adds and replaces."""
        return self.ctx.progress

    @progress.setter
    def progress(self, value: Callable[[str, int, int], None] | None) -> None:
        self.ctx.progress = value

    @property
    def intent_grace(self) -> float:
        return intent_grace(self.service)

    def ours(self, node: NodeView) -> frozenset[str]:
        """The peer ids whose requests this device owns."""
        return self.ctx.ours(node)

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
        self.ctx.halted = False
        before = dict(self.client.requests)
        state = await self.store.service_state(self.service.name)
        await self.sender.load()
        if not self._rate_restored:  # a restart keeps the slowed-down rate after a 429
            self._rate_restored = True
            if state.rate is not None:
                self.client.throttle.rate = state.rate
        if state.paused_until > clock.now():
            note_pause(report, state.pause_reason or "paused")
            report.unsent = await self._unsent_count(directives)
            return report
        report.unsent = -1  # set by a cycle that goes through all its windows
        end = await self._run_cycle(state, directives, node, send, report)
        health = health_after(
            state,
            end,
            now=clock.now(),
            recheck=self.tuning.auth_recheck,
            backoff=lambda failures: self.retry.delay(failures, self.ctx.rng),
        )
        if health is None:  # stopping: no recount either, the count is as last taken
            report.unsent = state.unsent or 0
        else:
            self._log_health(state, end, health)
            if health.pause_reason:
                note_pause(report, health.pause_reason)
            if end.trouble is Trouble.FAILING:
                report.error = end.error
        state = await self.store.service_state(self.service.name)
        if report.unsent < 0:  # the cycle ended early: count what is left to send
            report.unsent = await self._unsent_count(directives) if state.adopted else 0
        throttle = self.client.throttle
        if health is not None:
            state = health.applied_to(state)
        rate = throttle.rate if throttle.rate != throttle.ceiling else None
        ended = time.time()
        state = replace(state, last_cycle=ended, rate=rate, unsent=report.unsent)
        if health is not None and health.went_through:
            state = replace(state, last_success=ended)
        await self.store.save_service_state(state)
        await self._note_dials()
        report.pending = await self.store.pending(self.service.name)
        report.requests = {
            op: n - before.get(op, 0)
            for op, n in self.client.requests.items()
            if n - before.get(op, 0)
        }
        return report

    async def _view(
        self, d: Directives, adopted: bool, *, after: str
    ) -> tuple[Mapping[str, str], dict[str, RemotePin], str | None]:
        """From the state: a window of `Tuning.window` pins meant for this service that need
        something done (those above `after` in CID order), the requests the planner must see
        (see `StateStore.plan_view`), and where the next window starts (None: none). Pending
        requests are left to tracking. Before the first contact nothing is sent, so no
        candidates are loaded."""
        first = not after  # the MFS root is planned in the first window, whatever its CID
        with_rowless = self._covered != self.store.rowless_mark(self.service.name)
        candidates, remote, next_after, rowless = await self.store.plan_view(
            self.service.name,
            names_of=d.mfs_name,
            renamed=self.sender.renames(d),
            cids=d.gone | d.surplus,
            candidates=adopted,
            after=after,
            limit=self.tuning.window,
            include=d.mfs_root if first else None,
            with_rowless=with_rowless,
        )
        self._rowless_seen += rowless if with_rowless else 0
        if not first and d.mfs_root:
            candidates.pop(d.mfs_root, None)
        return d.meant_for(candidates), remote, next_after

    async def _window(
        self, d: Directives, node: NodeView | None, after: str, *, adopted: bool = True
    ) -> tuple[Mapping[str, str], dict[str, RemotePin], ServicePlan, str | None]:
        """One window, read and planned: its pins, the rows, the plan, the next window."""
        desired, remote, next_after = await self._view(d, adopted, after=after)
        plan = self._plan(d, desired, remote, adopted, node, first=not after)
        return desired, remote, plan, next_after

    async def plans(
        self, d: Directives, adopted: bool, node: NodeView | None = None
    ) -> AsyncIterator[ServicePlan]:
        """What a cycle would do now (`sync --dry-run`), a window at a time: the same windows,
        read and planned as a cycle reads and plans them (the first one also decides lookups,
        deletes and forgets). Reads the state, sends nothing."""
        after: str | None = ""
        while after is not None:
            _, _, plan, after = await self._window(d, node, after, adopted=adopted)
            yield plan

    async def _unsent_count(self, d: Directives) -> int:
        """Pins meant for this service with no request on it, counted a window at a time."""
        count, after = 0, ""
        while True:
            desired, remote, next_after = await self._view(d, True, after=after)
            count += count_unsent(desired, remote)
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
        *,
        first: bool,
    ) -> ServicePlan:
        return plan_service(
            self.service.name,
            desired,
            remote,
            now=clock.now(),
            adopted=adopted,
            first=first,
            intent_grace=self.intent_grace,
            intent_age=lambda row: clock.age(row.stamp),
            gone=d.gone,
            surplus=d.surplus,
            mfs_root=d.mfs_root,
            mfs_name=d.mfs_name,
            rename=self.sender.renames(d),
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
        mark = self.store.rowless_mark(self.service.name)
        self._rowless_seen = 0
        if not state.adopted:  # a full listing: it also counts as a verification
            if not node.peer_id:
                # Whose requests are ours is known only from the node's peer id, and what to
                # adopt only from its pins: first contact waits for the node's first listing.
                report.backoff = "waiting for the node's first listing before first contact"
                return
            await self.adoption.adopt(report, node)
            state = replace(state, adopted=True, last_verified=clock.now())
            await self.store.save_service_state(state)
        window: str | None = ""
        unsent = 0
        while window is not None:
            desired, remote, plan, after = await self._window(directives, node, window)
            if plan.resolve:  # decided in the first window only, as deletes and forgets are
                await self.intents.resolve(plan.resolve, remote, report, node)
                desired, remote, plan, after = await self._window(directives, node, window)
            if not window:
                report.intents_due_in = plan.intents_due_in
            if send and not self.ctx.idle():
                await self.sender.send_all(plan.add, plan.replace, remote, node, report)
                await self.deleter.remove_all(plan.remove, remote, report)
            if plan.drop:
                await self.store.forget(self.service.name, plan.drop)
                for cid in plan.drop:
                    remote.pop(cid, None)
            unsent += count_unsent(desired, remote)
            window = after
        report.unsent = unsent
        if not self._rowless_seen and self.store.rowless_mark(self.service.name) == mark:
            # Every selected local pin has a row here: until the pinset changes or a row is
            # deleted, the next windows need not walk the pinset to find pins without one.
            self._covered = mark
        await self.tracker.track(report, node, since)
        if send and clock.now() - state.last_verified >= self.verify_interval:
            await self.tracker.verify(report)
            latest = await self.store.service_state(self.service.name)
            await self.store.save_service_state(replace(latest, last_verified=clock.now()))

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
        await self.adoption.adopt(report, node)
        state = await self.store.service_state(self.service.name)
        await self.store.save_service_state(replace(state, adopted=True, last_verified=clock.now()))
        report.requests = dict(self.client.requests)
        return report

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
