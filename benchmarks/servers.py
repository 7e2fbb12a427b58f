"""The loopback peers of a benchmark, in a process of their own so that their CPU is never
counted as pinsyncd's: our Kubo RPC server (`tests.fake_kubo`), our spec-faithful Pinning
Service (`tests.fake_psa`) and a small control API to seed them and read their counters.

    python -m benchmarks.servers --kubo-pins 100000 --psa-pins 100000 --psa-status pinned

prints `{"port": CONTROL, "kubo": PORT, "psa": PORT}` once everything listens on 127.0.0.1.
The control API: `GET /stats` (requests by operation, Kubo RPC calls, this process's CPU),
`POST /reset` (zero the counters), `POST /psa/seed {"count", "seed", "start", "status"}`
(store pins on the service without HTTP), `POST /kubo {"pins", "seed"}` (change the pinset).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from tests.fake_kubo import FakeKubo, generated_cid
from tests.fake_psa import FakePinningService, Fault

TOKEN = "bench-token"


class BenchPeers:
    """A FakeKubo and a FakePinningService, plus the control API that drives them."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.kubo = FakeKubo(pins=args.kubo_pins, seed=args.seed)
        self.psa = FakePinningService(
            TOKEN,
            transition_after=args.transition_after,
            order=args.order,
            count_mode=args.count_mode,
        )
        if args.psa_pins:
            self.seed_psa(args.psa_pins, args.seed, 0, args.psa_status)
        if args.latency:  # every request waits this long before it is served: a far service
            self.psa.inject(Fault("slow", delay=args.latency), times=None)
        self._runner: web.AppRunner | None = None
        self.port = 0

    def seed_psa(self, count: int, seed: str, start: int, status: str | None) -> int:
        cids = (generated_cid(i, seed) for i in range(start, start + count))
        return self.psa.seed(cids, status=status, name_prefix=f"pin-{start}")

    async def start(self) -> None:
        await self.kubo.come_back()
        await self.psa.start()
        self.kubo.encoded_stream(True)  # encode the pinset now, not during the first listing
        app = web.Application()
        app.router.add_get("/stats", self._stats)
        app.router.add_post("/reset", self._reset)
        app.router.add_post("/psa/seed", self._seed)
        app.router.add_post("/kubo", self._set_kubo)
        app.router.add_post("/psa/force", self._force)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = runner.addresses[0][1]
        self._runner = runner

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.psa.stop()
        await self.kubo.go_offline()

    def stats(self) -> dict[str, Any]:
        adds = [r.time for r in self.psa.requests if r.method == "POST" and r.path == "/pins"]
        return {
            "psa": self.psa.request_counts(),
            "psa_add_span": (adds[-1] - adds[0]) if len(adds) > 1 else 0.0,
            "psa_last_add_at": adds[-1] if adds else None,  # time.monotonic(), system-wide
            "psa_pins": self.psa.pin_count,
            "kubo": dict(self.kubo.calls),
            "cpu": time.process_time(),
        }

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _reset(self, request: web.Request) -> web.Response:
        self.psa.requests.clear()
        self.kubo.calls.clear()
        return web.json_response({})

    async def _seed(self, request: web.Request) -> web.Response:
        body = await request.json()
        stored = self.seed_psa(
            int(body["count"]),
            str(body.get("seed", "bench")),
            int(body.get("start", 0)),
            body.get("status"),
        )
        return web.json_response({"stored": stored})

    async def _force(self, request: web.Request) -> web.Response:
        """Every stored pin takes `status` (e.g. all pinned, as after a backup completes)."""
        status = str((await request.json())["status"])
        forced = 0
        for rec in self.psa._live():
            self.psa._force(rec, status, None)
            forced += 1
        return web.json_response({"forced": forced})

    async def _set_kubo(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.kubo.pins = int(body.get("pins", self.kubo.pins))
        self.kubo.seed = str(body.get("seed", self.kubo.seed))
        self.kubo.encoded_stream(True)
        return web.json_response({"pins": self.kubo.pins})


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.servers", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--kubo-pins", type=int, default=0)
    parser.add_argument("--seed", default="bench", help="CIDs are generated_cid(i, SEED)")
    parser.add_argument("--psa-pins", type=int, default=0, help="pins the service holds at start")
    parser.add_argument("--psa-status", default=None, help="their status (default: transitions)")
    parser.add_argument("--transition-after", type=float, default=None)
    parser.add_argument("--order", choices=("newest_first", "oldest_first"), default="newest_first")
    parser.add_argument("--count-mode", choices=("total", "page"), default="total")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added per request")
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    peers = BenchPeers(args)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, done.set)
    await peers.start()
    try:
        ports = {"port": peers.port, "kubo": peers.kubo.port, "psa": peers.psa.port}
        print(json.dumps(ports), flush=True)
        await done.wait()
    finally:
        await peers.stop()


def main(argv: Sequence[str] | None = None) -> None:
    asyncio.run(_serve(_parse_args(argv)))


if __name__ == "__main__":
    main()
