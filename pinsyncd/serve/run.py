"""`pinsyncd serve`: the process. It holds the lock of its own state file (one `serve` per
file), opens it, learns the node's addresses (the `delegates` of every answer, kept in the
state so that answers go on while the node is away), starts the pinner and the HTTP server,
and then lives like the daemon does:

- SIGTERM or SIGINT: stop listening, stop the work under way (a `pin/add` cut short is
  started again at the next start: the request is still `pinning` in the state), close.
- SIGHUP, or a change to the config file or to a token file (looked at every 2 s): the
  accounts and their tokens, and the pinner's settings, are read again; a config with
  errors is refused and the running one stays. `listen`, `tls`, `state` and `node` take
  effect at the next start.
- Under systemd (Type=notify): READY=1 once listening, STATUS= with the counts, WATCHDOG=1.
- A status line in the log every `STATUS_EVERY` seconds while something changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import structlog
from aiohttp import web

from pinsyncd import hangup
from pinsyncd.config import Config, ConfigError, load_config
from pinsyncd.config.schema import Serve
from pinsyncd.exits import EX_LOCKED
from pinsyncd.kubo import LocalNode, NodeError
from pinsyncd.listen import is_loopback, parse_listen
from pinsyncd.lock import StateLock
from pinsyncd.logs import register_secrets
from pinsyncd.notify import Notifier
from pinsyncd.serve.accounts import Accounts, delegates_of
from pinsyncd.serve.app import ServeApp
from pinsyncd.serve.metrics import ServeMetrics
from pinsyncd.serve.pinner import Finished, Pinner
from pinsyncd.serve.store import ServeStore, StoreTooNew
from pinsyncd.tokens import TokenError, expand_path

log = structlog.get_logger("pinsyncd.serve")

STATUS_EVERY = 300.0
IDENTITY_EVERY = 300.0
IDENTITY_RETRY = 5.0
VERIFY_EVERY = 3600.0
WATCH_EVERY = 2.0
DELEGATES_KEY = "delegates"


class ServeDaemon:
    def __init__(
        self,
        config: Config,
        *,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.monotonic,
        clock_speed: float = 1.0,
    ) -> None:
        assert config.serve is not None
        self._clock = clock
        self._clock_speed = clock_speed
        self.config = config
        self.serve: Serve = config.serve
        self.notifier = notifier or Notifier()
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()
        self._delegates: list[str] = list(self.serve.settings.delegates)
        self._found_delegates: list[str] = []
        self._node_ok: bool | None = None
        self._node_trouble = "the node has not been asked yet"
        self.url: str | None = None

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_stop, signum)
        loop.add_signal_handler(signal.SIGHUP, self._on_hangup)
        if hangup.early():
            self._reload.set()
        lock = StateLock(self.serve.state_path)
        try:
            holder = lock.try_acquire("serve")
            if holder is not None:
                who = f" (pid {holder.pid})" if holder.pid else ""
                log.error(
                    f"another pinsyncd serve{who} uses this state file; one at a time",
                    state=str(self.serve.state_path),
                )
                return EX_LOCKED
            return await self._run_locked()
        finally:
            lock.release()
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)

    def _on_stop(self, signum: int) -> None:
        if self._stop.is_set():
            return
        log.info("stopping", signal=signal.Signals(signum).name)
        self.notifier.stopping()
        self._stop.set()

    def _on_hangup(self) -> None:
        log.info("SIGHUP: reading the config again", config=str(self.config.source))
        self._reload.set()

    async def _run_locked(self) -> int:
        accounts = Accounts(self.serve.accounts)
        register_secrets(a.token for a in self.serve.accounts)
        try:
            store = await ServeStore.open(self.serve.state_path)
        except (sqlite3.DatabaseError, OSError, StoreTooNew) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            log.error(f"cannot open the state file {self.serve.state_path}: {why}")
            return 1
        node = LocalNode.for_config(self.config)
        settings = self.serve.settings
        try:
            saved = await store.get_meta(DELEGATES_KEY)
            self._found_delegates = json.loads(saved) if saved else []
            self.metrics = ServeMetrics(store, accounts.names)
            self.pinner = Pinner(
                store,
                node,
                concurrency=settings.pin_concurrency,
                stall=settings.pin_timeout,
                dial_private=settings.origins == "all",
                on_finished=self._finished,
                clock=self._clock,
                clock_speed=self._clock_speed,
            )
            self.metrics.busy = lambda: self.pinner.busy
            self.app = ServeApp(
                store,
                self.pinner,
                accounts,
                delegates=self.delegates,
                health=self.health,
                metrics=self.metrics.render,
                on_request=self.metrics.record_request,
            )
            self.store = store
            runner = web.AppRunner(self.app.application(), access_log=None, handle_signals=False)
            await runner.setup()
            try:
                try:
                    await self._listen(runner)
                except (OSError, ssl.SSLError) as exc:
                    why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                    log.error(f"cannot listen on {settings.listen}: {why}")
                    return 1
                return await self._serve(node)
            finally:
                await runner.cleanup()
        finally:
            await node.close()
            await store.close()

    async def _listen(self, runner: web.AppRunner) -> None:
        host, port = parse_listen(self.serve.settings.listen)
        context = None
        if self.serve.tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*self.serve.tls)
        await web.TCPSite(runner, host, port, ssl_context=context).start()
        bound_host, bound_port = runner.addresses[0][:2]
        scheme = "https" if context else "http"
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        self.url = f"{scheme}://{shown}:{bound_port}"
        log.info(
            "pinning service listening",
            url=self.url,
            accounts=self.app.accounts.names,
            state=str(self.serve.state_path),
        )
        if context is None and not is_loopback(host):
            log.warning(
                "listening without TLS beyond this machine: tokens cross the network in clear "
                "text; set serve.tls, or keep it behind a VPN or an HTTPS proxy"
            )

    async def _serve(self, node: LocalNode) -> int:
        tasks = [
            asyncio.create_task(self.pinner.run(), name="pinner"),
            asyncio.create_task(self._identity_loop(node), name="identity"),
            asyncio.create_task(self._verify_loop(), name="verify"),
            asyncio.create_task(self._status_loop(), name="status"),
            asyncio.create_task(self._reloader(), name="reload"),
            asyncio.create_task(self._watch_files(), name="watch"),
        ]
        if self.notifier.watchdog_interval:
            tasks.append(asyncio.create_task(self._watchdog(self.notifier.watchdog_interval)))
        self.notifier.ready(await self._summary())
        stop = asyncio.create_task(self._stop.wait())
        try:
            done, _ = await asyncio.wait([stop, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stop and not task.cancelled() and task.exception():
                    error = task.exception()
                    log.error(
                        "stopping after an unexpected error",
                        task=task.get_name(),
                        error=repr(error),
                    )
                    return 1
            return 0
        finally:
            for task in (stop, *tasks):
                task.cancel()
            await asyncio.gather(stop, *tasks, return_exceptions=True)
            log.info("stopped")

    # --- what the answers need ---------------------------------------------------------------

    def delegates(self) -> list[str]:
        return self._delegates or self._found_delegates

    def health(self) -> tuple[bool, str]:
        trouble = self.pinner.node_trouble if self._node_ok else self._node_trouble
        if self._node_ok and trouble is None:
            if not self.delegates():
                return False, "the node has no swarm address to give as delegates: set "
                "serve.delegates, or start it online"
            return True, "ok"
        return False, trouble or self._node_trouble

    def _finished(self, finished: Finished) -> None:
        self.metrics.record_pin(finished)

    # --- loops -------------------------------------------------------------------------------

    async def _identity_loop(self, node: LocalNode) -> None:
        """Ask the node who it is now and then: its addresses are the delegates."""
        while True:
            try:
                identity = await node.identity()
            except NodeError as exc:
                if self._node_ok is not False:
                    log.warning("the node cannot be reached", error=str(exc))
                self._node_ok, self._node_trouble = False, str(exc)
                self.metrics.node_up.set(0)
                await asyncio.sleep(IDENTITY_RETRY)
                continue
            if self._node_ok is not True:
                log.info("node reached", peer_id=identity.peer_id)
            self._node_ok = True
            self.metrics.node_up.set(1)
            found = delegates_of(identity)
            if found and found != self._found_delegates:
                self._found_delegates = found
                await self.store.set_meta(DELEGATES_KEY, json.dumps(found))
                log.info("delegates", addresses=self.delegates())
            await asyncio.sleep(IDENTITY_EVERY)

    async def _verify_loop(self) -> None:
        """At start and every `VERIFY_EVERY`: are the pinned CIDs still pinned on the node?"""
        while True:
            try:
                lost = await self.pinner.verify()
            except NodeError as exc:
                log.info("could not check the node's pins; trying again later", error=str(exc))
                await asyncio.sleep(IDENTITY_EVERY)
                continue
            if lost:
                log.warning("pinned CIDs were gone from the node; pinning them again", cids=lost)
            await asyncio.sleep(VERIFY_EVERY)

    async def _summary(self) -> str:
        counts = await self.store.counts()
        totals = {s: 0 for s in ("queued", "pinning", "pinned", "failed")}
        for (_, status), count in counts.items():
            totals[status] = totals.get(status, 0) + count
        node = "node up" if self._node_ok else "node unreachable"
        return (
            f"serving {len(self.app.accounts.names)} account(s): {totals['pinned']} pinned, "
            f"{totals['pinning']} pinning, {totals['queued']} queued, {totals['failed']} "
            f"failed; {node}"
        )

    async def _status_loop(self) -> None:
        last = ""
        while True:
            summary = await self._summary()
            self.notifier.status(summary)
            if summary != last:
                log.info(summary)
                last = summary
            await asyncio.sleep(STATUS_EVERY if not self.pinner.busy else 30.0)

    async def _watchdog(self, interval: float) -> None:
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    # --- reload ------------------------------------------------------------------------------

    async def _reloader(self) -> None:
        while True:
            await self._reload.wait()
            self._reload.clear()
            self.reload_now()

    def reload_now(self) -> bool:
        """Read the config and the tokens again; whether the new ones were taken."""
        path = self.config.source
        try:
            config = load_config(path, tokens=False)
            if config.serve is None:
                raise ConfigError(str(path), [])
            problems = config.serve.token_problems()  # reads every token, once
            if problems:
                raise ConfigError(str(path), problems)
            accounts = Accounts(config.serve.accounts)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("config rejected", problem=problem.render(exc.filename))
            why = "has errors" if exc.problems else "has no serve: section any more"
            log.error(f"the new config {why}; the running one stays", config=str(path))
            return False
        except (TokenError, OSError, ValueError) as exc:
            log.error("the new config could not be read; the running one stays", error=str(exc))
            return False
        assert config.serve is not None
        self.notifier.reloading()
        old, new = self.serve, config.serve
        for key in ("listen", "tls", "state"):
            if getattr(old.settings, key) != getattr(new.settings, key):
                log.warning(f"serve.{key} changes take effect at the next restart")
        if config.node != self.config.node:
            log.warning("node changes take effect at the next restart")
        register_secrets(a.token for a in new.accounts)
        before = set(self.app.accounts.names)
        self.app.accounts = accounts
        self.metrics.accounts = accounts.names
        self.pinner.concurrency = new.settings.pin_concurrency
        self.pinner.stall = new.settings.pin_timeout
        self.pinner.dial_private = new.settings.origins == "all"
        self._delegates = list(new.settings.delegates)
        self.serve = Serve(new.settings, new.accounts, old.state_path, old.tls)
        self.config = config
        self.pinner.wake()
        log.info(
            "config reloaded",
            accounts=accounts.names,
            added=sorted(set(accounts.names) - before),
            removed=sorted(before - set(accounts.names)),
        )
        self.notifier.status("reloaded")
        return True

    def _watched(self) -> set[Path]:
        """The config file and every account's token file."""
        paths = {self.config.source.absolute()}
        for account in self.serve.accounts:
            token = account.token
            if getattr(token, "kind", None) == "file":
                raw = expand_path(token.name, os.environ)  # type: ignore[union-attr]
                base = self.config.source.absolute().parent
                paths.add(raw if raw.is_absolute() else base / raw)
        return paths

    async def _watch_files(self) -> None:
        """Reload when the config file or a token file changes: their size, time and inode
        looked at every `WATCH_EVERY` seconds (a few small files: no watcher thread to
        stop, and a token rewritten by a rename, or through a symlink, is seen too)."""
        seen = _signatures(self._watched())
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(WATCH_EVERY):
                    await self._stop.wait()
            now = _signatures(self._watched())
            if now != seen:
                changed = sorted(
                    str(p) for p in now.keys() | seen.keys() if now.get(p) != seen.get(p)
                )
                log.info("a watched file changed", files=changed)
                seen = now
                self._reload.set()


def _signatures(paths: set[Path]) -> dict[Path, tuple[int, int, int] | None]:
    """(inode, size, mtime in ns) of each file, None for one that cannot be read now."""
    out: dict[Path, tuple[int, int, int] | None] = {}
    for path in paths:
        try:
            status = path.stat()
        except OSError:
            out[path] = None
        else:
            out[path] = (status.st_ino, status.st_size, status.st_mtime_ns)
    return out


def serve(config: Config) -> int:
    """The `serve` command: run until stopped; the exit code."""
    from pinsyncd import loop

    return loop.run(ServeDaemon(config).run())
