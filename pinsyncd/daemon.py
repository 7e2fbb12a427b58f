"""The daemon's lifecycle: open the state, list the node every `interval`, run each service
on its own schedule, reload the config when it changes, and stop cleanly.

- SIGTERM/SIGINT: no new request is started, requests waiting for their turn are dropped
  (never sent), a listing of the node under way is abandoned, requests under way get
  `STOP_GRACE` to finish, the state is closed, exit 0. What is still under way after the
  grace (a hung request) is cancelled, as a second signal cancels at once; the state is
  still consistent, because every create was preceded by a committed intent, and the next
  start looks those intents up as after a crash.
- SIGHUP, or a change to the config file (watchfiles): the file is read again. A valid new
  config replaces the running one without a restart: the loops stop as above, a new engine
  starts on the same state (a service removed keeps its state, one added starts syncing).
  An invalid one is rejected with one log line per problem, and the old config keeps running.
- One daemon per state file: it holds the state file's lock (`pinsyncd.lock`) while it runs.
  A second `run` refuses at once (exit 75); a one-shot command that holds the lock is waited
  for. Beside it, `sync --once`, `adopt` and `retry` ask it over its control socket
  (`pinsyncd.control`) to do the work now, and show its progress.
- Under systemd (Type=notify): READY=1 once config and state are loaded, STATUS= with a
  one-line summary, WATCHDOG=1 from the event loop when WatchdogSec= is set, RELOADING=1 and
  STOPPING=1.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import structlog

from pinsyncd import clock, hangup, outcome, status_page
from pinsyncd.alerts.runner import AlertRunner
from pinsyncd.backoff import RetryPolicy
from pinsyncd.config import Config, ConfigError, load_config
from pinsyncd.control import ControlServer, Emit, socket_path
from pinsyncd.durations import format_duration
from pinsyncd.exits import verdict
from pinsyncd.follow import FollowUp
from pinsyncd.health_check import default_max_age
from pinsyncd.http_api import HttpApi
from pinsyncd.lock import EX_LOCKED, Holder, StateLock
from pinsyncd.logs import register_secrets
from pinsyncd.metrics import Metrics, outcome_of
from pinsyncd.notify import Notifier
from pinsyncd.psa import PinningServiceError, RateLimited
from pinsyncd.state_guard import StateGuard
from pinsyncd.store import StateDamaged, StateStore, set_aside_damaged
from pinsyncd.store.readonly import read_status, read_trouble
from pinsyncd.sync.context import ServiceReport
from pinsyncd.sync.engine import CycleReport, SyncEngine

log = structlog.get_logger("pinsyncd")


STOP_GRACE = 10.0
"""Seconds that requests under way get to finish after SIGTERM (systemd waits 90 s)."""


class Daemon:
    """Owns one run of pinsyncd. The constructor does no I/O; `run()` returns an exit code."""

    def __init__(
        self,
        config: Config,
        *,
        retry: RetryPolicy | None = None,
        notifier: Notifier | None = None,
        watch_config: bool = True,
    ) -> None:
        self.config = config
        self.retry = retry
        self.notifier = notifier or Notifier()
        self.watch_config = watch_config
        self._stop = asyncio.Event()
        self._halt = asyncio.Event()  # ends the loops of the current config generation
        self._reload_requested = asyncio.Event()
        self._signals = 0
        self._grace: asyncio.TimerHandle | None = None
        self._out_of_grace = False
        self._engine: SyncEngine | None = None
        self._services: dict[str, ServiceReport] = {}
        self._node: CycleReport | None = None
        self.cycles = 0
        self.reloads = 0
        self.metrics: Metrics | None = None
        self._last_listing = time.monotonic()
        self._lock = StateLock(config.state_path)
        self._store: StateStore | None = None
        self._guard = StateGuard(config.state_path)
        # What the control socket's commands wait on: listings and cycles done so far.
        self._node_wake = asyncio.Event()
        self._wake: dict[str, asyncio.Event] = {}
        self._listings = 0
        self._started: Counter[str] = Counter()  # service -> cycles started
        self._finished: Counter[str] = Counter()  # service -> the last finished cycle's number
        self._progress = asyncio.Event()  # set (and replaced) after every listing and cycle

    def stop(self) -> None:
        """Stop as on SIGTERM: send nothing new, let requests under way finish."""
        self._stop.set()
        self._halt_generation()

    def reload(self) -> None:
        """Read the config file again (as on SIGHUP)."""
        self._reload_requested.set()

    def _halt_generation(self) -> None:
        self._halt.set()
        if self._engine is not None:
            self._engine.interrupt()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        main = asyncio.current_task()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum, main)
        loop.add_signal_handler(signal.SIGHUP, self._on_hangup)
        if hangup.early():
            self._on_hangup()  # it came while starting: the file may have changed since
        try:
            return await self._run()
        except asyncio.CancelledError:
            if not self._out_of_grace:
                raise
            return 0  # a stop that was asked for; intents left are looked up at the next start
        finally:
            if self._grace is not None:
                self._grace.cancel()
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)

    def _on_signal(self, signum: int, main: asyncio.Task[object] | None) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("stopping: finishing requests under way", signal=signal.Signals(signum).name)
            self.notifier.stopping()
            self.stop()
            if main is not None:
                loop = asyncio.get_running_loop()
                self._grace = loop.call_later(STOP_GRACE, self._end_grace, main)
        elif main is not None:
            log.warning("second signal: stopping now")
            main.cancel()

    def _end_grace(self, main: asyncio.Task[object]) -> None:
        log.warning(
            f"requests still under way {STOP_GRACE:g}s after the stop signal were abandoned; "
            "the next start looks up what they did"
        )
        self._out_of_grace = True
        main.cancel()

    def _on_hangup(self) -> None:
        log.info("SIGHUP: reading the config again", config=str(self.config.source))
        self.reload()

    async def _run(self) -> int:
        refused = await self._take_lock()
        if refused is not None:
            return refused
        try:
            return await self._run_locked()
        finally:
            self._lock.release()

    async def _take_lock(self) -> int | None:
        """Become the state file's one writer: None once the lock is held; an exit code when
        another daemon holds it (or the daemon was stopped while waiting for a one-shot
        command to finish with it)."""
        path = self.config.state_path
        waited_for: Holder | None = None
        while (holder := self._lock.try_acquire("run")) is not None:
            if holder.is_daemon:
                log.error(
                    f"{holder.describe()} already runs on the state file {path}; "
                    "not starting a second one"
                )
                return EX_LOCKED
            if holder != waited_for:
                waited_for = holder
                log.info(f"waiting for {holder.describe()} to finish with the state file {path}")
            self.notifier.send("EXTEND_TIMEOUT_USEC=5000000")  # systemd: still starting
            if await self._sleep(0.25, generation=False):
                return 0
        return None

    async def _run_locked(self) -> int:
        """Run on the state file; if it turns out damaged while running, set it aside and
        run again on a fresh one (services are then listed again and adopted from)."""
        while True:
            damage: list[StateDamaged] = []
            try:
                return await self._run_on_state()
            except* StateDamaged as group:
                damage.append(_first_leaf(group))
            if self._stop.is_set() and self._signals:
                return 0
            set_aside_damaged(self.config.state_path, damage[0])
            self._stop, self._halt = asyncio.Event(), asyncio.Event()

    async def _run_on_state(self) -> int:
        store = await StateStore.open(self.config.state_path, recover=True)
        self._store = store
        api = await self._start_http()
        control = ControlServer(
            socket_path(self.config.state_path),
            {
                "sync": self._sync_now,
                "adopt": self._adopt_now,
                "retry": self._retry_now,
                "health": self._health_now,
            },
        )
        await control.start()
        log.info(
            "pinsyncd started",
            node=self.config.node.api,
            services=[s.name for s in self.config.services],
            interval=format_duration(self.config.sync.interval),
            state=str(self.config.state_path),
        )
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._reloader())
                if self.watch_config:
                    group.create_task(self._watch_config_file())
                if self.notifier.watchdog_interval:
                    group.create_task(self._watchdog(self.notifier.watchdog_interval))
                group.create_task(self._generations(store))
        finally:
            await control.stop()
            if api is not None:
                await api.stop()
            await store.close()
            log.info("pinsyncd stopped", cycles=self.cycles, reloads=self.reloads)
        return 0

    async def _start_http(self) -> HttpApi | None:
        listen = self.config.http.listen
        if listen is None:
            return None
        self.metrics = Metrics(
            self.config.state_path,
            lambda: [s.name for s in self.config.services],
            max_attempts=self.config.retry.max_attempts,
            replicas=self.config.replicas,
        )
        api = HttpApi(listen, self.metrics, self._health, self._status_document, self._status_page)
        await api.start()
        return api

    def _status_document(self) -> dict[str, Any]:
        """The `/status` document: the state's, with the daemon's own health."""
        config = self.config
        return {
            **read_status(
                config.state_path,
                [s.name for s in config.services],
                max_attempts=config.retry.max_attempts,
                replicas=config.replicas,
                stuck_after=config.sync.stuck_after,
            ),
            "daemon": self._health_line(),
        }

    def _status_page(self) -> str:
        """The page at `/`: the `/status` document, and each service's failed and stuck pins."""
        config, now = self.config, time.time()
        trouble = read_trouble(
            config.state_path,
            [s.name for s in config.services],
            max_attempts=config.retry.max_attempts,
            stuck_after=config.sync.stuck_after,
            limit=status_page.SHOWN,
        )
        return status_page.render_page(
            self._status_document(),
            trouble,
            now=now,
            refresh=status_page.refresh_seconds(config.sync.interval),
            max_age=default_max_age(config.sync.interval),
        )

    def _health(self) -> tuple[bool, str]:
        """Healthy while the node loop ran recently and the state file is writable."""
        if self._stop.is_set():
            return False, "stopping"
        limit = 2 * self.config.sync.interval + self.config.node.timeout + 30
        age = time.monotonic() - self._last_listing
        if age > limit:
            return False, f"the main loop has not run for {format_duration(age)}"
        if self._guard.problem is not None:
            return False, f"the state file cannot be written: {self._guard.problem}"
        path = self.config.state_path
        if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
            return False, f"the state file {path} is not writable"
        return True, "ok"

    def _health_line(self) -> dict[str, Any]:
        healthy, reason = self._health()
        return {"running": True, "healthy": healthy, "reason": reason}

    async def _health_now(self, request: dict[str, Any], emit: Emit) -> tuple[int, str | None]:
        """For `status` beside the daemon: what only the daemon knows (the state file cannot
        be written, the main loop is stuck)."""
        await emit({"daemon": self._health_line()})
        return 0, None

    def _attach_metrics(self, engine: SyncEngine) -> None:
        metrics = self.metrics
        if metrics is None:
            return
        metrics.pins.max_attempts = self.config.retry.max_attempts
        metrics.pins.replicas = self.config.replicas
        for name, client in engine.clients.items():

            def on_request(operation: str, error: BaseException | None, name: str = name) -> None:
                metrics.record_request(name, operation, outcome_of(error))
                if isinstance(error, RateLimited) and error.status == 429:
                    metrics.record_rate_limited(name)

            client.on_request = on_request
            client.on_retry = lambda _operation, name=name: metrics.record_retry(name)

    async def _generations(self, store: StateStore) -> None:
        """Run the current config until stopped; after a valid reload, run the new one."""
        first = True
        try:
            while not self._stop.is_set():
                self._halt = asyncio.Event()
                engine = SyncEngine(
                    self.config,
                    store,
                    retry=self.retry,
                    stopping=self._halt.is_set,
                    halt=self._halt,
                )
                self._engine = engine
                try:
                    self._attach_metrics(engine)
                    if first:
                        self.notifier.ready(self._summary())
                        first = False
                    else:
                        self.notifier.send("READY=1", f"STATUS={self._summary()}")
                    await self._loop(engine)
                finally:
                    await engine.close()
                    self._engine = None
        finally:
            self._stop.set()  # ends the reloader, the watcher and the watchdog

    async def _reloader(self) -> None:
        while not self._stop.is_set():
            if await self._sleep(3600, self._reload_requested, generation=False):
                return
            if self._reload_requested.is_set():
                self._reload_requested.clear()
                self._try_reload()

    def _try_reload(self) -> None:
        path = self.config.source
        try:
            config = load_config(path)  # tokens included: the daemon sends requests
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("config rejected", problem=problem.render(exc.filename))
            log.error("the new config has errors; the running config stays", config=str(path))
            return
        except Exception as exc:  # whatever the file holds, the daemon goes on
            log.error(
                "the new config could not be read; the running config stays",
                config=str(path),
                error=f"{type(exc).__name__}: {exc}",
            )
            return
        if config == self.config:
            log.debug("config unchanged", config=str(path))
            return
        for warning in config.warnings:
            log.warning("config warning", warning=warning)
        if config.http != self.config.http:
            log.warning("http.listen changes take effect at the next restart")
        if config.state_path != self.config.state_path:
            log.error(
                "state.path cannot change without a restart; the running config stays",
                running=str(self.config.state_path),
                new=str(config.state_path),
            )
            return
        self.notifier.reloading()
        register_secrets(s.token for s in config.services)
        old = {s.name for s in self.config.services}
        new = {s.name for s in config.services}
        log.info(
            "config reloaded",
            added=sorted(new - old),
            removed=sorted(old - new),
            services=sorted(new),
        )
        self.config = config
        self.reloads += 1
        self._halt_generation()

    async def _watch_config_file(self) -> None:
        from watchfiles import awatch

        path = self.config.source.absolute()
        watch = path.parent
        name = path.name
        try:
            async for _changes in awatch(
                watch,
                watch_filter=lambda _change, changed: changed.rsplit("/", 1)[-1] == name,
                stop_event=self._stop,
                debounce=200,
                step=50,
                recursive=False,
            ):
                log.info("config file changed", config=str(path))
                self.reload()
        except (OSError, RuntimeError) as exc:  # e.g. no inotify watches left
            log.warning("cannot watch the config file; use SIGHUP to reload", error=str(exc))

    async def _watchdog(self, interval: float) -> None:
        while not await self._sleep(interval, generation=False):
            self.notifier.watchdog()

    async def _loop(self, engine: SyncEngine) -> None:
        """The node is listed every `interval`; each service runs on its own schedule (so a
        slow, failing or rate-limited service never holds up another): it syncs when the
        pinset changed, while it has pending pins about a second after it sent something and
        then twice as long each round up to `status_interval` (`follow`), when its backoff
        ends, and at least every `interval`."""
        wake = {name: asyncio.Event() for name in engine.executors}
        self._wake = wake
        self._services = {}
        while not self._halt.is_set():
            with self._guard.watching(writes=True):
                self._record_node(await engine.refresh_node())
                break
            if await self._sleep(self.config.sync.status_interval, self._halt):
                return
        async with asyncio.TaskGroup() as group:
            group.create_task(self._node_loop(engine, wake))
            for name in engine.executors:
                group.create_task(self._service_loop(engine, name, wake[name]))
            alerts = AlertRunner(self.config, engine.store)
            if alerts.enabled:
                group.create_task(self._alerts_loop(alerts))

    def _record_node(self, report: CycleReport) -> None:
        self._listings += 1
        self._progressed()
        self.cycles += 1
        self._node = report
        self._last_listing = time.monotonic()
        if self.metrics is not None:
            self.metrics.set_node(report.node_online, report.local_pins)
            self.metrics.set_last_cycle(report.started)
        log_node(report)
        self.notifier.status(self._summary())

    async def _node_loop(self, engine: SyncEngine, wake: dict[str, asyncio.Event]) -> None:
        wait = self.config.sync.interval
        while not await self._sleep(wait, self._halt, self._node_wake):
            self._node_wake.clear()
            report = None
            with self._guard.watching(writes=True):
                report = await engine.refresh_node()
            if report is None:
                continue
            self._record_node(report)
            changed = report.local_added or report.local_removed or report.local_renamed
            if changed or report.node_came_back:
                for event in wake.values():
                    event.set()
            wait = node_wait(self.config.sync.interval, engine.look_seconds)

    async def _alerts_loop(self, alerts: AlertRunner) -> None:
        """Every `sync.interval`, once each service has had a round: alerts for what needs a
        person, and the heartbeat (good when the node answered and no service errs or is
        paused)."""
        while not await self._sleep(self.config.sync.interval, self._halt):
            if len(self._services) < len(self.config.services):
                continue  # a service has not had its first round yet
            node = self._node
            healthy = node is not None and node.node_online
            healthy = healthy and not any(r.error or r.paused for r in self._services.values())
            with self._guard.watching():
                await alerts.after_look(healthy=healthy, summary=self._summary())

    async def _service_loop(self, engine: SyncEngine, name: str, wake: asyncio.Event) -> None:
        sync = self.config.sync
        follow = FollowUp(ceiling=sync.status_interval)
        while not self._halt.is_set():
            wake.clear()
            started = time.monotonic()
            self._started[name] += 1
            number = self._started[name]
            report = None
            with self._guard.watching():
                report = await engine.sync_service(name)
            state_failed = report is None
            if report is None:
                report = ServiceReport(name, error=f"state file: {self._guard.problem}")
            if self.metrics is not None:
                self.metrics.observe_cycle(name, time.monotonic() - started)
            self._services[name] = report
            self._finished[name] = number
            self._progressed()
            log_service(report)
            self.notifier.status(self._summary())
            soon = follow.after(
                sent=report.added + report.replaced,
                pending=report.pending,
                intents_due_in=report.intents_due_in,
            )
            delay = sync.status_interval if state_failed else soon or sync.interval
            with self._guard.watching():
                state = await engine.store.service_state(name)
                if state.paused_until > clock.now():
                    delay = min(delay, max(0.05, state.paused_until - clock.now()))
            if await self._sleep(delay, wake, self._halt):
                return

    async def _sleep(self, seconds: float, *events: asyncio.Event, generation: bool = True) -> bool:
        """Sleep up to `seconds`, less if an event is set. True when the daemon stops, or
        (for the loops of one config `generation`) when a reloaded config takes over."""
        waiters = [asyncio.ensure_future(e.wait()) for e in (self._stop, *events)]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        return self._stop.is_set() or (generation and self._halt.is_set())

    # --- the control socket: commands typed beside the daemon ---------------------------

    def _progressed(self) -> None:
        event, self._progress = self._progress, asyncio.Event()
        event.set()

    async def _until(self, done: Callable[[], bool], within: float | None = None) -> bool:
        """Wait until `done()` (True), `within` seconds pass or the daemon stops (False)."""
        deadline = time.monotonic() + within if within is not None else float("inf")
        while not done():
            left = deadline - time.monotonic()
            if left <= 0 or await self._sleep(min(left, 3600), self._progress, generation=False):
                return False
        return True

    async def _list_now(self, emit: Emit) -> CycleReport | None:
        """A node listing now (None: the daemon stops first)."""
        listings = self._listings
        self._node_wake.set()
        if not await self._until(lambda: self._listings > listings):
            return None
        node = self._node
        assert node is not None
        await emit(
            {
                "log": "node listed" if node.node_online else "node unreachable",
                "local_pins": node.local_pins,
                "local_added": node.local_added,
                "local_removed": node.local_removed,
            }
        )
        return node

    async def _cycle_now(self, names: list[str], emit: Emit) -> dict[str, ServiceReport] | None:
        """A cycle of each of `names` that starts from now; their reports (None: stopping)."""
        targets = {name: self._started[name] + 1 for name in names if name in self._wake}
        for name in targets:
            self._wake[name].set()
        if not await self._until(
            lambda: all(self._finished[n] >= t or n not in self._wake for n, t in targets.items())
        ):
            return None
        reports = {n: self._services[n] for n in targets if n in self._services}
        for report in reports.values():
            await emit(_cycle_line(report))
        return reports

    async def _sync_now(self, request: dict[str, Any], emit: Emit) -> tuple[int, str | None]:
        """`sync --once [--wait] [--timeout] [--now]` beside the daemon: a listing and a cycle of
        every service now, then (with wait) their status rounds until all is settled."""
        stopping = (1, "the daemon is stopping; nothing more was done")
        wait = bool(request.get("wait"))
        timeout = request.get("timeout")
        give_up = float(timeout) if isinstance(timeout, int | float) and timeout > 0 else None
        deadline = time.monotonic() + give_up if give_up else float("inf")
        if request.get("now"):  # `--now`: failed pins and paused services are tried again
            assert self._store is not None
            await self._store.clear_backoff(list(self._wake), None)
        node = await self._list_now(emit)
        if node is None:
            return stopping
        reports = await self._cycle_now(list(self._wake), emit)
        if reports is None:
            return stopping
        assert self._store is not None
        remaining = await outcome.unfinished(self._store, reports, self.config.retry.max_attempts)
        while wait and remaining and time.monotonic() < deadline:
            seen = {name: self._finished[name] for name in remaining}

            def moved(seen: dict[str, int] = seen) -> bool:
                return any(self._finished[n] > c for n, c in seen.items())

            await self._until(moved, within=deadline - time.monotonic())
            if self._stop.is_set():
                return stopping
            for name, count in seen.items():
                if self._finished[name] > count and name in self._services:
                    reports[name] = self._services[name]
                    await emit(_cycle_line(reports[name]))
            remaining = await outcome.unfinished(
                self._store, reports, self.config.retry.max_attempts
            )
        problems = outcome.problems(node.node_error, reports)
        problems += await outcome.failed_pins(
            self._store, list(reports), self.config.retry.max_attempts
        )
        if wait and remaining:
            problems.append(outcome.gave_up(remaining, give_up))
        code, why = verdict(problems)
        if request.get("json"):
            await emit({"print": outcome.summary(code, problems, node.node_error, reports)})
        return code, why

    async def _adopt_now(self, request: dict[str, Any], emit: Emit) -> tuple[int, str | None]:
        """`adopt --service S` beside the daemon, between that service's cycles."""
        name = request.get("service")
        engine = self._engine
        if engine is None or name not in engine.executors:
            return 1, f"the daemon has no service named {name!r} (its config: {self.config.source})"
        node = await self._list_now(emit)
        if node is None or self._engine is not engine:
            return 1, "the daemon is stopping or reloading its config; try again"
        try:
            report = await engine.adopt(str(name))
        except PinningServiceError as exc:
            return 1, str(exc)
        for line in outcome.adopted_lines(str(name), report, node.local_pins):
            await emit({"print": line})
        self._wake[str(name)].set()
        return 0, None

    async def _retry_now(self, request: dict[str, Any], emit: Emit) -> tuple[int, str | None]:
        """`retry` beside the daemon: clear the backoff, and try those services now."""
        wanted = request.get("services") or list(self._wake)
        cids = request.get("cids") or None
        names = [n for n in wanted if isinstance(n, str) and n in self._wake]
        assert self._store is not None
        pins, paused = await self._store.clear_backoff(names, cids)
        for name in names:
            self._wake[name].set()
        await emit({"print": outcome.retried_line(pins, paused, now=True)})
        return 0, None

    def _summary(self) -> str:
        """The one-line STATUS= for systemctl status."""
        parts = []
        if self._node is not None:
            state = "" if self._node.node_online else " (node offline)"
            parts.append(f"{self._node.local_pins} local pins{state}")
        for service in self.config.services:
            report = self._services.get(service.name)
            if report is None:
                parts.append(f"{service.name}: starting")
            elif report.paused or report.backoff:
                parts.append(f"{service.name}: {report.paused or report.backoff}")
            else:
                parts.append(f"{service.name}: {report.pending} pending")
        return "; ".join(parts) or "starting"


