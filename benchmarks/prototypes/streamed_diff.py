"""Prototype for the idle-cycle and memory misses: the node's listing streamed into SQLite and
diffed there, instead of a dict of every pin, a second dict read back from `local_pins` and a
dict of a `RemotePin` per row.

Each variant runs as its own `pinsyncd`-less subprocess on a copy of the same state file
(built by a real `pinsyncd sync --once` that adopted N pins), against the same FakeKubo:

- `current`: the real `SyncEngine.cycle()` (listing dict, `replace_local_pins`, `remote_pins`,
  `plan_service`, counts);
- `streamed`: the listing, block by block (`LocalNode.iter_pin_batches`), into a TEMP table,
  with an order-independent digest of (cid, name); the diff against `local_pins` in SQL, or
  none at all when the digest equals the last one; then the plan in SQL: the local pins with
  no row on the service (an anti-join, counted) and only the rows that are not `pinned`
  loaded as `RemotePin` objects;
- `baseline`: imports, opens the store, does nothing (start-up RSS and CPU to subtract).

    .venv/bin/python -m benchmarks.prototypes.streamed_diff [--pins 100000,1000000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    SERVICE,
    BenchServers,
    emit,
    pinsyncd_env,
    run_measured,
    run_pinsyncd,
    table,
    write_config,
)

BLOCK = 2000  # rows per executemany into the TEMP table


def pin_digest(cid: str, name: str) -> int:
    return int.from_bytes(
        hashlib.blake2b(f"{cid}\0{name}".encode(), digest_size=8).digest(), "little"
    )


async def streamed_cycle(config_path: Path, fast: bool) -> dict[str, Any]:
    """The prototype: returns its own timings (the caller measures RSS and CPU)."""
    from pinsyncd.config import load_config
    from pinsyncd.kubo import LocalNode
    from pinsyncd.state import RemotePin, StateStore, _remote_from_row

    config = load_config(config_path)
    store = await StateStore.open(config.state_path)
    db = store._db
    phases: dict[str, float] = {}
    cpu = time.process_time()
    started = mark = time.monotonic()
    try:
        await db.execute("CREATE TEMP TABLE listing (cid TEXT NOT NULL, name TEXT NOT NULL)")
        total, count = 0, 0
        async with LocalNode(config.node.api) as node:
            async for batch in node.iter_pin_batches():
                rows = [(pin.cid, pin.name) for pin in batch]
                for cid, name in rows:
                    total += pin_digest(cid, name)
                count += len(rows)
                await db.executemany("INSERT INTO listing VALUES (?, ?)", rows)
        digest = f"{count}:{total % 2**64:016x}"
        phases["listing_into_temp_table"] = time.monotonic() - mark
        mark = time.monotonic()
        previous = await store.get_meta("local_digest")
        changed = not (fast and previous == digest)
        if changed:
            await db.execute("CREATE INDEX temp.listing_cid ON listing (cid)")
            await db.execute("BEGIN IMMEDIATE")
            await db.execute(
                "INSERT INTO local_pins SELECT cid, name FROM listing AS l WHERE NOT EXISTS "
                "(SELECT 1 FROM local_pins AS p WHERE p.cid = l.cid)"
            )
            await db.execute(
                "DELETE FROM local_pins WHERE NOT EXISTS "
                "(SELECT 1 FROM listing AS l WHERE l.cid = local_pins.cid)"
            )
            await db.execute(
                "UPDATE local_pins SET name = (SELECT l.name FROM listing AS l WHERE "
                "l.cid = local_pins.cid) WHERE name != (SELECT l.name FROM listing AS l "
                "WHERE l.cid = local_pins.cid)"
            )
            await db.execute("INSERT OR REPLACE INTO meta VALUES ('local_digest', ?)", (digest,))
            await db.execute("COMMIT")
        phases["diff" if changed else "diff_skipped_same_digest"] = time.monotonic() - mark
        mark = time.monotonic()
        cursor = await db.execute(
            "SELECT COUNT(*) FROM local_pins AS l WHERE NOT EXISTS (SELECT 1 FROM remote_pins "
            "AS r WHERE r.service = ? AND r.cid = l.cid)",
            (SERVICE,),
        )
        (to_add,) = await cursor.fetchone() or (0,)
        phases["plan_adds_anti_join"] = time.monotonic() - mark
        mark = time.monotonic()
        rows = await db.execute_fetchall(
            "SELECT service, cid, status, requestid, created, name, origin, attempts, "
            "next_attempt, last_error, details, updated FROM remote_pins "
            "WHERE service = ? AND status != 'pinned'",
            (SERVICE,),
        )
        work: list[RemotePin] = [_remote_from_row(row) for row in rows]
        phases["plan_load_unpinned_rows"] = time.monotonic() - mark
        mark = time.monotonic()
        await store.counts(SERVICE, unsent=False)
        phases["counts"] = time.monotonic() - mark
        return {
            "cycle_seconds": time.monotonic() - started,
            "cpu_seconds": time.process_time() - cpu,
            "listed": count,
            "to_add": to_add,
            "unpinned_rows": len(work),
            "phases": {k: round(v, 3) for k, v in phases.items()},
        }
    finally:
        await store.close()


async def current_cycle(config_path: Path) -> dict[str, Any]:
    from benchmarks.harness import engine_for

    async with engine_for(config_path) as engine:
        cpu = time.process_time()
        started = time.monotonic()
        report = await engine.cycle()
        return {
            "cycle_seconds": time.monotonic() - started,
            "cpu_seconds": time.process_time() - cpu,
            "listed": report.local_pins,
            "added": report.services[SERVICE].added,
        }


async def baseline(config_path: Path) -> dict[str, Any]:
    from pinsyncd.config import load_config
    from pinsyncd.engine import SyncEngine  # noqa: F401 - imported for its memory
    from pinsyncd.state import StateStore

    store = await StateStore.open(load_config(config_path).state_path)
    await store.close()
    return {"cycle_seconds": 0.0, "cpu_seconds": 0.0}


def child(variant: str, config: Path) -> None:
    """Run one variant in this process and print its JSON."""
    import os

    import pinsyncd.engine  # imported before the timing starts
    import pinsyncd.kubo  # noqa: F401

    os.environ.setdefault("PINSYNCD_BENCH_TOKEN", "bench-token")
    if variant == "current":
        result = asyncio.run(current_cycle(config))
    elif variant == "baseline":
        result = asyncio.run(baseline(config))
    else:
        result = asyncio.run(streamed_cycle(config, fast=variant == "streamed"))
    print(json.dumps(result))


def run_variant(variant: str, config: Path) -> dict[str, Any]:
    argv = [sys.executable, "-m", "benchmarks.prototypes.streamed_diff", "--child", variant]
    argv += ["--config", str(config)]
    run = run_measured(argv, env=pinsyncd_env()).check(f"variant {variant}")
    result = json.loads(run.stdout.strip().splitlines()[-1])
    result["max_rss_mb"] = round(run.max_rss_mb, 1)
    result["process_cpu_seconds"] = round(run.cpu, 2)
    result["cycle_seconds"] = round(result["cycle_seconds"], 3)
    result["cpu_seconds"] = round(result["cpu_seconds"], 3)
    return result


VARIANTS = ("baseline", "current", "streamed_full_diff", "streamed")


def measure(pins: int, rounds: int) -> dict[str, Any]:
    with (
        BenchServers(
            kubo_pins=pins, psa_pins=pins, psa_status="pinned", count_mode="page"
        ) as servers,
        tempfile.TemporaryDirectory(prefix="pinsyncd-proto-") as tmp_name,
    ):
        tmp = Path(tmp_name)
        config = write_config(tmp, node_api=servers.kubo_url, endpoint=servers.psa_url)
        run_pinsyncd(["sync", "--once"], config).check("adoption")
        pristine = tmp / "pristine.db"
        shutil.copy(tmp / "state.db", pristine)
        runs: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
        for _ in range(rounds):
            for variant in VARIANTS:
                if variant in ("current", "streamed_full_diff"):
                    shutil.copy(pristine, tmp / "state.db")  # no digest stored yet
                    for suffix in ("-wal", "-shm"):
                        (tmp / f"state.db{suffix}").unlink(missing_ok=True)
                runs[variant].append(run_variant(variant, config))
    best = {v: min(r, key=lambda x: x["cpu_seconds"]) for v, r in runs.items()}
    return {"pins": pins, "rounds": rounds, "best": best}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.prototypes.streamed_diff",
        description=(__doc__ or "").split("\n")[0],
    )
    parser.add_argument("--pins", default=None, help="comma list (default 100000,1000000)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", choices=(*VARIANTS,), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        assert args.config is not None
        child(args.child, args.config)
        return 0
    sizes = [int(n) for n in (args.pins or ("5000" if args.quick else "100000,1000000")).split(",")]
    results = [measure(n, 1 if args.quick else args.rounds) for n in sizes]
    rows = []
    for r in results:
        base = r["best"]["baseline"]
        for variant in VARIANTS[1:]:
            x = r["best"][variant]
            rows.append(
                [
                    r["pins"],
                    variant,
                    x["cycle_seconds"],
                    x["cpu_seconds"],
                    x["max_rss_mb"],
                    round(x["max_rss_mb"] - base["max_rss_mb"], 1),
                    json.dumps(x.get("phases", {})),
                ]
            )
    headers = ["pins", "variant", "cycle s", "CPU s", "peak RSS MiB", "over start-up", "phases"]
    print(table("idle cycle: current data path vs streamed into SQLite", headers, rows))
    emit("prototype_streamed_diff", args.quick, {"results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
