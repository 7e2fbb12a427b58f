"""Benchmark 1, requests per pin: the remote requests `pinsyncd sync --once --wait` makes to
bring N new local pins to `pinned` on one service whose pins move queued -> pinning -> pinned
by themselves (tests.fake_psa with --transition-after), counted by the server.

The lower bound is N adds plus, per status round, ceil(pending / 1000) list calls, where
`pending` is what pinsyncd holds as queued/pinning when the round starts (all N after the
adds). Target (issue 7): total <= 1.02 * N + rounds.

    .venv/bin/python -m benchmarks.requests_per_pin [--pins 10000] [--quick]
"""

from __future__ import annotations

import argparse
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    SERVICE,
    BenchServers,
    cycle_events,
    emit,
    run_pinsyncd,
    table,
    write_config,
)


def measure(
    pins: int, transition_after: float, concurrency: int, status_interval: float
) -> dict[str, Any]:
    with BenchServers(kubo_pins=pins, transition_after=transition_after) as servers:
        with tempfile.TemporaryDirectory(prefix="pinsyncd-bench-") as tmp:
            config = write_config(
                Path(tmp),
                node_api=servers.kubo_url,
                endpoint=servers.psa_url,
                concurrency=concurrency,
                status_interval=f"{int(status_interval * 1000)}ms",
            )
            run = run_pinsyncd(
                ["sync", "--once", "--wait", "--timeout", "30m"], config, log_level="debug"
            ).check("pinsyncd sync --once --wait")
        stats = servers.stats()
    cycles = cycle_events(run)
    # Pending at each status round: all added pins at the first cycle's tracking, then what
    # the previous cycle left pending.
    pending_at_round: list[int] = []
    for index, event in enumerate(cycles):
        service = event.get("services", {}).get(SERVICE, {})
        if index == 0:
            pending_at_round.append(int(service.get("added", 0)))
        else:
            previous = cycles[index - 1].get("services", {}).get(SERVICE, {})
            pending_at_round.append(int(previous.get("pending", 0)))
    rounds = [p for p in pending_at_round if p > 0]
    lower_bound = pins + sum(math.ceil(p / 1000) for p in rounds)
    target = 1.02 * pins + len(rounds)
    total = stats.total
    return {
        "pins": pins,
        "adds": stats.psa["add"],
        "lists": stats.psa["list"],
        "gets": stats.psa["get"],
        "replaces": stats.psa["replace"],
        "deletes": stats.psa["delete"],
        "total": total,
        "requests_per_pin": round(total / pins, 4),
        "cycles": len(cycles),
        "status_rounds": len(rounds),
        "pending_per_round": rounds,
        "lower_bound": lower_bound,
        "target": round(target, 1),
        "met": total <= target,
        "all_pinned_on_service": stats.pins == pins,
        "wall_seconds": round(run.wall, 2),
        "pinsyncd_cpu_seconds": round(run.cpu, 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.requests_per_pin", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--pins", type=int, default=None, help="N (default 10000; quick 300)")
    parser.add_argument("--transition-after", type=float, default=None, help="seconds per step")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--status-interval", type=float, default=0.5, help="seconds")
    parser.add_argument("--quick", action="store_true", help="a small N, for the smoke test")
    args = parser.parse_args(argv)
    pins = args.pins or (300 if args.quick else 10_000)
    step = args.transition_after or (0.2 if args.quick else 1.0)
    result = measure(pins, step, args.concurrency, args.status_interval)
    rows = [
        ["adds (POST /pins)", result["adds"]],
        ["list calls (GET /pins)", result["lists"]],
        ["GET /pins/{id}", result["gets"]],
        ["replaces + deletes", result["replaces"] + result["deletes"]],
        ["total requests", result["total"]],
        ["requests per pin", result["requests_per_pin"]],
        ["status rounds", result["status_rounds"]],
        ["lower bound N + sum ceil(pending/1000)", result["lower_bound"]],
        ["target 1.02 N + rounds", result["target"]],
        ["target met", result["met"]],
        ["wall seconds (whole run)", result["wall_seconds"]],
    ]
    title = (
        f"requests per pin: N={pins} new pins to pinned on fake_psa "
        f"(queued -> pinning -> pinned, {step:g}s per step), concurrency {args.concurrency}"
    )
    print(table(title, ["measure", "value"], rows))
    emit("requests_per_pin", args.quick, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
