"""Where a cycle's time and memory go: one `SyncEngine.cycle()` of the real engine, in this
process, under cProfile (time) or tracemalloc (memory), with the peers in another process.

    .venv/bin/python -m benchmarks.profile_cycle --pins 100000 --cycle idle
    .venv/bin/python -m benchmarks.profile_cycle --pins 1000000 --cycle idle --memory
    .venv/bin/python -m benchmarks.profile_cycle --pins 10000 --cycle adds

`--cycle idle`: N pins on the node, all pinned on the service and adopted beforehand (by a
`pinsyncd sync --once` subprocess); the profiled cycle changes nothing. `first`: the same
pins, fresh state: the cycle adopts them all. `adds`: an empty service: the cycle sends N adds.

Time: the functions with the most own time and the most cumulative time, each as a share of
the cycle. Memory: tracemalloc's peak, and the allocation sites alive at the fullest of a
few probe points (after the local pinset is read from the state, after the remote rows are
read, after each save of rows, after the plan is made), grouped by line.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    BenchServers,
    engine_for,
    pinsyncd_env,
    run_measured,
    run_pinsyncd,
    write_config,
)


def _servers(pins: int, cycle: str) -> BenchServers:
    if cycle == "adds":
        return BenchServers(kubo_pins=pins)
    return BenchServers(kubo_pins=pins, psa_pins=pins, psa_status="pinned")


class MemoryProbes:
    """Snapshots taken right after chosen functions return; keeps the largest."""

    def __init__(self) -> None:
        self.best: tracemalloc.Snapshot | None = None
        self.best_size = 0
        self.best_where = ""
        self._undo: list[Callable[[], None]] = []

    def wrap(self, owner: Any, name: str) -> None:
        original = getattr(owner, name)
        probes = self

        if asyncio.iscoroutinefunction(original):

            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                result = await original(*args, **kwargs)
                probes.take(f"{owner.__name__}.{name}")
                return result

            setattr(owner, name, async_wrapper)
        else:

            def wrapper(*args: Any, **kwargs: Any) -> Any:
                result = original(*args, **kwargs)
                probes.take(f"{owner.__name__}.{name}")
                return result

            setattr(owner, name, wrapper)
        self._undo.append(lambda: setattr(owner, name, original))

    def take(self, where: str) -> None:
        size = tracemalloc.get_traced_memory()[0]
        if size > self.best_size:
            self.best, self.best_size, self.best_where = tracemalloc.take_snapshot(), size, where

    def restore(self) -> None:
        for undo in reversed(self._undo):
            undo()


async def _profiled_cycle(config: Path, memory: bool, top: int) -> str:
    from pinsyncd import store as state
    from pinsyncd.sync import service as executor

    async with engine_for(config) as engine:
        out = io.StringIO()
        if memory:
            probes = MemoryProbes()
            probes.wrap(state.StateStore, "local_pins")
            probes.wrap(state.StateStore, "remote_pins")
            probes.wrap(state.StateStore, "save")
            probes.wrap(executor, "plan_service")
            tracemalloc.start(1)
            try:
                started = time.monotonic()
                await engine.cycle()
                elapsed = time.monotonic() - started
                current, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
                probes.restore()
            print(
                f"cycle {elapsed:.2f}s under tracemalloc; traced peak {peak / 2**20:.1f} MiB, "
                f"at the end {current / 2**20:.1f} MiB",
                file=out,
            )
            if probes.best is not None:
                stats = probes.best.statistics("lineno")
                total = sum(s.size for s in stats)
                print(
                    f"alive after {probes.best_where}: {total / 2**20:.1f} MiB; top sites:",
                    file=out,
                )
                for s in stats[:top]:
                    frame = s.traceback[0]
                    print(
                        f"  {s.size / 2**20:8.1f} MiB {100 * s.size / total:5.1f}% "
                        f"{s.count:>9} blocks  {_short(frame.filename)}:{frame.lineno}",
                        file=out,
                    )
            return out.getvalue()
        profiler = cProfile.Profile()
        started = time.monotonic()
        profiler.enable()
        await engine.cycle()
        profiler.disable()
        elapsed = time.monotonic() - started
        stats = pstats.Stats(profiler)
        total = sum(row[2] for row in stats.stats.values())  # type: ignore[attr-defined]
        print(f"cycle {elapsed:.2f}s under cProfile; {total:.2f}s of own time", file=out)
        for key, label in (("tottime", "own time"), ("cumtime", "cumulative time")):
            print(f"\ntop {top} by {label} (share of the cycle's own time):", file=out)
            rows = sorted(
                stats.stats.items(),  # type: ignore[attr-defined]
                key=lambda item: item[1][2 if key == "tottime" else 3],
                reverse=True,
            )
            for (filename, line, func), (_cc, calls, own, cumulative, _callers) in rows[:top]:
                value = own if key == "tottime" else cumulative
                print(
                    f"  {value:7.3f}s {100 * value / total:5.1f}% {calls:>9} calls  "
                    f"{_short(filename)}:{line}({func})",
                    file=out,
                )
        return out.getvalue()


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/pinsyncd/", "/lib/python3"):
        if marker in filename:
            tail = filename.partition(marker)[2]
            return (marker.strip("/") + "/" if marker == "/pinsyncd/" else "") + tail
    return filename


def profile(pins: int, cycle: str, memory: bool, top: int, py_spy: bool = False) -> str:
    with _servers(pins, cycle) as servers, tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp), node_api=servers.kubo_url, endpoint=servers.psa_url)
        if cycle == "idle":
            run_pinsyncd(["sync", "--once"], config).check("adoption")
        if py_spy:
            return _py_spy(config, Path(tmp) / "stacks.txt", top)
        return asyncio.run(_profiled_cycle(config, memory, top))


def _py_spy(config: Path, stacks: Path, top: int) -> str:
    """`pinsyncd sync --once` as a subprocess under py-spy (a sampling profiler: no
    per-call overhead, every thread, the start-up included); summed by function."""
    argv = [str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw"]
    argv += ["--rate", "250", "--output", str(stacks), "--"]
    argv += [sys.executable, "-m", "pinsyncd", "sync", "--once", "-c", str(config)]
    argv += ["--log-format", "json"]
    run = run_measured(argv, env=pinsyncd_env())
    run.check("py-spy record")
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in stacks.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";")]
        total += count
        threads[frames[0]] += count
        own[frames[-1]] += count
        for frame in set(frames[1:]):
            inclusive[frame] += count
    out = io.StringIO()
    print(f"{total} samples at 250/s ({total / 250:.2f} s of CPU), wall {run.wall:.2f}s", file=out)
    print("by thread:", file=out)
    for name, count in threads.most_common(5):
        print(f"  {100 * count / total:5.1f}%  {name}", file=out)
    for label, counter in (("own", own), ("inclusive", inclusive)):
        print(f"\ntop {top} functions by {label} samples:", file=out)
        for name, count in counter.most_common(top):
            print(f"  {100 * count / total:5.1f}%  {name}", file=out)
    return out.getvalue()


def _frame(text: str) -> str:
    """'func (path/to/file.py:12)' -> 'func (file.py)': lines merged, paths shortened."""
    name, _, where = text.partition(" (")
    filename = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({_short(filename)})" if filename else name


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.profile_cycle", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--pins", type=int, default=100_000)
    parser.add_argument("--cycle", choices=("idle", "first", "adds"), default="idle")
    parser.add_argument("--memory", action="store_true", help="tracemalloc instead of cProfile")
    parser.add_argument(
        "--py-spy", action="store_true", help="sample `pinsyncd sync --once` with py-spy instead"
    )
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    print(f"profile of one {args.cycle} cycle at {args.pins} pins")
    print(profile(args.pins, args.cycle, args.memory, args.top, args.py_spy))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
