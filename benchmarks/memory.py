"""Benchmark 4, memory: the peak RSS of the real `pinsyncd sync --once` process with
N = 1,000,000 local pins (tests.fake_kubo) and a state of 1,000,000 rows, at its first cycle
(which builds that state by adopting the service's pins) and at an idle cycle. See
benchmarks/scale.py for the set-up. Peak RSS is VmHWM from /proc, sampled every 3 ms.

Target (issue 7): <= 300 MB.

    .venv/bin/python -m benchmarks.memory [--pins 1000000] [--quick]

`--initial` measures another case instead: an initial backup, N local pins and an empty
service, where the one `sync --once` sends all N adds (not one of the issue's targets; it
shows how memory grows with the adds of one cycle).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from benchmarks.harness import emit, table
from benchmarks.scale import measure_new, measure_scale

TARGET_MB = 300


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.memory", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--pins", type=int, default=None, help="N (default 1000000; quick 20000)")
    parser.add_argument("--quick", action="store_true", help="a small N, for the smoke test")
    parser.add_argument(
        "--initial", action="store_true", help="an initial backup: N adds to an empty service"
    )
    args = parser.parse_args(argv)
    pins = args.pins or (20_000 if args.quick else 1_000_000)
    if args.initial:
        result = measure_new(pins)
        print(
            table(
                f"peak RSS of pinsyncd sync --once: initial backup of {pins} pins (all adds), "
                f"then a cycle that follows the {pins} pending requests, then one that finds "
                "them all pinned",
                ["run", "peak RSS MiB", "wall s", "CPU s", "adds", "requests"],
                [
                    [
                        run,
                        result[run]["max_rss_mb"],
                        result[run]["wall_seconds"],
                        result[run]["cpu_seconds"],
                        result[run]["adds"],
                        result[run]["remote_requests"],
                    ]
                    for run in ("initial", "tracking", "all_pinned")
                ],
            )
        )
        emit("memory", args.quick, {"case": "initial backup", **result})
        return 0
    result = measure_scale(pins)
    rows = []
    for run in ("first", "idle"):
        r = result[run]
        rows.append(
            [
                f"{run} cycle",
                r["max_rss_mb"],
                f"<= {TARGET_MB}",
                r["max_rss_mb"] <= TARGET_MB,
                r["wall_seconds"],
                r["cpu_seconds"],
            ]
        )
    result["target_mb"] = TARGET_MB
    result["met"] = all(result[run]["max_rss_mb"] <= TARGET_MB for run in ("first", "idle"))
    title = (
        f"peak RSS of pinsyncd sync --once: {pins} local pins, state of "
        f"{result['state_rows']['local_pins']} local + {result['state_rows']['remote_pins']} "
        f"remote rows ({result['state_file_mb']} MiB file)"
    )
    print(table(title, ["run", "peak RSS MiB", "target", "met", "wall s", "CPU s"], rows))
    emit("memory", args.quick, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
