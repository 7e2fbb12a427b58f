"""Micro-benchmarks of the per-pin costs that the cycle profiles point at: reading the node's
pinset (`LocalNode.iter_pins` against tests.fake_kubo in another process), CID parsing
(`pinsyncd.cids`), validating a page of 1000 pin statuses (pydantic), and turning a state row
into a `RemotePin`. CPU microseconds per item; run before and after a change.

    .venv/bin/python -m benchmarks.micro [--pins 100000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import timeit
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.harness import BenchServers, emit, table


def per_call(func: Callable[[], object], budget: float) -> float:
    """CPU microseconds per call, best of 3 runs of about `budget` seconds each."""
    timer = timeit.Timer(func, timer=time.process_time)
    number = 1
    while timer.timeit(number) < budget / 3 and number < 10**7:  # Timer.autorange, scaled
        number *= 4
    return min(timer.repeat(3, number)) / number * 1e6


async def _list_node(url: str, batches: bool) -> tuple[int, float]:
    from pinsyncd.kubo import LocalNode

    async with LocalNode(url) as node:
        started = time.process_time()
        if batches and hasattr(node, "iter_pin_batches"):
            listed: dict[str, str] = {}
            async for batch in node.iter_pin_batches():
                listed.update((pin.cid, pin.name) for pin in batch)
        else:
            listed = {pin.cid: pin.name async for pin in node.iter_pins()}
        return len(listed), time.process_time() - started


async def _adds_cpu(url: str, adds: int, concurrency: int, client_kind: str) -> float:
    """CPU µs per add at `concurrency`: a bare aiohttp POST, or PinningServiceClient.add_pin
    (its headers, throttle, counters, JSON body and the validation of the answer)."""
    import aiohttp

    from benchmarks.servers import TOKEN
    from pinsyncd.psa import Pin, PinningServiceClient
    from pinsyncd.tokens import Secret
    from tests.fake_kubo import generated_cid

    cids = [generated_cid(i, client_kind) for i in range(adds)]
    queue = list(reversed(cids))
    client = PinningServiceClient("micro", url, Secret(TOKEN, "micro"), connections=concurrency)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency))
    headers = {"Authorization": f"Bearer {TOKEN}"}

    async def worker() -> None:
        while queue:
            cid = queue.pop()
            if client_kind == "bare":
                body = {"cid": cid, "name": cid}
                async with session.post(f"{url}/pins", json=body, headers=headers) as response:
                    await response.read()
            else:
                meta = {"app_id": "8541372b-2ac2-4ba6-88a8-d93f4c524155"}
                await client.add_pin(Pin(cid=cid, name=cid, meta=meta))

    try:
        started = time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return (time.process_time() - started) / adds * 1e6
    finally:
        await client.close()
        await session.close()


def measure(pins: int, budget: float) -> dict[str, Any]:
    from multiformats import CID, multihash

    from pinsyncd import cids
    from pinsyncd.model import RemotePin
    from pinsyncd.psa.models import PinResults
    from pinsyncd.store.schema import remote_from_row, row_from_remote

    results: dict[str, Any] = {"pins": pins}
    with BenchServers(kubo_pins=pins) as servers:
        for label, batches in (("iter_pins", False), ("iter_pin_batches", True)):
            listings = [asyncio.run(_list_node(servers.kubo_url, batches)) for _ in range(3)]
            count, cpu = min(listings, key=lambda item: item[1])
            assert count == pins, (count, pins)
            results[f"kubo_listing_{label}_us_per_pin"] = round(cpu / pins * 1e6, 3)
        adds = max(500, pins // 20)
        for kind in ("bare", "client", "bare", "client"):  # interleaved, best of two
            cpu_us = asyncio.run(_adds_cpu(servers.psa_url, adds, 8, kind))
            key = f"add_cpu_us_{'bare_aiohttp' if kind == 'bare' else 'psa_client'}"
            results[key] = round(min(cpu_us, results.get(key, cpu_us)), 1)

    digest = multihash.digest(b"pinsyncd", "sha2-256")
    samples = {
        "v0": str(CID("base58btc", 0, "dag-pb", digest)),
        "v1_raw_base32": str(CID("base32", 1, "raw", digest)),
        "v1_dag_pb_base32": str(CID("base32", 1, "dag-pb", digest)),
        "v1_base36": CID("base32", 1, "raw", digest).encode("base36"),
    }
    for label, text in samples.items():
        results[f"multihash_of_{label}_us"] = round(
            per_call(lambda t=text: cids.multihash_of(t), budget), 3
        )
        results[f"cid_forms_{label}_us"] = round(
            per_call(lambda t=text: cids.cid_forms(t), budget), 3
        )

    page = {
        "count": 1000,
        "results": [
            {
                "requestid": f"{i:032x}",
                "status": "pinned",
                "created": "2024-05-01T12:00:00.123456Z",
                "pin": {"cid": samples["v1_raw_base32"], "name": f"pin-{i}", "meta": {"a": "b"}},
                "delegates": [
                    "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWGBoSpdSqfj8YYGCBkNPjRgyJyymfmx3h"
                ],
                "info": {},
            }
            for i in range(1000)
        ],
    }
    payload = json.dumps(page).encode()
    results["pinstatus_validate_us_per_pin"] = round(
        per_call(lambda: PinResults.model_validate_json(payload), budget) / 1000, 3
    )
    row = row_from_remote(
        RemotePin("bench", samples["v1_raw_base32"], _pinned(), "a" * 32, "2024", "pin-1")
    )
    results["remote_pin_from_row_us"] = round(per_call(lambda: remote_from_row(row), budget), 3)
    return results


def _pinned() -> Any:
    from pinsyncd.model import RemoteStatus

    return RemoteStatus.PINNED


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.micro", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--pins", type=int, default=None, help="node pinset (default 100000)")
    parser.add_argument("--quick", action="store_true", help="a small pinset, for the smoke test")
    args = parser.parse_args(argv)
    pins = args.pins or (2000 if args.quick else 100_000)
    result = measure(pins, 0.01 if args.quick else 0.3)
    rows = [[key, value] for key, value in result.items() if key != "pins"]
    print(table(f"CPU µs per item (node pinset of {pins})", ["measure", "µs"], rows))
    emit("micro", args.quick, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
