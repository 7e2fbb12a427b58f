"""Benchmark: what looking at the node costs, on real Kubo (`.peers/bin/ipfs`).

At N pins (raw blocks imported as CAR roots, unnamed, as `ipfs add` makes them):
- Kubo's CPU (from /proc) to answer one streamed `pin/ls` with names (a full listing) and
  without (the probe pinsyncd sends between full listings), and its wall time;
- pinsyncd's CPU for one idle `SyncEngine.cycle()` against it, in this process: with the
  probe (the default) and with a full listing every time;
- what that comes to with the default config: the node is listed every `sync.interval`, or
  every 40 x the listing's wall time if that is longer, with a full listing every 10 minutes.

    .venv/bin/python -m benchmarks.node_cost [--pins 100000] [--repo DIR] [--quick]

`--repo DIR` keeps the Kubo repo there and reuses it when it already holds N pins (an import
of 100,000 pins takes about two minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    IPFS_BIN,
    BenchServers,
    emit,
    engine_for,
    kubo_daemon,
    process_cpu,
    run_pinsyncd,
    table,
    write_config,
)

MARKER = "pinsyncd-bench-pins"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def write_car(path: Path, count: int) -> None:
    """A CARv1 of `count` raw blocks, each one of its roots (`ipfs dag import` pins roots)."""
    cids, blocks = [], []
    for i in range(count):
        data = b"pinsyncd-bench-%d" % i
        cids.append(b"\x01\x55\x12\x20" + hashlib.sha256(data).digest())
        blocks.append(data)
    header = bytearray(b"\xa2\x65roots\x9a" + count.to_bytes(4, "big"))
    for cid in cids:  # dag-cbor: tag 42, bytes of 0x00 + the CID
        header += b"\xd8\x2a\x58\x25\x00" + cid
    header += b"\x67version\x01"
    with path.open("wb") as out:
        out.write(_varint(len(header)) + header)
        for cid, data in zip(cids, blocks, strict=True):
            out.write(_varint(len(cid) + len(data)) + cid + data)


def fill(node: Any, repo: Path, pins: int) -> float:
    """Import `pins` pins unless the repo has them already; seconds it took."""
    marker = repo / MARKER
    if marker.exists() and marker.read_text() == str(pins):
        return 0.0
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        car = Path(tmp) / "pins.car"
        write_car(car, pins)
        subprocess.run(
            [str(IPFS_BIN), "dag", "import", str(car)],
            env=node.env,
            check=True,
            capture_output=True,
        )
    marker.write_text(str(pins))
    return time.monotonic() - started


def kubo_listing(node: Any, names: bool, rounds: int) -> dict[str, float]:
    """Median Kubo CPU and wall seconds of one streamed pin/ls, read to its end."""
    query = "type=recursive&stream=true" + ("&names=true" if names else "")
    url = f"{node.api_url}/api/v0/pin/ls?{query}"
    cpus, walls = [], []
    assert node.process is not None
    for _ in range(rounds):
        cpu, wall = process_cpu(node.process.pid), time.monotonic()
        with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=600) as r:
            size = len(r.read())
        walls.append(time.monotonic() - wall)
        cpus.append(process_cpu(node.process.pid) - cpu)
    return {"kubo_cpu": statistics.median(cpus), "wall": statistics.median(walls), "bytes": size}


async def pinsyncd_cycles(config: Path, full: bool, cycles: int) -> dict[str, float]:
    """Median CPU and wall of idle `SyncEngine.cycle()`s, the first one left out."""
    from pinsyncd.tuning import Tuning

    cpus, walls = [], []
    async with engine_for(config, Tuning(full_listing_every=0.0) if full else None) as engine:
        for _ in range(cycles + 1):
            cpu, wall = time.process_time(), time.monotonic()
            report = await engine.cycle()
            cpus.append(time.process_time() - cpu)
            walls.append(time.monotonic() - wall)
            assert report.node_online and report.listing_unchanged, report
            assert report.listing_probed != full, report
    return {"cpu": statistics.median(cpus[1:]), "wall": statistics.median(walls[1:])}


def per_minute(probe: float, full: float, probe_wall: float, interval: float) -> float:
    """Seconds per minute spent on listings with the default schedule: a probe every
    max(interval, 40 x its wall time), a full listing instead of one every 10 minutes."""
    from pinsyncd.daemon import node_wait
    from pinsyncd.tuning import DEFAULT

    every = node_wait(interval, probe_wall)
    listings = 60 / every
    fulls = min(listings, 60 / DEFAULT.full_listing_every)
    return (listings - fulls) * probe + fulls * full


def measure(pins: int, repo: Path, rounds: int) -> dict[str, Any]:
    from pinsyncd.config.schema import SyncConfig

    interval = SyncConfig().interval
    with kubo_daemon(repo) as node, BenchServers() as servers, tempfile.TemporaryDirectory() as tmp:
        imported = fill(node, repo, pins)
        full = kubo_listing(node, names=True, rounds=rounds)
        probe = kubo_listing(node, names=False, rounds=rounds)
        config = write_config(Path(tmp), node_api=node.api_url, endpoint=servers.psa_url)
        run_pinsyncd(["sync", "--once"], config, timeout=3600).check("first sync (adds)")
        servers.force_psa("pinned")
        run_pinsyncd(["sync", "--once"], config, timeout=3600).check("tracking to pinned")
        ours_probe = asyncio.run(pinsyncd_cycles(config, full=False, cycles=rounds))
        ours_full = asyncio.run(pinsyncd_cycles(config, full=True, cycles=rounds))
    kubo_minute = per_minute(probe["kubo_cpu"], full["kubo_cpu"], probe["wall"], interval)
    ours_minute = per_minute(ours_probe["cpu"], ours_full["cpu"], probe["wall"], interval)
    from pinsyncd.daemon import node_wait

    return {
        "pins": pins,
        "import_seconds": round(imported, 1),
        "kubo_full": {k: round(v, 3) for k, v in full.items()},
        "kubo_probe": {k: round(v, 3) for k, v in probe.items()},
        "pinsyncd_idle_cycle_probe": {k: round(v, 3) for k, v in ours_probe.items()},
        "pinsyncd_idle_cycle_full": {k: round(v, 3) for k, v in ours_full.items()},
        "default_interval_seconds": interval,
        "listed_every_seconds": round(node_wait(interval, probe["wall"]), 1),
        "kubo_share_of_one_core": round(kubo_minute / 60, 4),
        "pinsyncd_share_of_one_core": round(ours_minute / 60, 4),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.node_cost", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--pins", type=int, default=None, help="N (default 100000; quick 2000)")
    parser.add_argument("--repo", type=Path, default=None, help="keep the Kubo repo here")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a small N, for the smoke test")
    args = parser.parse_args(argv)
    pins = args.pins or (2000 if args.quick else 100_000)
    with tempfile.TemporaryDirectory(prefix="pinsyncd-node-cost-") as tmp:
        r = measure(pins, args.repo or Path(tmp) / "kubo", args.rounds)
    rows = [
        ["Kubo CPU, pin/ls with names (full)", r["kubo_full"]["kubo_cpu"], r["kubo_full"]["wall"]],
        [
            "Kubo CPU, pin/ls without names (probe)",
            r["kubo_probe"]["kubo_cpu"],
            r["kubo_probe"]["wall"],
        ],
        [
            "pinsyncd CPU, idle cycle with a probe",
            r["pinsyncd_idle_cycle_probe"]["cpu"],
            r["pinsyncd_idle_cycle_probe"]["wall"],
        ],
        [
            "pinsyncd CPU, idle cycle, full listing",
            r["pinsyncd_idle_cycle_full"]["cpu"],
            r["pinsyncd_idle_cycle_full"]["wall"],
        ],
    ]
    print(table(f"node cost: {pins} pins on real Kubo", ["measure", "CPU s", "wall s"], rows))
    print(
        f"default interval {r['default_interval_seconds']:g}s: listed every "
        f"{r['listed_every_seconds']:g}s; Kubo {100 * r['kubo_share_of_one_core']:.2f}% and "
        f"pinsyncd {100 * r['pinsyncd_share_of_one_core']:.2f}% of one core"
    )
    emit("node_cost", args.quick, r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
