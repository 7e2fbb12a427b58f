"""What opening the state file costs: `StateStore.open` runs SQLite's `PRAGMA quick_check`
so that a damaged file is found (and set aside) at start, not in the middle of a cycle. This
measures open with the check and the check alone, on states of N local pins each with a
pinned row on two services. Wall milliseconds, best of 3.

    .venv/bin/python -m benchmarks.state_open [--pins 100000,1000000] [--quick]
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import emit, sizes_from_args, table


async def _build(path: Path, pins: int) -> None:
    from pinsyncd.model import RemotePin, RemoteStatus
    from pinsyncd.store import StateStore
    from tests.fake_kubo import generated_cid

    store = await StateStore.open(path)
    try:
        cids = [generated_cid(i, "open") for i in range(pins)]
        await store.replace_local_pins({cid: f"pin-{i}" for i, cid in enumerate(cids)})
        for service in ("alpha", "beta"):
            for start in range(0, pins, 50_000):
                await store.save(
                    RemotePin(service, cid, RemoteStatus.PINNED, requestid=f"r-{service}-{cid}")
                    for cid in cids[start : start + 50_000]
                )
    finally:
        await store.close()


async def _open_ms(path: Path) -> float:
    from pinsyncd.store import StateStore

    started = time.perf_counter()
    store = await StateStore.open(path)
    elapsed = time.perf_counter() - started
    await store.close()
    return elapsed * 1000


def _check_ms(path: Path) -> float:
    db = sqlite3.connect(path)
    try:
        started = time.perf_counter()
        db.execute("PRAGMA quick_check(1)").fetchone()
        return (time.perf_counter() - started) * 1000
    finally:
        db.close()


async def measure(pins: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="pinsyncd-open-") as scratch:
        path = Path(scratch) / "state.db"
        await _build(path, pins)
        opens = [await _open_ms(path) for _ in range(3)]
        checks = [_check_ms(path) for _ in range(3)]
        return {
            "pins": pins,
            "file_mb": round(path.stat().st_size / 1e6, 1),
            "open_ms": round(min(opens), 1),
            "quick_check_ms": round(min(checks), 1),
        }


def main() -> None:
    sizes, quick = sizes_from_args(__doc__)
    rows = [asyncio.run(measure(n)) for n in sizes]
    print(
        table(
            "opening the state file (best of 3)",
            ["pins", "file MB", "open ms", "quick_check ms"],
            [[r["pins"], r["file_mb"], r["open_ms"], r["quick_check_ms"]] for r in rows],
        )
    )
    emit("state_open", quick, {"sizes": rows})


if __name__ == "__main__":
    main()
