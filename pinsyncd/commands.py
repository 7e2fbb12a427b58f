"""What each CLI command does, given a loaded config; each returns an exit code and explains
a failure in one line on stderr."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import structlog

from pinsyncd import control, journal, loop, outcome
from pinsyncd.alerts.runner import AlertRunner
from pinsyncd.config import Config
from pinsyncd.daemon import Daemon, log_cycle
from pinsyncd.exits import verdict
from pinsyncd.follow import FollowUp
from pinsyncd.lock import EX_LOCKED, Holder, StateLock
from pinsyncd.logs import printable, redact_text, register_secrets
from pinsyncd.progress import SendProgress
from pinsyncd.psa import PinningServiceError
from pinsyncd.restore import summary
from pinsyncd.restore.run import RestoreFailed, RestoreOptions
from pinsyncd.restore.run import restore as run_restore
from pinsyncd.say import fail, unknown_argument
from pinsyncd.store import StateStore
from pinsyncd.store.readonly import (
    read_previous_peer_ids,
)
from pinsyncd.sync.engine import CycleReport, SyncEngine

log = structlog.get_logger("pinsyncd")


DAEMON_SILENT_AFTER = 10.0
"""How long a command waits for a daemon that holds the state file but does not answer on
its control socket (it is starting, or cannot make the socket) before it gives up."""


def run_daemon(config: Config) -> int:
    return loop.run(Daemon(with_tokens(config)).run())


def with_tokens(config: Config, services: list[str] | None = None) -> Config:
    """The config with the tokens (of `services`, default all) read now, for a command about
    to send requests; a token that cannot be read is a config error (exit 78)."""
    config = config.load_tokens(services)
    register_secrets(s.token for s in config.services)
    for warning in config.warnings:
        print(journal.for_stream(f"warning: {warning}", "warning", sys.stderr), file=sys.stderr)
    return config


def as_writer(
    config: Config,
    command: str,
    alone: Callable[[Config], Coroutine[Any, Any, int]],
    request: dict[str, Any] | None,
    *,
    tokens: bool | list[str] = True,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Run a command that calls services or writes the state as the state file's one writer:
    take its lock and run `alone` (with the tokens read, when it needs them), or, when the
    daemon holds the lock, ask the daemon to do it (`request` on its control socket) and
    show its progress (a `request` of None: tell the user to stop the daemon first); when
    another one-shot command holds it, wait for it to finish."""
    lock = StateLock(config.state_path)
    waited_for: Holder | None = None
    silent_since: float | None = None
    while True:
        holder = lock.try_acquire(command)
        if holder is None:
            try:
                if tokens:
                    config = with_tokens(config, None if tokens is True else tokens)
                return loop.run(alone(config))
            finally:
                lock.release()
        if holder.is_daemon:
            if request is None:
                print(
                    f"pinsyncd: {holder.describe()} runs on the state file {config.state_path}; "
                    f"stop it for the {command} (e.g. `systemctl stop pinsyncd`) and start it "
                    "again afterwards",
                    file=sys.stderr,
                )
                return EX_LOCKED
            answer = loop.run(_ask_daemon(config, holder, command, request))
            if answer is not None:
                return answer
            silent_since = silent_since or time.monotonic()
            if time.monotonic() - silent_since >= DAEMON_SILENT_AFTER:
                print(
                    f"pinsyncd: {holder.describe()} holds the state file {config.state_path} "
                    f"but does not answer on {control.socket_path(config.state_path)}; "
                    "try again once it has started (or run `systemctl reload pinsyncd`)",
                    file=sys.stderr,
                )
                return EX_LOCKED
        elif holder != waited_for:
            waited_for = holder
            print(
                f"pinsyncd: waiting for {holder.describe()} to finish with the state file "
                f"{config.state_path}",
                file=sys.stderr,
            )
        sleep(0.2)


async def _ask_daemon(
    config: Config, holder: Holder, command: str, request: dict[str, Any]
) -> int | None:
    path = control.socket_path(config.state_path)
    told = False

    def on_line(line: dict[str, Any]) -> None:
        nonlocal told
        if not told:
            told = True
            print(
                f"pinsyncd: {holder.describe()} runs on {config.state_path}; it does the "
                f"{command} now",
                file=sys.stderr,
            )
        if "print" in line:
            print(printable(line["print"]))
        elif "log" in line:
            fields = {k: v for k, v in line.items() if k != "log"}
            log.info(str(line["log"]), **fields)

    answer = await control.ask(path, command, request, on_line)
    if answer is None:
        return None
    code, error = answer
    if error:
        fail(error)
    return code


def sync_once(
    config: Config, *, wait: bool, timeout: float | None, now: bool = False, as_json: bool = False
) -> int:
    """One cycle (and with `wait`, until every pin is pinned or failed; with `now`, failed
    pins and paused services tried again first, whatever their backoff); beside a running
    daemon, the daemon runs it. The exit code says how it ended (`pinsyncd.exits`)."""

    async def alone(config: Config) -> int:
        return await _sync_once(config, wait=wait, give_up_after=timeout, now=now, as_json=as_json)

    request = {"wait": wait, "timeout": timeout, "now": now, "json": as_json}
    return as_writer(config, "sync", alone, request)


