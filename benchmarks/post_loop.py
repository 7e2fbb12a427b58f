"""The baselines pinsyncd's throughput is compared with: a bare aiohttp loop that only POSTs
`{"cid", "name"}` to /pins (no state, no planning, no parsing of the answers) with a given
concurrency, and, at concurrency 1, the naive sequential loop. Run as its own process so that
its wall time includes an interpreter start, like pinsyncd's.

    python -m benchmarks.post_loop --url http://127.0.0.1:PORT --pins 10000 --concurrency 8

prints `{"seconds": S, "sent": N, "errors": E}` (S: the POST phase alone).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Sequence

import aiohttp

from benchmarks.servers import TOKEN
from tests.fake_kubo import generated_cid


async def post_all(url: str, cids: Sequence[str], concurrency: int, token: str) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {token}"}
    errors = 0
    next_index = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal errors, next_index
        while next_index < len(cids):
            index = next_index
            next_index += 1
            body = {"cid": cids[index], "name": f"pin-{index}"}
            async with session.post(f"{url}/pins", json=body, headers=headers) as response:
                await response.read()
                if response.status != 202:
                    errors += 1

    started = time.monotonic()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return {"seconds": time.monotonic() - started, "sent": len(cids), "errors": errors}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.post_loop", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--url", required=True, help="the service endpoint (without /pins)")
    parser.add_argument("--pins", type=int, required=True)
    parser.add_argument("--start", type=int, default=0, help="first CID index")
    parser.add_argument("--seed", default="bench")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--token", default=TOKEN)
    args = parser.parse_args(argv)
    cids = [generated_cid(i, args.seed) for i in range(args.start, args.start + args.pins)]
    result = asyncio.run(post_all(args.url.rstrip("/"), cids, args.concurrency, args.token))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