NODE_SHARE = 40
"""The node is looked at no more often than every this many times its last answer to a
look (a listing without names) took: a large pinset on a slow node is listed less often than
`sync.interval`, never for more than about 1/40 of the node's time. The full listings that
follow a change, or come every 10 minutes, do not lengthen the wait: the next change would
then wait for them."""


def node_wait(interval: float, look_took: float) -> float:
    """How long the daemon waits before it looks at the node again."""
    return max(interval, NODE_SHARE * look_took)


def log_node(report: CycleReport) -> None:
    """One line per node listing: INFO when the pinset changed or the node is offline."""
    busy = report.local_added or report.local_removed or not report.node_online
    listing = (
        "probe, unchanged"
        if report.listing_probed
        else "unchanged"
        if report.listing_unchanged
        else "compared"
    )
    (log.info if busy else log.debug)(
        "node listed" if report.node_online else "node unreachable",
        local_pins=report.local_pins,
        selected=report.selected,
        local_added=report.local_added,
        local_removed=report.local_removed,
        listing=listing if report.node_online else None,
        seconds=round(report.duration, 2),
    )


def _cycle_line(report: ServiceReport) -> dict[str, Any]:
    """A service cycle as a progress line for a command the daemon runs for a shell."""
    return {"log": "service cycle", "service": report.service, **outcome.service_fields(report)}


def log_service(report: ServiceReport) -> None:
    """One line per service cycle: INFO when something happened, DEBUG when idle."""
    fields = outcome.service_fields(report)
    quiet = set(fields) <= {"pending", "requests"}
    (log.debug if quiet else log.info)("service cycle", service=report.service, **fields)


def log_cycle(report: CycleReport, *, status_round: bool = False) -> None:
    """One summary line for a whole cycle (sync --once): INFO when something happened."""
    services = {name: outcome.service_fields(r) for name, r in report.services.items()}
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


def _first_leaf(group: BaseExceptionGroup[StateDamaged]) -> StateDamaged:
    """The first exception in a (nested) exception group."""
    found: BaseException = group
    while isinstance(found, BaseExceptionGroup):
        found = found.exceptions[0]
    assert isinstance(found, StateDamaged)
    return found
