"""What the memory and cycle-time benchmarks share: pinsyncd at N local pins that the service
already holds, run twice as `pinsyncd sync --once` subprocesses on the same state file:

- first: a fresh state, so the first contact lists the whole service (pages of 1000) and
  adopts every pin: it writes N local rows and N remote rows;
- idle: the same again, nothing changed (one streaming pin/ls, no remote request).

The peers (tests.fake_kubo with N pins, tests.fake_psa holding the same N pins as `pinned`,
`count = page length` so that serving a page of a 10^6-pin service stays cheap) run in a
process of their own. Wall and CPU are per process; the cycle time is pinsyncd's own
`cycle done` figure (the process minus start-up, the final pending count and shutdown).
"""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.harness import BenchServers, ProcessRun, cycle_events, run_pinsyncd, write_config


def describe(run: ProcessRun, spent: Any) -> dict[str, Any]:
    cycles = cycle_events(run)
    services = cycles[-1].get("services", {}) if cycles else {}
    return {
        "wall_seconds": round(run.wall, 2),
        "cycle_seconds": round(float(cycles[-1]["seconds"]), 2) if cycles else None,
        "cpu_seconds": round(run.cpu, 2),
        "max_rss_mb": round(run.max_rss_mb, 1),
        "remote_requests": spent.total,
        "list_requests": spent.psa["list"],
        "rpc_calls": {k: v for k, v in spent.kubo.items() if v},
        "services": services,
    }


def state_rows(path: Path) -> dict[str, int]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return {
            table: db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in ("local_pins", "remote_pins")
        }


def measure_scale(pins: int) -> dict[str, Any]:
    with (
        BenchServers(kubo_pins=pins, psa_pins=pins, psa_status="pinned") as servers,
        tempfile.TemporaryDirectory(prefix="pinsyncd-bench-") as tmp,
    ):
        config = write_config(Path(tmp), node_api=servers.kubo_url, endpoint=servers.psa_url)
        servers.reset()
        first = run_pinsyncd(["sync", "--once"], config, log_level="debug").check("first sync")
        first_spent = servers.stats()
        servers.reset()
        idle = run_pinsyncd(["sync", "--once"], config, log_level="debug").check("idle sync")
        idle_spent = servers.stats()
        rows = state_rows(Path(tmp) / "state.db")
        state_mb = round((Path(tmp) / "state.db").stat().st_size / 2**20, 1)
    return {
        "pins": pins,
        "state_rows": rows,
        "state_file_mb": state_mb,
        "first": describe(first, first_spent),
        "idle": describe(idle, idle_spent),
    }


def measure_new(pins: int) -> dict[str, Any]:
    """An initial backup: N local pins, an empty service, one `pinsyncd sync --once` that
    sends all N adds (the first cycle of a new install on a large node); then one more,
    which has nothing to send and follows the N pending requests (a status round); then,
    once the service has pinned them all, one that finds them pinned."""
    with (
        BenchServers(kubo_pins=pins, psa_pins=0) as servers,
        tempfile.TemporaryDirectory(prefix="pinsyncd-bench-") as tmp,
    ):
        config = write_config(Path(tmp), node_api=servers.kubo_url, endpoint=servers.psa_url)
        servers.reset()
        run = run_pinsyncd(["sync", "--once"], config, log_level="debug").check("initial sync")
        spent = servers.stats()
        if spent.psa["add"] != pins:
            raise RuntimeError(f"pinsyncd sent {spent.psa['add']} adds for {pins} pins")
        servers.reset()
        track = run_pinsyncd(["sync", "--once"], config, log_level="debug").check("second sync")
        tracked = servers.stats()
        servers.force_psa("pinned")
        servers.reset()
        done = run_pinsyncd(["sync", "--once"], config, log_level="debug").check("third sync")
        settled = servers.stats()
        return {
            "pins": pins,
            "initial": describe(run, spent) | {"adds": spent.psa["add"]},
            "tracking": describe(track, tracked) | {"adds": tracked.psa["add"]},
            "all_pinned": describe(done, settled) | {"adds": settled.psa["add"]},
        }
