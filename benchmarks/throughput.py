"""Benchmark 3, throughput: the initial sync of N = 10,000 new pins by `pinsyncd sync --once`
against the npm mock-ipfs-pinning-service, against tests.fake_psa, and against tests.fake_psa
made far away (every request waits 20 ms before it is served, as a service across the
internet would: on loopback a sequential loop is bounded by the server's CPU, not by
latency, so no client can be 10x faster than it there), next to

- a bare aiohttp loop that only POSTs, at the same concurrency (the server's ceiling),
- the naive sequential POST loop (one request at a time, keep-alive),
- what users do today: a shell loop of real Kubo's `ipfs pin remote add --background` per
  CID, against the same service (`ipfs pin remote service add`); timed on a sample of CIDs
  (300 by default) and extrapolated to N, since each call is a process start.

Every contender runs as its own process against a fresh, empty server, one after the other
in the same run, so the ratios hold on a noisy machine. Rates are N / process wall time;
"POST phase" is first-to-last add as the server saw it.

Also counted, server-side, on a service holding the N pins: the list requests of Kubo's
`ipfs pin remote ls --status=queued,pinning,pinned,failed` and of `pinsyncd adopt` (which
lists the whole service once).

Targets (issue 7): pinsyncd >= 0.9x the bare loop's rate; >= 10x the Kubo loop and the
sequential loop.

    .venv/bin/python -m benchmarks.throughput [--pins 10000] [--kubo-sample 300] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from benchmarks.harness import (
    IPFS_BIN,
    SERVICE,
    TOKEN,
    BenchServers,
    NpmMock,
    PeerStats,
    emit,
    kubo_daemon,
    ratio,
    run_measured,
    run_pinsyncd,
    table,
    write_config,
)
from tests.fake_kubo import generated_cid


@dataclass(frozen=True)
class ServerKind:
    """One service to sync against, and how each contender is run on it."""

    name: str
    latency: float = 0.0  # seconds fake_psa waits before serving each request
    concurrency: int = 8
    sequential_pins: int | None = None  # None: all N; else a timed sample, extrapolated
    npm: bool = False


BARE = "bare aiohttp POST loop"
PINSYNCD = "pinsyncd sync --once"
SEQUENTIAL = "naive sequential POST loop"
KUBO = "Kubo `pin remote add` loop"


class Target(Protocol):
    @property
    def psa_url(self) -> str: ...

    def stats(self) -> PeerStats: ...

    def reset(self) -> None: ...


@dataclass
class Timing:
    server: str
    contender: str
    pins: int  # pins timed (a sample for the Kubo loop)
    seconds: float  # process wall time for `pins`
    post_phase: float  # first to last add, server-side
    requests: int
    extrapolated: bool = False

    def rate(self) -> float:
        return self.pins / self.seconds if self.seconds else 0.0

    def post_rate(self) -> float:
        return (self.pins - 1) / self.post_phase if self.post_phase else 0.0


@contextmanager
def fresh(kind: ServerKind, node_pins: int) -> Iterator[tuple[BenchServers, Target]]:
    """A fresh FakeKubo (the node) and a fresh, empty target service."""
    with ExitStack() as stack:
        servers = stack.enter_context(BenchServers(kubo_pins=node_pins, latency=kind.latency))
        target: Target = stack.enter_context(NpmMock()) if kind.npm else servers
        yield servers, target


def post_loop(kind: str, target: Target, pins: int, concurrency: int, name: str) -> Timing:
    run = run_measured(
        [
            sys.executable,
            "-m",
            "benchmarks.post_loop",
            "--url",
            target.psa_url,
            "--pins",
            str(pins),
            "--concurrency",
            str(concurrency),
        ]
    ).check(name)
    stats = target.stats()
    return Timing(kind, name, pins, run.wall, stats.add_span, stats.total)


def pinsyncd_sync(
    kind: str, servers: BenchServers, target: Target, pins: int, concurrency: int, tmp: Path
) -> Timing:
    config = write_config(
        tmp, node_api=servers.kubo_url, endpoint=target.psa_url, concurrency=concurrency
    )
    run = run_pinsyncd(["sync", "--once"], config).check("pinsyncd sync --once")
    stats = target.stats()
    if stats.psa["add"] != pins:
        raise RuntimeError(f"pinsyncd sent {stats.psa['add']} adds for {pins} pins")
    return Timing(kind, PINSYNCD, pins, run.wall, stats.add_span, stats.total)


def kubo_loop(kind: str, target: Target, kubo: Any, service: str, sample: int, tmp: Path) -> Timing:
    kubo.cli("pin", "remote", "service", "add", service, target.psa_url, TOKEN)
    cids = tmp / f"{service}-cids.txt"
    cids.write_text("".join(f"{generated_cid(i, 'bench')}\n" for i in range(sample)))
    script = (
        'while IFS= read -r cid; do "$0" pin remote add --service="$1" --background '
        '--name="$cid" "$cid" >/dev/null || exit 1; done < "$2"'
    )
    run = run_measured(
        ["bash", "-c", script, str(IPFS_BIN), service, str(cids)], env=kubo.env
    ).check("ipfs pin remote add loop")
    stats = target.stats()
    return Timing(kind, KUBO, sample, run.wall, stats.add_span, stats.total, True)


def listing_requests(
    kind: str, servers: BenchServers, target: Target, kubo: Any, service: str, tmp: Path
) -> dict[str, Any]:
    """List requests to read back all pins: Kubo's `pin remote ls` vs `pinsyncd adopt`."""
    kubo.cli("pin", "remote", "service", "add", service, target.psa_url, TOKEN)
    target.reset()
    out = kubo.cli(
        "pin", "remote", "ls", f"--service={service}", "--status=queued,pinning,pinned,failed"
    )
    kubo_stats = target.stats()
    target.reset()
    fresh_state = tmp / "adopt"
    fresh_state.mkdir()
    config = write_config(fresh_state, node_api=servers.kubo_url, endpoint=target.psa_url)
    adopt = run_pinsyncd(["adopt", "--service", SERVICE], config).check("pinsyncd adopt")
    ours = target.stats()
    return {
        "server": kind,
        "pins_on_service": ours.pins,
        "kubo_ls_requests": kubo_stats.total,
        "kubo_ls_pins_listed": len([line for line in out.splitlines() if line.strip()]),
        "pinsyncd_list_requests": ours.psa["list"],
        "pinsyncd_adopt_output": adopt.stdout.strip().splitlines()[-1:],
    }


