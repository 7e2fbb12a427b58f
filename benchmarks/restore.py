"""Restore: `pinsyncd restore` bringing N pins back onto a fresh real Kubo node over real
bitswap. A real Kubo ("the service's node") holds the data; our fake Pinning Service lists a
`pinned` request for each CID with that node as its delegate, as a service would. Measured:
wall time, pinsyncd's CPU and peak RSS, requests to the service per CID, and the bytes and
blocks Kubo received (its `bitswap/stat`). The RPC calls to the node are, by construction,
`id` + one `pin/ls` + one `pin/add` per CID + one `swarm/connect` per delegate a minute.

    .venv/bin/python -m benchmarks.restore [--pins 500] [--size 65536] [--parallel 4] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.harness import TOKEN_ENV, emit, pinsyncd_env, run_measured, table
from pinsyncd.ownership import APP_ID
from tests.fake_psa import FakePinningService
from tests.peers import KuboNode

TOKEN = "restore-bench-token"
OLD_NODE = "12D3KooWBenchmarkBenchmarkBenchmarkBenchmarkBenchmarkBench"


class ServiceThread:
    """The fake service on its own event loop in a thread, so that a blocking measurement
    of the pinsyncd subprocess in the main thread does not stop it answering."""

    def __init__(self, delegates: Sequence[str]) -> None:
        self.service = FakePinningService(token=TOKEN, delegates=delegates)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> FakePinningService:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.service.start(), self._loop).result(30)
        return self.service

    def __exit__(self, *exc_info: object) -> None:
        asyncio.run_coroutine_threadsafe(self.service.stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def add_files(node: KuboNode, folder: Path, pins: int, size: int) -> list[str]:
    """`pins` files of `size` random bytes, added to `node` (unpinned there: its blockstore
    is the service's copy); their CIDs."""
    folder.mkdir()
    for index in range(pins):
        (folder / f"file-{index:06d}.bin").write_bytes(os.urandom(size))
    out = node.cli("add", "-r", "-q", "--pin=false", str(folder))
    return out.splitlines()[:-1]  # the last line is the folder


def measure(pins: int, size: int, parallel: int, work: Path) -> dict[str, Any]:
    source = KuboNode(work / "source")
    target = KuboNode(work / "target")
    source.start()
    target.start()
    try:
        cids = add_files(source, work / "files", pins, size)
        delegates = list(source.rpc("id")["Addresses"])
        with ServiceThread(delegates) as service:
            for index, cid in enumerate(cids):
                meta = {"app_id": APP_ID, "node": OLD_NODE, "local_name": f"file-{index}"}
                service.add_pin(cid, name=f"file-{index}", meta=meta, status="pinned")
            config = work / "config.yaml"
            config.write_text(
                f"node:\n  api: {target.api_url}\nstate:\n  path: {work / 'state.db'}\n"
                f"services:\n  - name: bench\n    endpoint: {service.url}\n"
                f"    token_env: {TOKEN_ENV}\n"
            )
            env = pinsyncd_env() | {TOKEN_ENV: TOKEN}
            before = target.rpc("bitswap/stat")
            run = run_measured(
                [
                    *(sys.executable, "-m", "pinsyncd", "restore", "--from-peer", OLD_NODE),
                    *("--parallel", str(parallel), "-c", str(config), "--log-format", "json"),
                ],
                env=env,
            )
            if run.returncode != 0:
                raise RuntimeError(f"restore exited {run.returncode}: {run.stdout}{run.stderr}")
            after = target.rpc("bitswap/stat")
            requests = sum(service.request_counts().values())
    finally:
        source.stop()
        target.stop()
    received = after["DataReceived"] - before["DataReceived"]
    return {
        "pins": pins,
        "file_bytes": size,
        "parallel": parallel,
        "wall_s": round(run.wall, 2),
        "cpu_s": round(run.cpu, 2),
        "max_rss_mb": round(run.max_rss_mb, 1),
        "pins_per_s": round(pins / run.wall, 1),
        "mb_received": round(received / 1e6, 2),
        "blocks_received": after["BlocksReceived"] - before["BlocksReceived"],
        "service_requests": requests,
        "service_requests_per_pin": round(requests / pins, 4),
        "cpu_ms_per_pin": round(1000 * run.cpu / pins, 2),
        "summary": run.stdout.strip().splitlines()[0],
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--pins", type=int, default=500)
    parser.add_argument("--size", type=int, default=64 * 1024)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="50 pins")
    args = parser.parse_args(argv)
    pins = 50 if args.quick else args.pins
    with tempfile.TemporaryDirectory(prefix="pinsyncd-restore-bench-") as tmp:
        result = measure(pins, args.size, args.parallel, Path(tmp))
    keys = [k for k in result if k != "summary"]
    print(table("restore", keys, [[result[k] for k in keys]]))
    print(result["summary"])
    emit("restore", args.quick, result)


if __name__ == "__main__":
    main()
