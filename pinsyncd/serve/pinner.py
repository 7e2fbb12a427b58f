"""The work behind `pinsyncd serve`'s answers: Kubo pins what the requests ask for, a bounded
number of CIDs at a time, and unpins what no request names any more.

One task per CID (requests for the same CID share it, whoever sent them): mark its requests
`pinning`, note whether Kubo held the pin already (`found`, someone else's: never unpinned
nor renamed; a direct one is made recursive, since the request needs every block), else
dial the requests' `origins` (best effort, with the same address policy as the client
side), then `pin/add` with progress until it is done or no new block came for `stall`
seconds.
`pinned`, or `failed` with the reason in `info.status_details`. A node that cannot be
reached fails nothing: the requests wait and the CID is tried again with a growing pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from pinsyncd.kubo import LocalNode, NodeError, NodeUnavailable, PinProgress, PinStalled
from pinsyncd.origins import is_public
from pinsyncd.serve.store import Request, ServeStore, Unpin
from pinsyncd.serve.wire import BadRequest, content_key
from pinsyncd.sizes import human_bytes

log = structlog.get_logger("pinsyncd.serve")

RETRY_FIRST = 2.0
RETRY_CAP = 60.0
RESCAN = 60.0


@dataclass(frozen=True)
class Finished:
    """One CID's pinning is over: `outcome` is pinned, failed or cancelled."""

    key: str
    outcome: str
    seconds: float
    requests: int


