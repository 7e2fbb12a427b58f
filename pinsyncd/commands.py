"""What each CLI command does, given a loaded config; each returns an exit code and explains
a failure in one line on stderr."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import structlog

from pinsyncd.cids import InvalidCIDError, parse_cid
from pinsyncd.config import Config
from pinsyncd.daemon import Daemon, log_cycle
from pinsyncd.durations import format_duration
from pinsyncd.engine import CycleReport, SyncEngine
from pinsyncd.logs import redact_text
from pinsyncd.planner import ServicePlan
from pinsyncd.progress import SendProgress
from pinsyncd.psa import PinningServiceError
from pinsyncd.state import UNFINISHED_STATUSES, StateStore
from pinsyncd.status import read_failed, read_status, render_failed, render_table

log = structlog.get_logger("pinsyncd")


def fail(message: str) -> int:
    print(f"pinsyncd: {redact_text(message)}", file=sys.stderr)
    return 1


def run_daemon(config: Config) -> int:
    return asyncio.run(Daemon(config).run())


def show_status(config: Config, *, as_json: bool, failed: bool = False) -> int:
    names = [s.name for s in config.services]
    if failed:
        rows = read_failed(config.state_path, names)
        print(json.dumps(rows, indent=2) if as_json else render_failed(rows))
        return 0
    status = read_status(
        config.state_path,
        names,
        max_attempts=config.retry.max_attempts,
        replicas=config.replicas,
        stuck_after=config.sync.stuck_after,
    )
    print(json.dumps(status, indent=2) if as_json else render_table(status))
    return 0


def sync_once(config: Config, *, wait: bool, timeout: float | None) -> int:
    return asyncio.run(_sync_once(config, wait=wait, give_up_after=timeout))


async def _sync_once(config: Config, *, wait: bool, give_up_after: float | None) -> int:
    store = await StateStore.open(config.state_path)
    engine = SyncEngine(config, store)
    deadline = time.monotonic() + give_up_after if give_up_after else float("inf")
    progress = SendProgress()
    for executor in engine.executors.values():
        executor.progress = progress.update
    try:
        with progress:
            report = await engine.cycle()
        log_cycle(report)
        remaining = await _unfinished(store, report)
        while wait and remaining and time.monotonic() < deadline:
            pause = min(config.sync.status_interval, max(0.0, deadline - time.monotonic()))
            await asyncio.sleep(pause)
            report = await engine.cycle()
            log_cycle(report)
            remaining = await _unfinished(store, report)
        # Give the dials to the services' delegates a moment before this process (and
        # perhaps the node's only connection to them) goes away.
        await engine.dialer.drain(within=10.0)
    finally:
        await engine.close()
        await store.close()
    problems = _problems(report)
    if wait and remaining:
        waited = f" after {format_duration(give_up_after)}" if give_up_after else ""
        detail = ", ".join(f"{name}: {n}" for name, n in remaining.items())
        problems.append(f"gave up waiting{waited}; not yet pinned or failed: {detail}")
    if problems:
        return fail("; ".join(problems))
    return 0


async def _unfinished(store: StateStore, report: CycleReport) -> dict[str, int]:
    """Per service that is not paused: pins that are neither pinned nor failed yet."""
    left: dict[str, int] = {}
    for name, service_report in report.services.items():
        if service_report.paused:
            continue
        counts = await store.counts(name, unsent=False)
        count = sum(counts.get(s, 0) for s in UNFINISHED_STATUSES) + service_report.unsent
        if count:
            left[name] = count
    return left


def _problems(report: CycleReport) -> list[str]:
    problems = []
    if report.node_error:
        problems.append(report.node_error)
    for name, service_report in report.services.items():
        if service_report.paused:
            problems.append(f"{name}: {service_report.paused}")
        elif service_report.error:
            problems.append(service_report.error)
        elif service_report.backoff:
            problems.append(f"{name}: {service_report.backoff}")
    return problems


def dry_run(config: Config) -> int:
    return asyncio.run(_dry_run(config))


async def _dry_run(config: Config) -> int:
    """Print the plan for every service; no service is called, and nothing is written: the
    cycle runs on a copy of the state file."""
    with tempfile.TemporaryDirectory(prefix="pinsyncd-dry-run-") as scratch:
        copy = Path(scratch) / "state.db"
        if config.state_path.exists():
            await asyncio.to_thread(_copy_state, config.state_path, copy)
        store = await StateStore.open(copy)
        engine = SyncEngine(config, store)
        try:
            report = await engine.refresh_node()
            if report.node_error:
                return fail(report.node_error)
            chosen = f", {report.selected} selected" if report.selected != report.local_pins else ""
            print(f"local node {config.node.api}: {report.local_pins} pins{chosen}")
            for service in config.services:
                directives = await engine.policy.directives(
                    store, service.name, peer_id=engine.peer_id, mfs_root=engine.mfs_root
                )
                state = await store.service_state(service.name)
                executor = engine.executors[service.name]
                plan, _, _ = await executor.plan(directives, state.adopted, engine.node_view)
                _print_plan(service.name, service.endpoint, plan)
        finally:
            await engine.close()
            await store.close()
    return 0


def _copy_state(source: Path, target: Path) -> None:
    """A consistent copy of the state, safe while the daemon writes to it."""
    src = sqlite3.connect(source)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def _print_plan(name: str, endpoint: str, plan: ServicePlan) -> None:
    print(f"service {name} ({endpoint}):")
    if plan.adopt:
        print("  first contact: would list the service's pins and adopt those it has,")
        print("  then add the rest")
    else:
        reasons = Counter(item.reason for item in plan.replace)
        replaced = ", ".join(f"{n} ({why})" for why, n in reasons.items()) or "0"
        print(f"  would add {len(plan.add)} pins, replace {replaced}")
    if plan.remove:
        reasons = Counter(item.reason for item in plan.remove)
        print("  would delete " + ", ".join(f"{n} ({why})" for why, n in reasons.items()))
    if plan.resolve:
        print(f"  would look up {len(plan.resolve)} adds whose outcome is unknown")
    if plan.track:
        print(f"  would check {len(plan.track)} pending pins")
    if plan.waiting:
        print(f"  {plan.waiting} pins wait for their retry time")
    for item in plan.add[:20]:
        print(f"    add {item.cid}" + (f"  ({item.name})" if item.name else ""))
    if len(plan.add) > 20:
        print(f"    ... and {len(plan.add) - 20} more")
    for item in plan.remove[:20]:
        print(f"    delete {item.cid}  ({item.reason})")


def retry(config: Config, *, service: str | None, cids: list[str]) -> int:
    """Clear the backoff of failed pins (and of paused services) so that they are tried at
    the daemon's next cycle. Safe while the daemon runs."""
    names = [s.name for s in config.services]
    if service is not None and service not in names:
        return fail(f"no service named {service!r} in {config.source} (have: {', '.join(names)})")
    for cid in cids:
        try:
            parse_cid(cid)
        except InvalidCIDError as exc:
            return fail(str(exc))
    return asyncio.run(_retry(config, [service] if service else names, cids or None))


