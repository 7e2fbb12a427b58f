"""What checking the node's listing costs: `StateStore.replace_local_listing` with vetting
(the daemon's way: CIDs new to the state are parsed, those that do not parse are left out,
and a CIDv0/CIDv1 spelling of a CID already listed is found) against the same listing
without it. The first listing (every CID new: a new install, or the first run after an
upgrade) and an idle one (nothing new), at N local pins; wall and CPU seconds, best of 3.
Then the cost of `pin_types: [recursive, direct]`: vetted, with the pass that keeps a CID
listed twice once, over a listing that names each CID once (Kubo) and over one that names
each twice (ipfs-cluster's IPFS proxy, which lists every pin for each type).

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


MODES = {  # label -> (vetted, listed_twice, times each CID is listed)
    "plain": (False, False, 1),
    "vetted": (True, False, 1),
    "two_types": (True, True, 1),
    "proxy": (True, True, 2),
}


async def _listing_seconds(pins: int, mode: str) -> dict[str, float]:
    from pinsyncd.store import ListingVetting, StateStore
    from tests.fake_kubo import generated_cid

    vetted, twice, copies = MODES[mode]
    rows = [(generated_cid(i, "vet"), f"pin-{i}", "recursive", 1) for i in range(pins)] * copies

    async def batches() -> AsyncIterator[Sequence[tuple[str, str, str, int]]]:
        for start in range(0, len(rows), BATCH):
            yield rows[start : start + BATCH]

    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="pinsyncd-vet-") as scratch:
        store = await StateStore.open(Path(scratch) / "state.db")
        try:
            for cycle in ("first", "idle"):
                wall, cpu = time.perf_counter(), time.process_time()
                vetting = ListingVetting() if vetted else None
                await store.replace_local_listing(batches(), vetting, listed_twice=twice)
                out[f"{cycle}_wall"] = time.perf_counter() - wall
                out[f"{cycle}_cpu"] = time.process_time() - cpu
        finally:
            await store.close()
    return out


async def measure(pins: int) -> dict[str, Any]:
    result: dict[str, Any] = {"pins": pins}
    for label in MODES:
        runs = [await _listing_seconds(pins, label) for _ in range(3)]
        for key in ("first_wall", "first_cpu", "idle_wall", "idle_cpu"):
            result[f"{label}_{key}"] = round(min(r[key] for r in runs), 3)
    return result


def main() -> None:
    sizes, quick = sizes_from_args(__doc__)
    rows = [asyncio.run(measure(n)) for n in sizes]
    print(
        table(
            "storing the node's listing, without and with vetting (best of 3)",
            ["pins", "cycle", *(f"{v} {m} s" for v in MODES for m in ("wall", "CPU"))],
            [
                [
                    r["pins"],
                    cycle,
                    *(r[f"{v}_{cycle}_{m}"] for v in MODES for m in ("wall", "cpu")),
                ]
                for r in rows
                for cycle in ("first", "idle")
            ],
        )
    )
    emit("listing_vet", quick, {"sizes": rows})


if __name__ == "__main__":
    main()
