"""The daemon's lifecycle: open the state, run a cycle every `interval` (and once at start),
check pending pins every `status_interval` in between, and stop cleanly on SIGTERM/SIGINT.

On the first signal no new request is started, requests under way finish (or stay recorded
as intents), the state is closed, and the process exits 0. A second signal cancels at once;
the state is still consistent, because every create was preceded by a committed intent.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time

import structlog

from pinsyncd.backoff import RetryPolicy
from pinsyncd.config import Config
from pinsyncd.durations import format_duration
from pinsyncd.engine import CycleReport, SyncEngine
from pinsyncd.state import StateStore

log = structlog.get_logger("pinsyncd")


class Daemon:
    """Owns one run of pinsyncd. The constructor does no I/O; `run()` returns an exit code."""

    def __init__(self, config: Config, *, retry: RetryPolicy | None = None) -> None:
        self.config = config
        self.retry = retry
        self._stop = asyncio.Event()
        self._signals = 0
        self.cycles = 0

    def stop(self) -> None:
        self._stop.set()

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
            self._stop.set()
        elif main is not None:
            log.warning("second signal: stopping now")
            main.cancel()

    async def _run(self) -> int:
        config = self.config
        store = await StateStore.open(config.state_path)
        engine = SyncEngine(config, store, retry=self.retry, stopping=self._stop.is_set)
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
        interval = self.config.sync.interval
        status_interval = self.config.sync.status_interval
        next_cycle = time.monotonic()
        next_status = float("inf")
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_cycle:
                report = await engine.cycle()
                self.cycles += 1
                log_cycle(report)
                next_cycle = now + interval
                next_status = now + status_interval if report.pending else float("inf")
            elif now >= next_status:
                report = await engine.cycle(send=False, list_node=False)
                log_cycle(report, status_round=True)
                next_status = now + status_interval if report.pending else float("inf")
            wake = min(next_cycle, next_status)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, wake - time.monotonic())):
                    await self._stop.wait()


def log_cycle(report: CycleReport, *, status_round: bool = False) -> None:
    """One summary line per cycle: INFO when something happened, DEBUG when idle."""
    services = {
        name: {
            key: value
            for key, value in {
                "added": r.added,
                "adopted": r.adopted,
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
        for name, r in report.services.items()
    }
    busy = (
        any(
            r.added
            or r.adopted
            or r.replaced
            or r.became_pinned
            or r.became_failed
            or r.vanished
            or r.errors
            or r.paused
            or r.error
            for r in report.services.values()
        )
        or report.local_added
        or report.local_removed
    )
    emit = log.info if busy else log.debug
    emit(
        "status round" if status_round else "cycle done",
        local_pins=report.local_pins,
        local_added=report.local_added,
        local_removed=report.local_removed,
        node="online" if report.node_online else ("offline" if report.node_error else "-"),
        seconds=round(report.duration, 2),
        services=services,
    )
