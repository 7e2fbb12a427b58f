"""The daemon's lifecycle: open the state, run a cycle every `interval` (and once at start),
check pending pins every `status_interval` in between, and stop cleanly on SIGTERM/SIGINT.

On the first signal no new request is started, requests under way finish (or stay recorded
as intents), the state is closed, and the process exits 0. A second signal cancels at once;
the state is still consistent, because every create was preceded by a committed intent.
"""

from __future__ import annotations

import asyncio
import signal
import time

import structlog

from pinsyncd.backoff import RetryPolicy
from pinsyncd.config import Config
from pinsyncd.durations import format_duration
from pinsyncd.engine import CycleReport, SyncEngine
from pinsyncd.executor import ServiceReport
from pinsyncd.state import StateStore

log = structlog.get_logger("pinsyncd")


class Daemon:
    """Owns one run of pinsyncd. The constructor does no I/O; `run()` returns an exit code."""

    def __init__(self, config: Config, *, retry: RetryPolicy | None = None) -> None:
        self.config = config
        self.retry = retry
        self._stop = asyncio.Event()
        self._signals = 0
        self._engine: SyncEngine | None = None
        self.cycles = 0

    def stop(self) -> None:
        """Stop as on SIGTERM: send nothing new, let requests under way finish."""
        self._stop.set()
        if self._engine is not None:
            self._engine.interrupt()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        main = asyncio.current_task()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum, main)
        try:
            return await self._run()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)

    def _on_signal(self, signum: int, main: asyncio.Task[object] | None) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("stopping: finishing requests under way", signal=signal.Signals(signum).name)
            self.stop()
        elif main is not None:
            log.warning("second signal: stopping now")
            main.cancel()

    async def _run(self) -> int:
        config = self.config
        store = await StateStore.open(config.state_path)
        engine = SyncEngine(config, store, retry=self.retry, stopping=self._stop.is_set)
        self._engine = engine
        log.info(
            "pinsyncd started",
            node=config.node.api,
            services=[s.name for s in config.services],
            interval=format_duration(config.sync.interval),
            state=str(config.state_path),
        )
        try:
            await self._loop(engine)
        finally:
            await engine.close()
            await store.close()
            log.info("pinsyncd stopped", cycles=self.cycles)
        return 0

    async def _loop(self, engine: SyncEngine) -> None:
        """The node is listed every `interval`; each service runs on its own schedule (so a
        slow, failing or rate-limited service never holds up another): it syncs when the
        pinset changed, every `status_interval` while it has pending pins, when its backoff
        ends, and at least every `interval`."""
        wake = {name: asyncio.Event() for name in engine.executors}
        report = await engine.refresh_node()
        self.cycles += 1
        log_node(report)
        async with asyncio.TaskGroup() as group:
            group.create_task(self._node_loop(engine, wake))
            for name in engine.executors:
                group.create_task(self._service_loop(engine, name, wake[name]))

    async def _node_loop(self, engine: SyncEngine, wake: dict[str, asyncio.Event]) -> None:
        while not await self._sleep(self.config.sync.interval):
            report = await engine.refresh_node()
            self.cycles += 1
            log_node(report)
            if report.local_added or report.local_removed or report.node_came_back:
                for event in wake.values():
                    event.set()

    async def _service_loop(self, engine: SyncEngine, name: str, wake: asyncio.Event) -> None:
        sync = self.config.sync
        while not self._stop.is_set():
            wake.clear()
            report = await engine.sync_service(name)
            log_service(report)
            delay = sync.status_interval if report.pending else sync.interval
            state = await engine.store.service_state(name)
            if state.paused_until > time.time():
                delay = min(delay, max(0.05, state.paused_until - time.time()))
            if await self._sleep(delay, wake):
                return

    async def _sleep(self, seconds: float, wake: asyncio.Event | None = None) -> bool:
        """Sleep up to `seconds`, less if woken; True when the daemon is stopping."""
        waiters = [asyncio.ensure_future(self._stop.wait())]
        if wake is not None:
            waiters.append(asyncio.ensure_future(wake.wait()))
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        return self._stop.is_set()


def log_node(report: CycleReport) -> None:
    """One line per node listing: INFO when the pinset changed or the node is offline."""
    busy = report.local_added or report.local_removed or not report.node_online
    (log.info if busy else log.debug)(
        "node listed" if report.node_online else "node unreachable",
        local_pins=report.local_pins,
        local_added=report.local_added,
        local_removed=report.local_removed,
        seconds=round(report.duration, 2),
    )


def log_service(report: ServiceReport) -> None:
    """One line per service cycle: INFO when something happened, DEBUG when idle."""
    fields = _service_fields(report)
    quiet = set(fields) <= {"pending", "requests"}
    (log.debug if quiet else log.info)("service cycle", service=report.service, **fields)


def _service_fields(r: ServiceReport) -> dict[str, object]:
    return {
        key: value
        for key, value in {
            "added": r.added,
            "adopted": r.adopted,
            "resolved": r.resolved,
            "replaced": r.replaced,
            "pinned": r.became_pinned,
            "failed": r.became_failed,
            "vanished": r.vanished,
            "errors": r.errors,
            "pending": r.pending,
            "requests": sum(r.requests.values()),
            "paused": r.paused,
            "backoff": r.backoff,
            "error": r.error,
        }.items()
        if value
    }


def log_cycle(report: CycleReport, *, status_round: bool = False) -> None:
    """One summary line for a whole cycle (sync --once): INFO when something happened."""
    services = {name: _service_fields(r) for name, r in report.services.items()}
    busy = (
        report.local_added
        or report.local_removed
        or any(set(fields) - {"pending", "requests"} for fields in services.values())
    )
    (log.info if busy else log.debug)(
        "status round" if status_round else "cycle done",
        local_pins=report.local_pins,
        local_added=report.local_added,
        local_removed=report.local_removed,
        node="online" if report.node_online else ("offline" if report.node_error else "-"),
        seconds=round(report.duration, 2),
        services=services,
    )
