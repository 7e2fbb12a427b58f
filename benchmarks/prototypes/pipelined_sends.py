"""(Done: `ServiceExecutor._send_all` now works this way, so the `executor` variant below
measures the pipelined executor; `batched` still rebuilds the old structure.)

Prototype for the throughput miss: the executor sent adds in batches of 128 with a barrier
between them (commit 128 intents, send them, wait for the last answer, commit 128 results),
so the connections idled while SQLite works and while the batch's slowest requests finish.
The prototype keeps every rule (an intent is committed before its add is sent; results are
committed in groups) but overlaps the three: intents are committed a block ahead, `C`
workers send without a barrier, results are committed in groups as they come.

Three variants, each against a fresh tests.fake_psa (in another process) with a fresh state,
in-process, interleaved:
- `executor`: the real `SyncEngine.cycle()` sending N adds;
- `batched`: the executor's structure rebuilt from the same pieces (real client, real
  `StateStore.save`, `RemotePin` rows), to show the structure alone explains the gap;
- `pipelined`: the prototype.
The rate that matters is the POST phase, first to last add as the server saw it. With
`--latency 0.02` the service answers 20 ms late, as a remote one does: the barrier costs
most there, since the connections then wait on the network, not on the CPU.

    .venv/bin/python -m benchmarks.prototypes.pipelined_sends [--pins 10000] [--latency 0.02]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    SERVICE,
    TOKEN,
    BenchServers,
    emit,
    engine_for,
    table,
    write_config,
)
from tests.fake_kubo import generated_cid

BATCH = 128  # what the executor uses at concurrency 8: max(64, 16 * concurrency)


async def _pieces(config: Path) -> tuple[Any, Any]:
    from pinsyncd.config import load_config
    from pinsyncd.psa import PinningServiceClient
    from pinsyncd.state import StateStore
    from pinsyncd.tokens import Secret

    cfg = load_config(config)
    store = await StateStore.open(cfg.state_path)
    service = cfg.services[0]
    client = PinningServiceClient(
        SERVICE,
        service.endpoint,
        Secret(TOKEN, "bench"),
        connections=service.concurrency + 2,
    )
    return store, client


def _intent(cid: str, name: str) -> Any:
    from pinsyncd.state import RemotePin, RemoteStatus

    return RemotePin(SERVICE, cid, RemoteStatus.INTENT).evolve(name=name, attempts=1)


async def _send(client: Any, intent: Any) -> Any:
    from pinsyncd.executor import _apply_status
    from pinsyncd.ownership import APP_ID
    from pinsyncd.psa import Pin

    pin = Pin(cid=intent.cid, name=intent.name, meta={"app_id": APP_ID})
    status = await client.add_pin(pin)
    return _apply_status(intent, status).evolve(last_error=None)


async def batched(config: Path, items: list[tuple[str, str]], concurrency: int) -> None:
    store, client = await _pieces(config)
    limit = asyncio.Semaphore(concurrency)

    async def one(intent: Any) -> Any:
        async with limit:
            return await _send(client, intent)

    try:
        for start in range(0, len(items), BATCH):
            intents = [_intent(cid, name) for cid, name in items[start : start + BATCH]]
            await store.save(intents)
            results = await asyncio.gather(*(one(i) for i in intents))
            await store.save(results)
    finally:
        await client.close()
        await store.close()


async def pipelined(config: Path, items: list[tuple[str, str]], concurrency: int) -> None:
    store, client = await _pieces(config)
    ready: asyncio.Queue[Any] = asyncio.Queue(maxsize=2 * BATCH)  # committed intents
    done: list[Any] = []

    async def commit_intents() -> None:
        for start in range(0, len(items), BATCH):
            intents = [_intent(cid, name) for cid, name in items[start : start + BATCH]]
            await store.save(intents)  # committed before any of them is sent
            for intent in intents:
                await ready.put(intent)
        for _ in range(concurrency):
            await ready.put(None)

    async def worker() -> None:
        while (intent := await ready.get()) is not None:
            done.append(await _send(client, intent))

    async def commit_results(workers: asyncio.Future[Any]) -> None:
        last = time.monotonic()
        while not workers.done() or done:
            due = workers.done() or time.monotonic() - last > 0.05
            if len(done) >= BATCH or (done and due):
                rows, done[:] = list(done), []
                await store.save(rows)
                last = time.monotonic()
            else:
                await asyncio.sleep(0.002)

    try:
        workers = asyncio.gather(*(worker() for _ in range(concurrency)))
        await asyncio.gather(commit_intents(), workers, commit_results(workers))
    finally:
        await client.close()
        await store.close()


async def executor(config: Path, items: list[tuple[str, str]], concurrency: int) -> None:
    async with engine_for(config) as engine:
        report = await engine.cycle()
        assert report.services[SERVICE].added == len(items), report


VARIANTS = {"executor": executor, "batched": batched, "pipelined": pipelined}


def run_once(variant: str, pins: int, concurrency: int, latency: float) -> dict[str, Any]:
    items = [(generated_cid(i, "bench"), f"pin-{i}") for i in range(pins)]
    with (
        BenchServers(kubo_pins=pins, latency=latency) as servers,
        tempfile.TemporaryDirectory(prefix="pinsyncd-proto-") as tmp,
    ):
        config = write_config(
            Path(tmp), node_api=servers.kubo_url, endpoint=servers.psa_url, concurrency=concurrency
        )
        cpu, started = time.process_time(), time.monotonic()
        asyncio.run(VARIANTS[variant](config, items, concurrency))
        wall, cpu = time.monotonic() - started, time.process_time() - cpu
        stats = servers.stats()
    if stats.psa["add"] != pins:
        raise RuntimeError(f"{variant}: {stats.psa['add']} adds for {pins} pins")
    return {
        "wall_seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 3),
        "post_phase_seconds": round(stats.add_span, 3),
        "post_phase_rate": round((pins - 1) / stats.add_span, 1) if stats.add_span else None,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.prototypes.pipelined_sends",
        description=(__doc__ or "").split("\n")[0],
    )
    parser.add_argument("--pins", type=int, default=None, help="default 10000; quick 300")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--latency", type=float, default=0.0, help="seconds the service waits per request"
    )
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    pins = args.pins or (300 if args.quick else 10_000)
    rounds = 1 if args.quick else args.rounds
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    for round_ in range(rounds):
        order = list(VARIANTS) if round_ % 2 == 0 else list(reversed(VARIANTS))
        for variant in order:
            runs[variant].append(run_once(variant, pins, args.concurrency, args.latency))
    summary = {
        v: {
            "post_phase_rate": statistics.median(r["post_phase_rate"] or 0 for r in rs),
            "wall_seconds": statistics.median(r["wall_seconds"] for r in rs),
            "cpu_seconds": statistics.median(r["cpu_seconds"] for r in rs),
        }
        for v, rs in runs.items()
    }
    rows = [
        [v, s["post_phase_rate"], s["wall_seconds"], s["cpu_seconds"]] for v, s in summary.items()
    ]
    title = (
        f"{pins} adds at concurrency {args.concurrency}, service latency {args.latency * 1000:g} "
        f"ms, median of {rounds} interleaved rounds"
    )
    print(table(title, ["variant", "POST-phase adds/s", "wall s", "CPU s"], rows))
    record = {"pins": pins, "latency": args.latency, "summary": summary, "runs": runs}
    emit("prototype_pipelined_sends", args.quick, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
