"""`pinsyncd sync --dry-run`: what a cycle would do now, printed, with no service called and
nothing written. It runs the cycle's own path (the engine's directives, the same windows
planned by the same planner) on a copy of the state file."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pinsyncd import loop
from pinsyncd.config import Config
from pinsyncd.logs import printable, redact_text
from pinsyncd.planner import Add, Remove, ServicePlan
from pinsyncd.say import fail
from pinsyncd.store import StateStore
from pinsyncd.sync.engine import SyncEngine


def dry_run(config: Config, *, as_json: bool = False) -> int:
    return loop.run(_dry_run(config, as_json))


async def _dry_run(config: Config, as_json: bool) -> int:
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
            if not as_json:
                print(f"local node {config.node.api}: {report.local_pins} pins{chosen}")
            doc: dict[str, Any] = {
                "local": {"pins": report.local_pins, "selected": report.selected},
                "services": {},
            }
            for service in config.services:
                directives = await engine.directives(service.name)
                state = await store.service_state(service.name)
                executor = engine.executors[service.name]
                preview = _Preview()
                async for plan in executor.plans(directives, state.adopted, engine.node_view):
                    preview.take(plan)
                counts = await store.counts(service.name, unsent=False)
                pending = counts.get("queued", 0) + counts.get("pinning", 0)
                if as_json:
                    doc["services"][service.name] = _as_json(preview, pending)
                else:
                    _print_plan(service.name, service.endpoint, preview, pending)
        finally:
            await engine.close()
            await store.close()
    if as_json:
        print(redact_text(json.dumps(doc, indent=2)))
    return 0


def _as_json(plan: _Preview, pending: int) -> dict[str, Any]:
    return {
        "first_contact": plan.adopt,
        "adds": plan.adds,
        "replaces": dict(plan.replaces),
        "deletes": [
            {"cid": r.cid, "requestid": r.requestid, "why": r.reason} for r in plan.removes
        ],
        "lookups": plan.resolve,
        "pending": pending,
        "waiting": plan.waiting,
        "first_adds": [{"cid": a.cid, "name": a.name} for a in plan.first_adds],
    }


def _copy_state(source: Path, target: Path) -> None:
    """A consistent copy of the state, safe while the daemon writes to it."""
    src = sqlite3.connect(source)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


SHOWN = 20
"""Adds and deletes a dry run lists one by one; the rest are counted."""


@dataclass
class _Preview:
    """A service's plan as `sync --dry-run` prints it, taken a window at a time: counts, and
    the first few items, so a dry run's memory stays as flat as the cycle's."""

    adopt: bool = False
    adds: int = 0
    first_adds: list[Add] = field(default_factory=list)
    replaces: Counter[str] = field(default_factory=Counter)
    removes: list[Remove] = field(default_factory=list)
    resolve: int = 0
    waiting: int = 0

    def take(self, plan: ServicePlan) -> None:
        self.adopt = self.adopt or plan.adopt
        self.adds += len(plan.add)
        self.first_adds += plan.add[: SHOWN - len(self.first_adds)]
        self.replaces.update(item.reason for item in plan.replace)
        self.removes += plan.remove  # decided in the first window only
        self.resolve += len(plan.resolve)
        self.waiting += plan.waiting


def _print_plan(name: str, endpoint: str, plan: _Preview, pending: int) -> None:
    print(f"service {name} ({endpoint}):")
    if plan.adopt:
        print("  first contact: would list the service's pins and adopt those it has,")
        print("  then add the rest")
    else:
        replaced = ", ".join(f"{n} ({why})" for why, n in plan.replaces.items()) or "0"
        print(f"  would add {plan.adds} pins, replace {replaced}")
    if plan.removes:
        deletes = Counter(item.reason for item in plan.removes)
        print("  would delete " + ", ".join(f"{n} ({why})" for why, n in deletes.items()))
    if plan.resolve:
        print(f"  would look up {plan.resolve} adds whose outcome is unknown")
    if pending:
        print(f"  would check {pending} pending pins")
    if plan.waiting:
        print(f"  {plan.waiting} pins wait for their retry time")
    for item in plan.first_adds:
        print(printable(f"    add {item.cid}" + (f"  ({item.name})" if item.name else "")))
    if plan.adds > SHOWN:
        print(f"    ... and {plan.adds - SHOWN} more")
    for removal in plan.removes[:SHOWN]:
        print(printable(f"    delete {removal.cid}  ({removal.reason})"))