async def _retry(config: Config, services: list[str], cids: list[str] | None) -> int:
    store = await StateStore.open(config.state_path)
    try:
        pins, paused = await store.clear_backoff(services, cids)
    finally:
        await store.close()
    print(
        f"{pins} pin{'s' * (pins != 1)} and {paused} paused service{'s' * (paused != 1)} "
        "will be tried again at the next cycle"
    )
    return 0


def adopt(config: Config, *, service: str) -> int:
    """List the service once and record its existing pins of our CIDs, so none is re-added."""
    if service not in [s.name for s in config.services]:
        return fail(f"no service named {service!r} in {config.source}")
    return asyncio.run(_adopt(config, service))


async def _adopt(config: Config, service: str) -> int:
    store = await StateStore.open(config.state_path)
    engine = SyncEngine(config, store)
    try:
        node = await engine.refresh_node()
        if node.node_error:
            print(f"node unreachable; using the last listing of {node.local_pins} pins")
        try:
            report = await engine.executors[service].adopt()
        except PinningServiceError as exc:
            return fail(str(exc))
    finally:
        await engine.close()
        await store.close()
    print(
        f"{service}: {report.adopted} existing pin{'s' * (report.adopted != 1)} adopted, "
        f"{report.resolved} of pinsyncd's own settled, for {node.local_pins} local pins "
        f"({sum(report.requests.values())} requests)"
    )
    if report.duplicates:
        print(f"{service}: {report.duplicates} CIDs have more than one request on the service")
    return 0
