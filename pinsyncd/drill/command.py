"""`pinsyncd check --retrieval`: the restore drill as a command. It draws the CIDs to check
(or takes those given), runs the drill service by service (`drill`), prints what it found,
keeps the result beside the state file (`store.drill_record`) for `status` and `/metrics`,
and exits 0 (all fetched), 3 (a service could not serve a CID it says is pinned) or 1 (the
drill could not run).

It takes no lock on the state file: it only reads it, so it runs beside the daemon.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import structlog

from pinsyncd import loop
from pinsyncd.cids import multihash_of
from pinsyncd.commands import with_tokens
from pinsyncd.config import Config
from pinsyncd.drill.report import (
    CidResult,
    DrillReport,
    Target,
    as_json,
    choose,
    cid_line,
    record_entry,
    render,
    summary_line,
)
from pinsyncd.drill.run import DrillSettings, drill_service
from pinsyncd.drill.throwaway import ThrowawayError, find_binary
from pinsyncd.kubo import LocalNode, NodeError
from pinsyncd.logs import printable, redact_text
from pinsyncd.psa import PinningServiceClient
from pinsyncd.say import fail, unknown_argument
from pinsyncd.store.drill_record import write_drill
from pinsyncd.store.readonly import read_node_peer_id, read_pinned
from pinsyncd.throttle import Throttle

log = structlog.get_logger("pinsyncd.drill")

DEFAULT_SAMPLE = 3
DEFAULT_TIMEOUT = 60.0
EX_TERMINATED = 143


def check_retrieval(
    config: Config,
    *,
    sample: int = DEFAULT_SAMPLE,
    cids: Sequence[str] = (),
    service: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    ipfs_binary: str | None = None,
    ipfs_config: Mapping[str, Any] | None = None,
    as_json_output: bool = False,
    rng: random.Random | None = None,
) -> int:
    if (refusal := unknown_argument(config, [service] if service else [], cids)) is not None:
        return refusal
    names = [s.name for s in config.services]
    try:
        binary = find_binary(ipfs_binary)
    except ThrowawayError as exc:
        return fail(str(exc))
    chosen = [service] if service else names
    config = with_tokens(config, chosen)
    rng = rng or random.SystemRandom()
    targets = {name: _given(cids) if cids else _drawn(config, name, sample, rng) for name in chosen}
    settings = DrillSettings(
        binary=binary,
        timeout=timeout,
        own_peer_ids=frozenset(_own_peer_ids(config)),
        node_config=dict(ipfs_config or {}),
    )
    report = DrillReport(time=time.time(), timeout=timeout)
    try:
        loop.run(_run(config, targets, settings, report, show=not as_json_output))
    except asyncio.CancelledError:  # SIGTERM: the throwaway node is stopped and gone
        print("pinsyncd: stopped; the throwaway node was stopped and deleted", file=sys.stderr)
        return EX_TERMINATED
    entries = {s.service: record_entry(s, report.time) for s in report.services}
    try:
        write_drill(config.state_path, entries, report.time)
    except OSError as exc:
        print(f"pinsyncd: warning: the result could not be kept: {exc}", file=sys.stderr)
    if as_json_output:
        print(redact_text(json.dumps(as_json(report), indent=2)))
    elif not report.services:
        print(printable("\n".join(render(report))))
    return report.exit_code


def _given(cids: Sequence[str]) -> list[Target]:
    """The CIDs named on the command line, each content once."""
    unique: dict[bytes, Target] = {}
    for cid in cids:
        unique.setdefault(multihash_of(cid), Target(cid.strip()))
    return list(unique.values())


def _drawn(config: Config, service: str, count: int, rng: random.Random) -> list[Target]:
    """`count` CIDs drawn at random among those the state records as pinned on `service`."""
    pinned = read_pinned(config.state_path, service)
    return [Target(cid, requestid) for cid, requestid in choose(pinned, count, rng)]


def _own_peer_ids(config: Config) -> set[str]:
    """This node's peer ids: the one the state recorded, those the config names as earlier
    ones, and the one the node says now (if it is up)."""
    own = set(config.node.previous_peer_ids)
    recorded = read_node_peer_id(config.state_path)
    if recorded:
        own.add(recorded)

    async def ask() -> str | None:
        try:
            async with LocalNode.for_config(config, timeout=5.0) as node:
                return (await node.identity()).peer_id
        except NodeError:
            return None

    live = loop.run(ask())
    if live:
        own.add(live)
    return own


async def _run(
    config: Config,
    targets: Mapping[str, Sequence[Target]],
    settings: DrillSettings,
    report: DrillReport,
    *,
    show: bool,
) -> None:
    """Drill each service in turn (the results go into `report`); SIGTERM cancels it, and
    the throwaway node of the service under way is stopped and deleted on the way out."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)

    def on_result(service: str, result: CidResult) -> None:
        if show:
            print(printable(cid_line(service, result)), flush=True)

    try:
        for service in config.services:
            if service.name not in targets:
                continue
            client = PinningServiceClient(
                service.name,
                service.endpoint,
                service.token,
                timeout=service.timeout,
                throttle=Throttle(service.rate_limit),
            )
            async with client:
                result = await drill_service(
                    service.name, client, targets[service.name], settings, on_result=on_result
                )
            report.services.append(result)
            if show:
                print(printable(summary_line(result)), flush=True)
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGTERM)


def from_args(config: Config, args: argparse.Namespace) -> int:
    """The command as `pinsyncd check --retrieval ...` asked for it (cli.py)."""
    settings: dict[str, Any] = {}
    for item in args.ipfs_config:
        key, _, value = item.partition("=")
        try:
            settings[key.strip()] = json.loads(value)
        except ValueError:
            return fail(f"--ipfs-config {item!r}: give KEY=JSON, e.g. 'Swarm.AddrFilters=[]'")
    if args.sample < 1:
        return fail("--sample must be at least 1")
    return check_retrieval(
        config,
        sample=args.sample,
        cids=args.cid,
        service=args.service,
        timeout=args.timeout,
        ipfs_binary=args.ipfs_binary,
        ipfs_config=settings,
        as_json_output=args.json,
    )