async def _sync_once(
    config: Config, *, wait: bool, give_up_after: float | None, now: bool, as_json: bool
) -> int:
    store = await StateStore.open(config.state_path, recover=True)
    engine = SyncEngine(config, store)
    deadline = time.monotonic() + give_up_after if give_up_after else float("inf")
    progress = SendProgress()
    for executor in engine.executors.values():
        executor.progress = progress.update
    follow = {name: FollowUp(ceiling=config.sync.status_interval) for name in engine.executors}
    try:
        if now:
            await store.clear_backoff(list(engine.executors), None)
        with progress:
            report = await engine.cycle()
        node_error = report.node_error
        log_cycle(report)
        remaining = await outcome.unfinished(store, report.services, config.retry.max_attempts)
        while wait and remaining and time.monotonic() < deadline:
            soon = _next_round(follow, report, config.sync.status_interval)
            await asyncio.sleep(min(soon, max(0.0, deadline - time.monotonic())))
            # What is left is the requests of this run: a node listed once is not listed
            # again (an unreachable one is, each round, until it answers).
            report = await engine.cycle(list_node=node_error is not None)
            node_error = report.node_error if node_error is not None else None
            log_cycle(report)
            remaining = await outcome.unfinished(store, report.services, config.retry.max_attempts)
        problems = outcome.problems(node_error, report.services)
        problems += await outcome.failed_pins(
            store, list(report.services), config.retry.max_attempts
        )
        if wait and remaining:
            problems.append(outcome.gave_up(remaining, give_up_after))
        code, why = verdict(problems)
        await AlertRunner(config, store).after_look(healthy=code == 0, summary=why or "OK")
        # Give the dials to the services' delegates a moment before this process (and
        # perhaps the node's only connection to them) goes away.
        await engine.dialer.drain(within=10.0)
    finally:
        await engine.close()
        await store.close()
    if as_json:
        print(outcome.summary(code, problems, node_error, report.services))
    if why:
        fail(why)
    return code


def _next_round(follow: Mapping[str, FollowUp], report: CycleReport, longest: float) -> float:
    """Seconds until the next status round of `sync --once --wait`: the soonest any service
    wants to look at its pending requests again (`follow`)."""
    waits = [
        follow[name].after(
            sent=r.added + r.replaced, pending=r.pending, intents_due_in=r.intents_due_in
        )
        for name, r in report.services.items()
    ]
    return min((w for w in waits if w is not None), default=longest)


def retry(config: Config, *, service: str | None, cids: list[str]) -> int:
    """Clear the backoff of failed pins (and of paused services) so that they are tried at
    the next cycle; beside a running daemon, the daemon does it and tries them at once."""
    if (refusal := unknown_argument(config, [service] if service else [], cids)) is not None:
        return refusal
    services = [service] if service else [s.name for s in config.services]

    async def alone(config: Config) -> int:
        return await _retry(config, services, cids or None)

    request = {"services": services, "cids": cids or None}
    return as_writer(config, "retry", alone, request, tokens=False)


async def _retry(config: Config, services: list[str], cids: list[str] | None) -> int:
    store = await StateStore.open(config.state_path, recover=True)
    try:
        pins, paused = await store.clear_backoff(services, cids)
    finally:
        await store.close()
    print(outcome.retried_line(pins, paused))
    return 0


def adopt(config: Config, *, service: str) -> int:
    """List the service once and record its existing pins of our CIDs, so none is re-added;
    beside a running daemon, the daemon does it."""
    if service not in [s.name for s in config.services]:
        return fail(f"no service named {service!r} in {config.source}")

    async def alone(config: Config) -> int:
        return await _adopt(config, service)

    return as_writer(config, "adopt", alone, {"service": service}, tokens=[service])


async def _adopt(config: Config, service: str) -> int:
    store = await StateStore.open(config.state_path, recover=True)
    engine = SyncEngine(config, store)
    try:
        node = await engine.refresh_node()
        if node.node_error:
            print(f"node unreachable; using the last listing of {node.local_pins} pins")
        try:
            report = await engine.adopt(service)
        except PinningServiceError as exc:
            return fail(str(exc))
    finally:
        await engine.close()
        await store.close()
    for line in outcome.adopted_lines(service, report, node.local_pins):
        print(line)
    return 0


def restore(config: Config, options: RestoreOptions) -> int:
    """Bring the backed-up pins back onto the node (`pinsyncd restore`). It runs alone on
    the state file: a daemon beside it would back the restored pins up again before the
    restore has marked them as already backed up."""
    if (refusal := unknown_argument(config, options.services, options.cids)) is not None:
        return refusal
    if options.dry_run:
        config = with_tokens(config, list(options.services))
        return loop.run(_restore(config, options, None))

    async def alone(config: Config) -> int:
        store = await StateStore.open(config.state_path, recover=True)
        try:
            return await _restore(config, options, store)
        finally:
            await store.close()

    return as_writer(config, "restore", alone, None, tokens=list(options.services))


async def _restore(config: Config, options: RestoreOptions, store: StateStore | None) -> int:
    taken_over = (
        await store.previous_peer_ids()
        if store is not None
        else read_previous_peer_ids(config.state_path)
    )
    try:
        report = await run_restore(config, options, store, taken_over=taken_over)
    except RestoreFailed as exc:
        return fail(f"restore: {exc}")
    lines = summary.plan_lines(report) if store is None else summary.result_lines(report)
    print(printable(redact_text("\n".join(lines))))
    return summary.exit_code(report) if store is not None else 0