CONTENDERS = {"bare": BARE, "pinsyncd": PINSYNCD, "sequential": SEQUENTIAL, "kubo": KUBO}


def measure(
    pins: int,
    kinds: Sequence[ServerKind],
    kubo_sample: int,
    rounds: int,
    contenders: Sequence[str] = tuple(CONTENDERS.values()),
) -> dict[str, Any]:
    timings: list[Timing] = []
    listings: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="pinsyncd-bench-") as tmp_name,
        kubo_daemon(Path(tmp_name) / "kubo") as kubo,
    ):
        tmp = Path(tmp_name)
        for round_ in range(rounds):
            for kind in kinds if round_ % 2 == 0 else list(reversed(kinds)):
                name, c = kind.name, kind.concurrency
                tag = f"{name.replace('_', '')}{round_}"
                if BARE in contenders:
                    with fresh(kind, 0) as (_, target):
                        timings.append(post_loop(name, target, pins, c, BARE))
                if PINSYNCD in contenders:
                    with fresh(kind, pins) as (servers, target):
                        work = tmp / f"sync-{tag}"
                        work.mkdir()
                        timings.append(pinsyncd_sync(name, servers, target, pins, c, work))
                        if round_ == 0 and not kind.latency and KUBO in contenders:
                            listings.append(
                                listing_requests(name, servers, target, kubo, f"ls{tag}", work)
                            )
                if SEQUENTIAL in contenders:
                    with fresh(kind, 0) as (_, target):
                        sample = min(pins, kind.sequential_pins or pins)
                        timing = post_loop(name, target, sample, 1, SEQUENTIAL)
                        timing.extrapolated = sample < pins
                        timings.append(timing)
                if KUBO in contenders:
                    with fresh(kind, 0) as (_, target):
                        timings.append(kubo_loop(name, target, kubo, f"add{tag}", kubo_sample, tmp))
    return summarize(pins, kinds, timings, listings)


