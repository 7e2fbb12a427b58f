"""Benchmark 2, idle cost: what a cycle costs when nothing changed, at N = 100,000 local pins
that are all pinned on the service (and known to pinsyncd's state).

Measured three ways, against tests.fake_kubo (counts RPC calls) and tests.fake_psa (counts
requests), both in a process of their own:
- in-process: `SyncEngine.cycle()` of the real engine, CPU by `time.process_time()` (the
  SQLite thread included), requests and RPC calls by the servers' counters;
- `pinsyncd sync --once` as a subprocess: wall, CPU and peak RSS of the whole process (and of
  `pinsyncd check-config`, the start-up cost alone);
- `pinsyncd run` as a subprocess: CPU per `sync.interval` from /proc, over a few intervals.

Targets (issue 7): 0 remote requests per cycle (verification aside), <= 1 CPU second per cycle,
1 streaming `pin/ls` per cycle.

    .venv/bin/python -m benchmarks.idle_cost [--pins 100000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    BenchServers,
    emit,
    engine_for,
    pinsyncd_env,
    process_cpu,
    run_pinsyncd,
    stop_process,
    table,
    write_config,
)


async def in_process_cycles(
    servers: BenchServers, config: Path, cycles: int
) -> list[dict[str, Any]]:
    out = []
    async with engine_for(config) as engine:
        for _ in range(cycles):
            before = servers.stats()
            cpu, wall = time.process_time(), time.monotonic()
            report = await engine.cycle()
            cpu, wall = time.process_time() - cpu, time.monotonic() - wall
            spent = servers.stats() - before
            assert report.node_online, report.node_error
            out.append(
                {
                    "cpu_seconds": round(cpu, 3),
                    "wall_seconds": round(wall, 3),
                    "remote_requests": spent.total,
                    "rpc_calls": {k: v for k, v in spent.kubo.items() if v},
                }
            )
    return out


def daemon_cycles(
    servers: BenchServers, config: Path, interval: float, cycles: int
) -> dict[str, Any]:
    """CPU per interval of `pinsyncd run`, sampled mid-interval after the first idle one."""
    servers.reset()
    argv = [sys.executable, "-m", "pinsyncd", "run", "-c", str(config), "--log-format", "json"]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(argv, env=pinsyncd_env(), stdout=log, stderr=log)
        try:
            listings = _wait_listings(servers, process, 2, interval * 4 + 60)
            time.sleep(interval / 2)
            cpu1, stats1 = process_cpu(process.pid), servers.stats()
            _wait_listings(servers, process, listings + cycles, interval * (cycles + 2) + 60)
            time.sleep(interval / 2)
            cpu2, stats2 = process_cpu(process.pid), servers.stats()
        finally:
            stop_process(process)
    spent = stats2 - stats1
    return {
        "interval_seconds": interval,
        "intervals": cycles,
        "cpu_seconds_per_interval": round((cpu2 - cpu1) / cycles, 3),
        "remote_requests_per_interval": round(spent.total / cycles, 2),
        "rpc_calls_per_interval": {k: round(v / cycles, 2) for k, v in spent.kubo.items() if v},
    }


def _wait_listings(
    servers: BenchServers, process: subprocess.Popen[bytes], count: int, timeout: float
) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"pinsyncd run exited {process.returncode}")
        listings = servers.stats().kubo.get("pin/ls", 0)
        if listings >= count:
            return listings
        time.sleep(0.05)
    raise RuntimeError(f"pinsyncd run did not list the node {count} times in {timeout:.0f}s")


def measure(pins: int, cycles: int, interval: float, intervals: int) -> dict[str, Any]:
    with (
        BenchServers(kubo_pins=pins, psa_pins=pins, psa_status="pinned") as servers,
        tempfile.TemporaryDirectory(prefix="pinsyncd-bench-") as tmp,
    ):
        config = write_config(
            Path(tmp), node_api=servers.kubo_url, endpoint=servers.psa_url, interval=f"{interval}s"
        )
        setup = run_pinsyncd(["sync", "--once"], config).check("first sync (adoption)")
        inproc = asyncio.run(in_process_cycles(servers, config, cycles))
        servers.reset()
        once = run_pinsyncd(["sync", "--once"], config).check("idle sync --once")
        once_stats = servers.stats()
        startup = run_pinsyncd(["check-config"], config).check("check-config")
        daemon = daemon_cycles(servers, config, interval, intervals)
    steady = inproc[1:] or inproc
    return {
        "pins": pins,
        "setup_adoption_seconds": round(setup.wall, 2),
        "in_process": inproc,
        "cpu_seconds_per_cycle": round(statistics.median(c["cpu_seconds"] for c in steady), 3),
        "wall_seconds_per_cycle": round(statistics.median(c["wall_seconds"] for c in steady), 3),
        "remote_requests_per_cycle": max(c["remote_requests"] for c in steady),
        "rpc_calls_per_cycle": steady[-1]["rpc_calls"],
        "sync_once": {
            "wall_seconds": round(once.wall, 3),
            "cpu_seconds": round(once.cpu, 3),
            "max_rss_mb": round(once.max_rss_mb, 1),
            "remote_requests": once_stats.total,
            "rpc_calls": {k: v for k, v in once_stats.kubo.items() if v},
        },
        "startup_only": {
            "wall_seconds": round(startup.wall, 3),
            "cpu_seconds": round(startup.cpu, 3),
            "max_rss_mb": round(startup.max_rss_mb, 1),
        },
        "daemon": daemon,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.idle_cost", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--pins", type=int, default=None, help="N (default 100000; quick 2000)")
    parser.add_argument("--cycles", type=int, default=None, help="in-process cycles (default 4)")
    parser.add_argument("--interval", type=float, default=None, help="daemon interval, seconds")
    parser.add_argument("--intervals", type=int, default=None, help="daemon intervals measured")
    parser.add_argument("--quick", action="store_true", help="a small N, for the smoke test")
    args = parser.parse_args(argv)
    pins = args.pins or (2000 if args.quick else 100_000)
    cycles = args.cycles or (2 if args.quick else 4)
    interval = args.interval or (1.0 if args.quick else 8.0)
    intervals = args.intervals or (1 if args.quick else 3)
    r = measure(pins, cycles, interval, intervals)
    rpc = r["rpc_calls_per_cycle"]
    d = r["daemon"]
    rows = [
        [
            "remote requests per cycle",
            r["remote_requests_per_cycle"],
            "0",
            r["remote_requests_per_cycle"] == 0,
        ],
        [
            "CPU seconds per cycle (in-process)",
            r["cpu_seconds_per_cycle"],
            "<= 1",
            r["cpu_seconds_per_cycle"] <= 1,
        ],
        ["wall seconds per cycle (in-process)", r["wall_seconds_per_cycle"], "-", None],
        ["pin/ls calls per cycle", rpc.get("pin/ls", 0), "1", rpc.get("pin/ls", 0) == 1],
        ["other RPC calls per cycle", sum(v for k, v in rpc.items() if k != "pin/ls"), "-", None],
        [
            "daemon: CPU seconds per interval",
            d["cpu_seconds_per_interval"],
            "<= 1",
            d["cpu_seconds_per_interval"] <= 1,
        ],
        [
            "daemon: remote requests per interval",
            d["remote_requests_per_interval"],
            "0",
            d["remote_requests_per_interval"] == 0,
        ],
        ["sync --once: CPU seconds (whole process)", r["sync_once"]["cpu_seconds"], "-", None],
        ["sync --once: wall seconds", r["sync_once"]["wall_seconds"], "-", None],
        ["sync --once: peak RSS MiB", r["sync_once"]["max_rss_mb"], "-", None],
        ["start-up alone (check-config): CPU seconds", r["startup_only"]["cpu_seconds"], "-", None],
    ]
    title = f"idle cost: {pins} local pins, all pinned on fake_psa and in the state"
    print(table(title, ["measure", "value", "target", "met"], rows))
    emit("idle_cost", args.quick, r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
