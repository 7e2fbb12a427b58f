"""Start-up cost: the whole-process CPU (user + system, from the kernel) of `pinsyncd
--version`, `status`, `status --check` and `check-config` on a small state, the median of
`--runs` runs each, beside `python -c pass`. Target (issue 18): `status` <= 0.25 s.

    .venv/bin/python -m benchmarks.startup [--runs 7] [--quick]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from benchmarks.harness import ROOT, emit, table

CONFIG = """\
node:
  api: http://127.0.0.1:9
state:
  path: {state}
services:
  - name: alpha
    endpoint: http://127.0.0.1:9
    token_env: STARTUP_BENCH_TOKEN
"""


def cpu_seconds(argv: Sequence[str], env: dict[str, str], runs: int) -> float:
    spent = []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(argv, env=env, capture_output=True, check=False, cwd=ROOT)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        spent.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return round(statistics.median(spent), 3)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.startup")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="3 runs each")
    args = parser.parse_args(argv)
    runs = 3 if args.quick else args.runs
    env = {**os.environ, "PYTHONPATH": str(ROOT), "STARTUP_BENCH_TOKEN": "t"}
    with tempfile.TemporaryDirectory(prefix="pinsyncd-startup-") as tmp:
        config = Path(tmp) / "config.yaml"
        config.write_text(CONFIG.format(state=Path(tmp) / "state.db"))
        pinsyncd = [sys.executable, "-m", "pinsyncd"]
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "pinsyncd --version": [*pinsyncd, "--version"],
            "pinsyncd status": [*pinsyncd, "status", "-c", str(config)],
            "pinsyncd status --check": [*pinsyncd, "status", "--check", "-c", str(config)],
            "pinsyncd check-config": [*pinsyncd, "check-config", "-c", str(config)],
        }
        results = {name: cpu_seconds(command, env, runs) for name, command in commands.items()}
    print(table("start-up CPU seconds (median)", ["command", "cpu_s"], list(results.items())))
    emit("startup", args.quick, {"runs": runs, "cpu_s": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
