"""Benchmark 5, cycle time and its growth: the first cycle (adopt N pins already on the service,
fresh state) and an idle cycle of `pinsyncd sync --once` at N = 100,000 and 1,000,000 local
pins (see benchmarks/scale.py). Growth is the per-pin cost at the largest N over the per-pin
cost at the smallest: 1.0 is linear, above 1 is worse than linear.

Target (issue 7): linear or better.

    .venv/bin/python -m benchmarks.cycle_time [--pins 100000,1000000] [--quick]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from benchmarks.harness import emit, table
from benchmarks.scale import measure_scale

LINEAR_SLACK = 1.25  # per-pin cost may grow this much before the growth counts as superlinear


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.cycle_time", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--pins", default=None, help="comma list (default 100000,1000000)")
    parser.add_argument("--quick", action="store_true", help="small N (2000,5000)")
    args = parser.parse_args(argv)
    text = args.pins or ("2000,5000" if args.quick else "100000,1000000")
    sizes = sorted(int(n) for n in text.split(","))
    runs = [measure_scale(n) for n in sizes]
    rows = []
    for r in runs:
        for kind in ("first", "idle"):
            x = r[kind]
            rows.append(
                [
                    r["pins"],
                    kind,
                    x["cycle_seconds"],
                    x["wall_seconds"],
                    x["cpu_seconds"],
                    round(1e6 * (x["cycle_seconds"] or 0) / r["pins"], 2),
                    x["remote_requests"],
                    x["max_rss_mb"],
                ]
            )
    growth: dict[str, float | None] = {}
    small, large = runs[0], runs[-1]
    for kind in ("first", "idle"):
        a, b = small[kind]["cycle_seconds"], large[kind]["cycle_seconds"]
        per_pin_small = a / small["pins"] if a else None
        per_pin_large = b / large["pins"] if b else None
        growth[kind] = (
            round(per_pin_large / per_pin_small, 3) if per_pin_small and per_pin_large else None
        )
    headers = ["pins", "cycle", "cycle s", "wall s", "CPU s", "µs/pin", "requests", "RSS MiB"]
    print(table("cycle time of pinsyncd sync --once", headers, rows))
    print()
    growth_rows = [
        [
            kind,
            f"{sizes[0]} -> {sizes[-1]}",
            g,
            f"<= {LINEAR_SLACK}",
            g is not None and g <= LINEAR_SLACK,
        ]
        for kind, g in growth.items()
    ]
    print(
        table(
            "growth: per-pin cycle time at the largest N / at the smallest",
            ["cycle", "pins", "growth", "linear", "met"],
            growth_rows,
        )
    )
    emit("cycle_time", args.quick, {"runs": runs, "growth": growth})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
