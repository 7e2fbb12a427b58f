"""`pinsyncd serve` under load: N pin requests (default 10,000) sent at concurrency 8 to the
real `pinsyncd serve` process, whose node is our fake Kubo (in a process of its own, pins at
once), then listed.

Measured: adds per second and their latency (p50, p95), the time until all N are `pinned`
(the pinner's throughput), Kubo RPC calls per pin, the serve process's CPU per add and its
peak RSS, and the latency of listing: the first page (10), a page of 1000, a name search
(`ipartial`) and a `cid` lookup, each the median of 5.

    .venv/bin/python -m benchmarks.serve [--pins 10000] [--concurrency 8] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.harness import ROOT, BenchServers, _http_json, emit, table
from tests.cluster_peer import free_port
from tests.fake_kubo import generated_cid

TOKEN = "serve-bench-token"


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def send_adds(url: str, pins: int, concurrency: int) -> tuple[float, list[float]]:
    """POST N pins at `concurrency`; (seconds, each add's latency)."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    latencies: list[float] = []
    queue = iter(range(pins))
    async with aiohttp.ClientSession(headers=headers) as session:

        async def worker() -> None:
            for index in queue:
                body = {"cid": generated_cid(index, "serve-bench"), "name": f"file-{index}"}
                started = time.perf_counter()
                async with session.post(f"{url}/pins", json=body) as response:
                    await response.read()
                    assert response.status == 202, response.status
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started, latencies


async def until_pinned(url: str, pins: int, within: float) -> float:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    started = time.perf_counter()
    async with aiohttp.ClientSession(headers=headers) as session:
        while time.perf_counter() - started < within:
            async with session.get(f"{url}/pins?status=pinned&limit=1") as response:
                if (await response.json())["count"] >= pins:
                    return time.perf_counter() - started
            await asyncio.sleep(0.05)
    raise TimeoutError(f"not all {pins} pinned within {within:g}s")


async def list_latency(url: str, query: str) -> float:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    times = []
    async with aiohttp.ClientSession(headers=headers) as session:
        for _ in range(5):
            started = time.perf_counter()
            async with session.get(f"{url}/pins?{query}") as response:
                await response.read()
                assert response.status == 200
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("pinsyncd serve exited")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError("pinsyncd serve did not become healthy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pins", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    pins = 300 if args.quick else args.pins
    with BenchServers() as peers, tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        (work / "token").write_text(TOKEN)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        config = work / "serve.yaml"
        config.write_text(
            f"node:\n  api: {peers.kubo_url}\n"
            f"serve:\n  listen: 127.0.0.1:{port}\n  state: serve.db\n"
            f"  users:\n    - name: bench\n      token_file: token\n"
        )
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pinsyncd",
                "serve",
                "-c",
                str(config),
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_healthy(url, process)
            peers.reset()
            cpu_before = proc_cpu(process.pid)
            seconds, latencies = asyncio.run(send_adds(url, pins, args.concurrency))
            cpu_adds = proc_cpu(process.pid) - cpu_before
            pinned_after = asyncio.run(until_pinned(url, pins, within=600))
            cpu_all = proc_cpu(process.pid) - cpu_before
            kubo: dict[str, Any] = _http_json(f"{peers.control}/stats")["kubo"]
            lists = {
                "first page (10)": asyncio.run(list_latency(url, "")),
                "page of 1000": asyncio.run(list_latency(url, "limit=1000")),
                "name ipartial": asyncio.run(list_latency(url, "name=LE-12&match=ipartial")),
                "cid lookup": asyncio.run(
                    list_latency(url, f"cid={generated_cid(pins // 2, 'serve-bench')}")
                ),
            }
            rss = peak_rss_mib(process.pid)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
    ordered = sorted(latencies)
    results: dict[str, Any] = {
        "pins": pins,
        "concurrency": args.concurrency,
        "adds_per_second": round(pins / seconds, 1),
        "add_p50_ms": round(ordered[len(ordered) // 2] * 1000, 2),
        "add_p95_ms": round(ordered[int(len(ordered) * 0.95)] * 1000, 2),
        "all_pinned_seconds_after_adds": round(pinned_after, 3),
        "kubo_calls_per_pin": {k: round(v / pins, 3) for k, v in sorted(kubo.items())},
        "serve_cpu_ms_per_add": round(cpu_adds / pins * 1000, 3),
        "serve_cpu_ms_per_pin_in_all": round(cpu_all / pins * 1000, 3),
        "serve_peak_rss_mib": round(rss, 1),
        "list_ms": {k: round(v * 1000, 2) for k, v in lists.items()},
    }
    rows = [
        ["adds per second", results["adds_per_second"]],
        ["add latency p50 / p95 (ms)", f"{results['add_p50_ms']} / {results['add_p95_ms']}"],
        ["all pinned, s after the last add", results["all_pinned_seconds_after_adds"]],
        ["serve CPU per add (ms)", results["serve_cpu_ms_per_add"]],
        ["serve CPU per pin, adds and pinning (ms)", results["serve_cpu_ms_per_pin_in_all"]],
        ["serve peak RSS (MiB)", results["serve_peak_rss_mib"]],
        *[[f"Kubo {k} per pin", v] for k, v in results["kubo_calls_per_pin"].items()],
        *[[f"list: {k} (ms, median of 5)", v] for k, v in results["list_ms"].items()],
    ]
    print(table(f"pinsyncd serve, {pins:,} pins, concurrency {args.concurrency}", ["", ""], rows))
    emit("serve", args.quick, results)


if __name__ == "__main__":
    main()