def summarize(
    pins: int, kinds: Sequence[ServerKind], timings: list[Timing], listings: list[dict[str, Any]]
) -> dict[str, Any]:
    servers: dict[str, Any] = {}
    for kind in kinds:
        mine = [t for t in timings if t.server == kind.name]
        rates: dict[str, float] = {}
        post_rates: dict[str, float] = {}
        for contender in dict.fromkeys(t.contender for t in mine):
            runs = [t for t in mine if t.contender == contender]
            rates[contender] = statistics.median(t.rate() for t in runs)
            post_rates[contender] = statistics.median(t.post_rate() for t in runs)
        ours, bare = rates.get(PINSYNCD, 0.0), rates.get(BARE, 0.0)
        sequential, kubo = rates.get(SEQUENTIAL, 0.0), rates.get(KUBO, 0.0)
        servers[kind.name] = {
            "latency_seconds": kind.latency,
            "concurrency": kind.concurrency,
            "rates": {k: round(v, 1) for k, v in rates.items()},
            "post_phase_rates": {k: round(v, 1) for k, v in post_rates.items()},
            "seconds_for_n": {k: round(pins / v, 2) if v else None for k, v in rates.items()},
            "pinsyncd_vs_bare": ratio(ours, bare),
            "pinsyncd_vs_bare_post_phase": ratio(
                post_rates.get(PINSYNCD, 0.0), post_rates.get(BARE, 0.0)
            ),
            "bare_vs_sequential": ratio(bare, sequential),
            "pinsyncd_vs_sequential": ratio(ours, sequential),
            "pinsyncd_vs_kubo_loop": ratio(ours, kubo),
            "met_bare": ours >= 0.9 * bare if ours and bare else None,
            "met_sequential": ours >= 10 * sequential if ours and sequential else None,
            "met_kubo_loop": ours >= 10 * kubo if ours and kubo else None,
        }
    return {
        "pins": pins,
        "servers": servers,
        "listing": listings,
        "timings": [asdict(t) for t in timings],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.throughput", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--pins", type=int, default=None, help="N (default 10000; quick 200)")
    parser.add_argument("--concurrency", type=int, default=8, help="on the loopback services")
    parser.add_argument("--kubo-sample", type=int, default=None, help="default 300; quick 10")
    parser.add_argument(
        "--far-latency", type=float, default=None, help="seconds per request (default 0.02)"
    )
    parser.add_argument("--far-concurrency", type=int, default=16)
    parser.add_argument("--far-sequential-sample", type=int, default=None, help="default 500")
    parser.add_argument("--rounds", type=int, default=1, help="repeat, alternating the order")
    parser.add_argument(
        "--contenders",
        default=",".join(CONTENDERS),
        help=f"a comma-separated subset of {','.join(CONTENDERS)} (default: all)",
    )
    parser.add_argument(
        "--servers", default="fake_psa,npm_mock,far", help="a subset of fake_psa,npm_mock,far"
    )
    parser.add_argument("--quick", action="store_true", help="a small N, for the smoke test")
    args = parser.parse_args(argv)
    chosen = [c.strip() for c in args.contenders.split(",") if c.strip()]
    unknown = [c for c in chosen if c not in CONTENDERS]
    if unknown:
        parser.error(f"unknown contender(s): {', '.join(unknown)}")
    servers_wanted = {s.strip() for s in args.servers.split(",") if s.strip()}
    pins = args.pins or (200 if args.quick else 10_000)
    sample = args.kubo_sample or (10 if args.quick else 300)
    latency = 0.02 if args.far_latency is None else args.far_latency
    kinds = [
        ServerKind("fake_psa", concurrency=args.concurrency),
        ServerKind("npm_mock", concurrency=args.concurrency, npm=True),
    ]
    if latency > 0:
        kinds.append(
            ServerKind(
                f"fake_psa+{latency * 1000:g}ms",
                latency=latency,
                concurrency=args.far_concurrency,
                sequential_pins=args.far_sequential_sample or (20 if args.quick else 500),
            )
        )
    kinds = [k for k in kinds if (k.name if not k.latency else "far") in servers_wanted]
    if not kinds:
        parser.error("--servers: choose from fake_psa, npm_mock, far")
    result = measure(pins, kinds, sample, args.rounds, [CONTENDERS[c] for c in chosen])
    rows = []
    for t in result["timings"]:
        rows.append(
            [
                t["server"],
                t["contender"],
                t["pins"],
                round(t["seconds"], 2),
                round(t["pins"] / t["seconds"], 1) if t["seconds"] else None,
                round((t["pins"] - 1) / t["post_phase"], 1) if t["post_phase"] else None,
                round(t["seconds"] * pins / t["pins"], 1),
                "extrapolated" if t["extrapolated"] else "timed",
            ]
        )
    print(
        table(
            f"throughput: initial sync of N={pins} new pins (concurrency: "
            + ", ".join(f"{k.name} {k.concurrency}" for k in kinds)
            + ")",
            ["server", "contender", "pins", "seconds", "pins/s", "POST-phase/s", "s for N", "N"],
            rows,
        )
    )
    print()
    target_rows = []
    for kind, s in result["servers"].items():
        target_rows += [
            [
                kind,
                "pinsyncd / bare (process wall)",
                s["pinsyncd_vs_bare"],
                ">= 0.9",
                s["met_bare"],
            ],
            [kind, "pinsyncd / bare (POST phase)", s["pinsyncd_vs_bare_post_phase"], "-", None],
            [kind, "bare / sequential (the ceiling)", s["bare_vs_sequential"], "-", None],
            [
                kind,
                "pinsyncd / sequential",
                s["pinsyncd_vs_sequential"],
                ">= 10",
                s["met_sequential"],
            ],
            [
                kind,
                "pinsyncd / Kubo add loop",
                s["pinsyncd_vs_kubo_loop"],
                ">= 10",
                s["met_kubo_loop"],
            ],
        ]
    target_rows = [row for row in target_rows if row[2] is not None]  # contenders not run
    print(table("ratios of rates", ["server", "ratio", "value", "target", "met"], target_rows))
    print()
    list_rows = [
        [
            entry["server"],
            entry["pins_on_service"],
            entry["kubo_ls_requests"],
            entry["kubo_ls_pins_listed"],
            entry["pinsyncd_list_requests"],
        ]
        for entry in result["listing"]
    ]
    if list_rows:  # measured with the Kubo contender
        print(
            table(
                "requests to list every pin (server-side counts)",
                [
                    "server",
                    "pins",
                    "Kubo `pin remote ls` requests",
                    "listed",
                    "pinsyncd adopt lists",
                ],
                list_rows,
            )
        )
    emit("throughput", args.quick, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