class Pinner:
    def __init__(
        self,
        store: ServeStore,
        node: LocalNode,
        *,
        concurrency: int = 4,
        stall: float = 600.0,
        dial_private: bool = False,
        clock: Callable[[], float] = time.monotonic,
        clock_speed: float = 1.0,
        on_finished: Callable[[Finished], None] | None = None,
    ) -> None:
        """`clock` says when (stalls, pauses); `clock_speed` is its seconds per real second,
        for waits (a test's clock may run a thousand times faster)."""
        self._store = store
        self._node = node
        self.concurrency = concurrency
        self.stall = stall
        self.dial_private = dial_private
        self._clock = clock
        self._clock_speed = clock_speed
        self._on_finished = on_finished
        self._wake = asyncio.Event()
        self._queue: dict[str, None] = {}  # keys to pin, in order (a set that keeps it)
        self._look_unpins = True  # a request went away, or a pin finished: unpins may be due
        self._rescan_at = 0.0  # when to read every pending key from the state again
        self._unpins_at = 0.0  # when an unpin that failed may be tried again
        self._pins: dict[str, asyncio.Task[None]] = {}
        self._unpins: dict[str, asyncio.Task[None]] = {}
        self._progress: dict[str, PinProgress] = {}
        self._retry: dict[str, tuple[float, float]] = {}  # key -> (when, pause)
        self.node_trouble: str | None = None
        """Why the node could not be reached at the latest try (None: it could)."""

    # --- what the HTTP side tells it ---------------------------------------------------------

    def added(self, key: str) -> None:
        """A request for `key` was stored: pin it when a slot is free."""
        self._queue[key] = None
        self._wake.set()

    def removed(self) -> None:
        """A request was deleted or replaced: a CID may have lost its last request."""
        self._look_unpins = True
        self._wake.set()

    def wake(self) -> None:
        """Look at everything again now (after a reload, or in tests)."""
        self._rescan_at = 0.0
        self._look_unpins = True
        self._wake.set()

    def details(self, key: str) -> str | None:
        """What a `pinning` request of `key` says about its progress, if anything came."""
        progress = self._progress.get(key)
        if progress is None or not progress.blocks:
            return None
        return f"fetched {progress.blocks} blocks ({human_bytes(progress.bytes)})"

    @property
    def busy(self) -> int:
        return len(self._pins)

    # --- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Until cancelled: start the work there is, then wait for more."""
        try:
            while True:
                self._wake.clear()
                pause = await self._start_work()
                with contextlib.suppress(TimeoutError):
                    # asyncio.timeout: wait_for can lose a cancellation on Python 3.11
                    async with asyncio.timeout(pause / self._clock_speed):
                        await self._wake.wait()
        finally:
            tasks = [*self._pins.values(), *self._unpins.values()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _start_work(self) -> float:
        """Start pins and unpins that may run; seconds until a paused CID may be tried.
        What to pin comes from `added()`; every key still pending is read from the state
        at the start and then once a minute, so nothing waits for ever on a missed call."""
        now = self._clock()
        if now >= self._rescan_at:
            self._rescan_at = now + RESCAN
            for key in await self._store.pending_keys():
                self._queue.setdefault(key, None)
            self._look_unpins = True
        if self._look_unpins or now >= self._unpins_at:
            self._look_unpins = False
            self._unpins_at = now + await self._start_unpins(now)
        pause = min(RESCAN, self._unpins_at - now)
        for key in list(self._queue):
            if len(self._pins) >= self.concurrency:
                break
            if key in self._pins or key in self._unpins:
                continue
            when, _ = self._retry.get(key, (0.0, 0.0))
            if when > now:
                pause = min(pause, when - now)
                continue
            del self._queue[key]
            self._spawn(self._pins, key, self._pin(key))
        return max(pause, 0.05)

    async def _start_unpins(self, now: float) -> float:
        """Stop fetching CIDs no request wants, start the unpins that are due; seconds until
        one that waits out a failure may be tried again."""
        for key, running in list(self._pins.items()):
            if not await self._store.names(key):  # its last request is gone: stop fetching
                running.cancel()
                await asyncio.wait({running})  # its end marks the pin `unpin` if it was noted
        pause = RESCAN
        for unpin in await self._store.unpins():
            if unpin.key in self._unpins or unpin.key in self._pins:
                continue
            when, _ = self._retry.get(unpin.key, (0.0, 0.0))
            if when > now:
                pause = min(pause, when - now)
                continue
            if not await self._store.unpin_ready(unpin):
                continue
            self._queue.pop(unpin.key, None)
            self._spawn(self._unpins, unpin.key, self._unpin(unpin))
        return pause

    def _back_off(self, key: str) -> float:
        """Try `key` again later: after 2 s, then twice as long each time, up to a minute."""
        _, last = self._retry.get(key, (0.0, 0.0))
        wait = min(RETRY_CAP, last * 2 if last else RETRY_FIRST)
        self._retry[key] = (self._clock() + wait, wait)
        return wait

    def _spawn(self, tasks: dict[str, asyncio.Task[None]], key: str, work: object) -> None:
        task: asyncio.Task[None] = asyncio.create_task(work)  # type: ignore[arg-type]
        tasks[key] = task

        def done(finished: asyncio.Task[None]) -> None:
            if tasks.get(key) is finished:
                del tasks[key]
            # a replace's old CID may wait for this pin; an unpin that failed is tried again
            self._look_unpins = True
            self._wake.set()  # a slot is free
            if not finished.cancelled() and (error := finished.exception()) is not None:
                wait = self._back_off(key)  # whatever it was, not again at once
                if tasks is self._pins:
                    self._queue[key] = None
                log.error("pin work failed unexpectedly", key=key, error=repr(error), retry_in=wait)

        task.add_done_callback(done)

    async def verify(self) -> int:
        """Every CID a request holds as `pinned` that is no longer pinned on the node (someone
        ran `ipfs pin rm`, a repo was put back from an old copy) goes back to `queued` and is
        pinned again: how many. Reads the node's recursive pins as a stream."""
        held: set[str] = set()
        async for pin in self._node.iter_pins("recursive"):
            try:
                held.add(content_key(pin.cid))
            except BadRequest:
                continue  # a CID this side cannot read is no CID a request names
        lost = 0
        for key, cid in await self._store.pinned_keys():
            if key in held or key in self._pins:
                continue
            moved = await self._store.set_status(
                key,
                "queued",
                "was no longer pinned on the node: pinning it again",
                only=("pinned",),
            )
            if moved:
                lost += 1
                await self._store.forget_hold(key)
                log.warning("a pinned CID was gone from the node; pinning it again", cid=cid)
                self._queue[key] = None
        if lost:
            self._wake.set()
        return lost

    # --- one CID -----------------------------------------------------------------------------

    async def _pin(self, key: str) -> None:
        try:
            await self._pin_for_requests(key)
        finally:
            # A request deleted while this ran may have left the pin noted after its delete
            # looked for it: whatever this did, it is undone when no request wants it.
            await self._store.release_if_orphan(key)

    async def _pin_for_requests(self, key: str) -> None:
        waiting = await self._store.waiting(key)
        if not waiting:
            return
        started = self._clock()
        cid = waiting[0].pin.cid
        await self._store.set_status(key, "pinning", None)
        dialled = (0, 0)
        try:
            held = await self._store.held(key)
            theirs = None
            if held != "ours":  # new, or someone else's: is it (still) pinned in Kubo?
                theirs = await self._node.pin_of(cid)
                held = "found" if theirs is not None else "ours"
                await self._store.hold(key, cid, held)
            # A recursive pin of theirs has every block: no `pin/add`, which would rename it
            # (Kubo gives an existing pin the new name, or none). A direct one holds one
            # block: Kubo makes it recursive, under its own name, and it stays theirs.
            if theirs is None or theirs.type == "direct":
                dialled = await self._dial_origins(waiting)
                name = next((r.pin.name for r in waiting if r.pin.name), "")
                await self._node.pin_add(
                    cid,
                    name=theirs.name if theirs is not None else name,
                    stall=self.stall,
                    clock=self._clock,
                    on_progress=lambda progress: self._progress.__setitem__(key, progress),
                )
        except NodeUnavailable as exc:
            self.node_trouble = str(exc)
            wait = self._back_off(key)
            self._queue[key] = None
            await self._store.set_status(key, "queued", f"waiting for the node: {exc}")
            log.warning("node unreachable; the pin waits", cid=cid, retry_in=wait)
            return
        except PinStalled as exc:
            details = f"{exc}{dialled_note(dialled)}"
            await self._finish(key, "failed", details, started)
            return
        except NodeError as exc:
            await self._finish(key, "failed", str(exc), started)
            return
        except asyncio.CancelledError:
            self._report(key, "cancelled", started, 0)
            raise
        finally:
            self._progress.pop(key, None)
        self.node_trouble = None
        await self._finish(key, "pinned", None, started)

    async def _finish(self, key: str, status: str, details: str | None, started: float) -> None:
        moved = await self._store.set_status(key, status, details)
        self._retry.pop(key, None)
        self._report(key, status, started, moved)
        if status == "failed":
            log.info("pin failed", key=key, requests=moved, why=details)
        else:
            log.debug("pinned", key=key, requests=moved, seconds=round(self._clock() - started, 3))

    def _report(self, key: str, outcome: str, started: float, requests: int) -> None:
        if self._on_finished is not None:
            self._on_finished(Finished(key, outcome, self._clock() - started, requests))

    async def _dial_origins(self, waiting: list[Request]) -> tuple[int, int]:
        """Dial the requests' origins that the address policy allows: (tried, connected)."""
        addresses: list[str] = []
        for request in waiting:
            for origin in request.pin.origins:
                if self.may_dial(origin) and origin not in addresses:
                    addresses.append(origin)
        if not addresses:
            return 0, 0
        results = await self._node.swarm_connect(addresses[:20])
        return len(results), sum(1 for r in results if r.ok)

    def may_dial(self, address: str) -> bool:
        """An origin this service dials: a multiaddr ending in /p2p/<id>, public unless the
        config says `serve.origins: all`."""
        parts = address.rstrip("/").split("/")
        if len(parts) < 4 or parts[-2] != "p2p":
            return False
        public = is_public(address)
        return public is True or (public is False and self.dial_private)

    async def _unpin(self, unpin: Unpin) -> None:
        try:
            removed = await self._node.pin_rm(unpin.cid)
        except NodeUnavailable as exc:
            self.node_trouble = str(exc)
            self._back_off(unpin.key)
            return
        except NodeError as exc:
            wait = self._back_off(unpin.key)
            log.warning("could not unpin", cid=unpin.cid, error=str(exc), retry_in=wait)
            return
        await self._store.unpinned(unpin.key)
        self._retry.pop(unpin.key, None)
        log.info("unpinned" if removed else "was not pinned any more", cid=unpin.cid)


def dialled_note(dialled: tuple[int, int]) -> str:
    tried, connected = dialled
    if not tried:
        return "; no origin was given that this service may dial"
    return f"; {connected} of {tried} origins connected"
