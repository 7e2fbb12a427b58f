"""What checking the node's listing costs: `StateStore.replace_local_listing` with vetting
(the daemon's way: CIDs new to the state are parsed, those that do not parse are left out,
and a CIDv0/CIDv1 spelling of a CID already listed is found) against the same listing
without it. The first listing (every CID new: a new install, or the first run after an
upgrade) and an idle one (nothing new), at N local pins; wall and CPU seconds, best of 3.

    .venv/bin/python -m benchmarks.listing_vet [--pins 100000,1000000] [--quick]
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from benchmarks.harness import emit, sizes_from_args, table

BATCH = 5000


async def _listing_seconds(pins: int, vetted: bool) -> dict[str, float]:
    from pinsyncd.state import ListingVetting, StateStore
    from tests.fake_kubo import generated_cid

    rows = [(generated_cid(i, "vet"), f"pin-{i}", "recursive", 1) for i in range(pins)]

    async def batches() -> AsyncIterator[Sequence[tuple[str, str, str, int]]]:
        for start in range(0, len(rows), BATCH):
            yield rows[start : start + BATCH]

    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="pinsyncd-vet-") as scratch:
        store = await StateStore.open(Path(scratch) / "state.db")
        try:
            for cycle in ("first", "idle"):
                wall, cpu = time.perf_counter(), time.process_time()
                await store.replace_local_listing(batches(), ListingVetting() if vetted else None)
                out[f"{cycle}_wall"] = time.perf_counter() - wall
                out[f"{cycle}_cpu"] = time.process_time() - cpu
        finally:
            await store.close()
    return out


async def measure(pins: int) -> dict[str, Any]:
    result: dict[str, Any] = {"pins": pins}
    for vetted in (False, True):
        runs = [await _listing_seconds(pins, vetted) for _ in range(3)]
        label = "vetted" if vetted else "plain"
        for key in ("first_wall", "first_cpu", "idle_wall", "idle_cpu"):
            result[f"{label}_{key}"] = round(min(r[key] for r in runs), 3)
    return result


def main() -> None:
    sizes, quick = sizes_from_args(__doc__)
    rows = [asyncio.run(measure(n)) for n in sizes]
    print(
        table(
            "storing the node's listing, without and with vetting (best of 3)",
            ["pins", "cycle", "plain wall s", "plain CPU s", "vetted wall s", "vetted CPU s"],
            [
                [
                    r["pins"],
                    cycle,
                    *(r[f"{v}_{cycle}_{m}"] for v in ("plain", "vetted") for m in ("wall", "cpu")),
                ]
                for r in rows
                for cycle in ("first", "idle")
            ],
        )
    )
    emit("listing_vet", quick, {"sizes": rows})


if __name__ == "__main__":
    main()
