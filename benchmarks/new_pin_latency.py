"""Benchmark: the backup window. With the default config and `pinsyncd run` going, how long
from the moment a pin is made on the node (`ipfs add` returns) to the moment its add reaches
the service (the `created` the service gives it)?

Real Kubo (`.peers/bin/ipfs`) holding N pins already backed up, tests.fake_psa in another
process, the daemon as a subprocess with `sync.interval` and `sync.status_interval` left at
their defaults. `--count` new pins are made a random 0-30 s apart, whether or not the
earlier ones were sent yet (so their moments fall anywhere in the daemon's schedule); p50,
p95 and the worst are printed.

    .venv/bin/python -m benchmarks.new_pin_latency [--pins 10000] [--count 20] [--repo DIR]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    TOKEN,
    BenchServers,
    emit,
    kubo_daemon,
    pinsyncd_env,
    run_pinsyncd,
    stop_process,
    table,
    write_config,
)
from benchmarks.node_cost import fill


def created_at(psa_url: str, cid: str) -> float | None:
    """When the service created a request for `cid` (Unix time), None if it has none."""
    url = f"{psa_url}/pins?cid={cid}&status=queued,pinning,pinned,failed"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        results = json.loads(response.read())["results"]
    if not results:
        return None
    text = results[0]["created"].replace("Z", "+00:00")
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()


def add_and_time(
    node: Any, psa_url: str, daemon: subprocess.Popen[bytes], count: int, rng: random.Random
) -> list[float]:
    """Make `count` pins a random 0-30 s apart, whether or not the earlier ones were sent (so
    that when they are made owes nothing to the daemon's schedule); the seconds from each
    `ipfs add` to its request on the service, in the order they were made."""
    added: dict[str, float] = {}
    sent: dict[str, float] = {}
    due = time.time()
    for i in range(count):
        due += rng.uniform(0, 30)
        while time.time() < due:
            _collect(psa_url, added, sent, daemon)
            time.sleep(min(0.2, max(0.0, due - time.time())))
        data = f"new pin {i} {time.time_ns()} {rng.random()}".encode()
        cid = node.cli("add", "-Q", "--cid-version", "1", stdin=data).strip()
        added[cid] = time.time()
    deadline = time.time() + 600
    while len(sent) < count:
        if time.time() > deadline:
            raise RuntimeError(f"{count - len(sent)} pins were not sent within 10 minutes")
        _collect(psa_url, added, sent, daemon)
        time.sleep(0.2)
    return [sent[cid] - at for cid, at in added.items()]


def _collect(
    psa_url: str, added: dict[str, float], sent: dict[str, float], daemon: subprocess.Popen[bytes]
) -> None:
    if daemon.poll() is not None:
        raise RuntimeError(f"pinsyncd run exited {daemon.returncode}")
    for cid, at in added.items():
        if cid not in sent and (created := created_at(psa_url, cid)) is not None:
            sent[cid] = created
            print(f"{cid}: sent {created - at:.1f}s after it was made", flush=True)


def measure(pins: int, count: int, repo: Path, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    servers = BenchServers(transition_after=1.0)  # a new request is pinned a second later
    with kubo_daemon(repo) as node, servers, tempfile.TemporaryDirectory() as tmp:
        fill(node, repo, pins)
        config = write_config(
            Path(tmp),
            node_api=node.api_url,
            endpoint=servers.psa_url,
            interval=None,
            status_interval=None,
        )
        run_pinsyncd(["sync", "--once"], config, timeout=3600).check("first sync")
        servers.force_psa("pinned")  # the backup the new pins are added to is complete...
        wait = ["sync", "--once", "--wait", "--timeout", "30m"]
        run_pinsyncd(wait, config, timeout=3600).check("first sync, pinned")  # ...and known
        argv = [sys.executable, "-m", "pinsyncd", "run", "-c", str(config)]
        argv += ["--log-format", "json"]
        with tempfile.TemporaryFile() as log:
            daemon = subprocess.Popen(argv, env=pinsyncd_env(), stdout=log, stderr=log)
            try:
                time.sleep(5)  # its first listing
                latencies = add_and_time(node, servers.psa_url, daemon, count, rng)
            finally:
                stop_process(daemon)
    ordered = sorted(latencies)
    return {
        "pins": pins,
        "new_pins": count,
        "p50_seconds": round(statistics.median(ordered), 1),
        "p95_seconds": round(ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))], 1),
        "max_seconds": round(ordered[-1], 1),
        "latencies": [round(x, 1) for x in latencies],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.new_pin_latency", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--pins", type=int, default=None, help="pins already there (10000)")
    parser.add_argument("--count", type=int, default=None, help="new pins timed (20)")
    parser.add_argument("--repo", type=Path, default=None, help="keep the Kubo repo here")
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--quick", action="store_true", help="200 pins, 2 new, for the smoke test")
    args = parser.parse_args(argv)
    pins = args.pins or (200 if args.quick else 10_000)
    count = args.count or (2 if args.quick else 20)
    with tempfile.TemporaryDirectory(prefix="pinsyncd-latency-") as tmp:
        r = measure(pins, count, args.repo or Path(tmp) / "kubo", args.seed)
    rows = [["p50", r["p50_seconds"]], ["p95", r["p95_seconds"]], ["worst", r["max_seconds"]]]
    title = f"new local pin -> its add sent: {count} pins, {pins} already there, default config"
    print(table(title, ["", "seconds"], rows))
    emit("new_pin_latency", args.quick, r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
