"""A restore drill of one service: shows, CID by CID, that the service can serve the data
without this node.

It asks the service for each CID's request (its `delegates`), starts a throwaway Kubo node
(`throwaway`) that knows no peer at all, connects it to those delegates only (never to this
node), and fetches each CID into it (`LocalNode.pin_add`, with a no-progress timeout): that
gets every block of the DAG, and Kubo checks each block against its hash as it arrives. Then
it checks that the throwaway node was not connected to this node after all (else the result
proves nothing), and reads every block of its repo once more with `repo/verify`. The node is
always stopped and its repo deleted. What each result means is decided in `report`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from pinsyncd.cids import multihash_of
from pinsyncd.drill.report import CidResult, Reason, ServiceResult, Target
from pinsyncd.drill.throwaway import ThrowawayError, ThrowawayNode
from pinsyncd.durations import format_duration
from pinsyncd.kubo import LocalNode, NodeError, PinProgress, PinStalled
from pinsyncd.logs import redact_text
from pinsyncd.psa import PinningServiceClient, PinningServiceError, PinStatus, Status, find_pins

log = structlog.get_logger("pinsyncd.drill")

MAX_DETAIL = 400
"""The longest message kept for one CID (Kubo's dial errors repeat the peer id thrice)."""
_PEER = re.compile(r"/(?:p2p|ipfs)/([^/]+)")


@dataclass(frozen=True)
class DrillSettings:
    binary: str
    """The `ipfs` binary the throwaway node runs."""
    timeout: float
    """Per CID: give up once nothing has arrived for this long."""
    own_peer_ids: frozenset[str]
    """This node's peer ids (now and before): never dialled, and a sign of an inconclusive
    result when the throwaway node is connected to one. Empty when unknown."""
    node_config: Mapping[str, Any] = field(default_factory=dict)
    """Extra Kubo settings for the throwaway node (`ThrowawayNode`'s `config`)."""


OnResult = Callable[[str, CidResult], None]


async def drill_service(
    name: str,
    client: PinningServiceClient,
    targets: Sequence[Target],
    settings: DrillSettings,
    *,
    on_result: OnResult | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> ServiceResult:
    """Check `targets` on one service; every target gets a result."""
    started = clock()
    result = ServiceResult(name)

    def done(cid_result: CidResult) -> None:
        result.cids.append(cid_result)
        if on_result is not None:
            on_result(name, cid_result)

    checks = await _requests(client, targets, done)
    if checks:
        log.info("restore drill: starting a throwaway node", service=name, cids=len(checks))
        try:
            await _fetch_all(result, checks, settings, done, clock)
        except (ThrowawayError, NodeError) as exc:
            reported = {r.cid for r in result.cids}
            for target, _request in checks:
                if target.cid not in reported:
                    done(CidResult(target.cid, Reason.NODE_ERROR, _one_line(str(exc))))
    result.seconds = clock() - started
    return result


async def _requests(
    client: PinningServiceClient, targets: Sequence[Target], done: Callable[[CidResult], None]
) -> list[tuple[Target, PinStatus]]:
    """Each target's pinned request on the service; the targets with none get their result."""
    if not targets:
        return []
    try:
        found = await find_pins(client, [t.cid for t in targets])
    except PinningServiceError as exc:
        for target in targets:
            done(CidResult(target.cid, Reason.SERVICE_ERROR, _one_line(str(exc))))
        return []
    checks = []
    for target in targets:
        requests = found.get(multihash_of(target.cid), [])
        pinned = [r for r in requests if r.status is Status.PINNED]
        if not pinned:
            statuses = sorted({r.status.value for r in requests})
            detail = (
                f"its request is {' / '.join(statuses)}" if statuses else "it has no request for it"
            )
            done(CidResult(target.cid, Reason.NOT_PINNED, detail))
            continue
        ours = [r for r in pinned if r.requestid == target.requestid]
        checks.append((target, (ours or pinned)[0]))
    return checks


async def _fetch_all(
    result: ServiceResult,
    checks: Sequence[tuple[Target, PinStatus]],
    settings: DrillSettings,
    done: Callable[[CidResult], None],
    clock: Callable[[], float],
) -> None:
    dialled: set[str] = set()
    connected: set[str] = set()
    fetched: list[CidResult] = []
    async with (
        ThrowawayNode(settings.binary, config=settings.node_config) as throwaway,
        LocalNode(throwaway.api_url) as node,
    ):
        for target, request in checks:
            delegates = [d for d in request.delegates if _peer_of(d) not in settings.own_peer_ids]
            dialled.update(delegates)
            try:
                if delegates:
                    outcome = await _check(node, target.cid, delegates, settings, connected, clock)
                else:
                    outcome = CidResult(target.cid, Reason.NO_DELEGATES, _none(request))
            except NodeError as exc:
                outcome = CidResult(target.cid, Reason.NODE_ERROR, _one_line(str(exc)))
            if outcome.reason is None:
                fetched.append(outcome)
            else:
                done(outcome)
        result.delegates, result.connected = len(dialled), len(connected)
        if fetched:
            blocks, corrupt = await node.verify_repo(no_progress=settings.timeout)
            result.verified = blocks
            for outcome in fetched:
                done(_verified(outcome, corrupt))


async def _check(
    node: LocalNode,
    cid: str,
    delegates: Sequence[str],
    settings: DrillSettings,
    connected: set[str],
    clock: Callable[[], float],
) -> CidResult:
    """Fetch one CID from these delegates alone."""
    dials = await node.swarm_connect(delegates)
    reached = [d.address for d in dials if d.ok]
    connected.update(reached)
    if not reached:
        first = next(d for d in dials if not d.ok)
        return CidResult(
            cid,
            Reason.DELEGATES_UNREACHABLE,
            f"none of its {len(dials)} delegates could be dialled "
            f"({first.address}: {_one_line(first.error or 'no reason given')})",
        )
    started = clock()
    try:
        fetched = await node.pin_add(cid, stall=settings.timeout, clock=clock)
    except PinStalled as exc:
        return _stalled(cid, exc.progress, len(reached), settings, clock() - started)
    doubt = _doubt(await node.peers(), settings.own_peer_ids)
    return CidResult(
        cid,
        Reason.CONNECTED_TO_THIS_NODE if doubt else None,
        doubt or "",
        blocks=fetched.blocks,
        size=fetched.bytes,
        seconds=clock() - started,
    )


def _stalled(
    cid: str, progress: PinProgress, reached: int, settings: DrillSettings, seconds: float
) -> CidResult:
    wait = format_duration(settings.timeout)
    if not progress.blocks:
        return CidResult(
            cid,
            Reason.NOTHING_FETCHED,
            f"no block came from {reached} connected delegates within {wait}",
            seconds=seconds,
        )
    return CidResult(
        cid,
        Reason.STALLED,
        f"stalled after {progress.blocks} blocks ({progress.bytes} bytes): nothing more for {wait}",
        blocks=progress.blocks,
        size=progress.bytes,
        seconds=seconds,
    )


def _none(request: PinStatus) -> str:
    if request.delegates:
        return "its only delegates are this node, which the drill never dials"
    return "the service gave no delegates to fetch from"


def _doubt(peers: set[str], own: Collection[str]) -> str | None:
    """Why a fetch may have come from this node after all; None when it cannot have."""
    if not own:
        return "this node's peer id is unknown (no listing of it yet), so it may have served it"
    if peers & set(own):
        return "the throwaway node was connected to this node, which may have served it"
    return None


def _verified(outcome: CidResult, corrupt: Sequence[str]) -> CidResult:
    if not corrupt:
        return outcome
    return CidResult(
        outcome.cid,
        Reason.NODE_ERROR,
        f"repo/verify found {len(corrupt)} corrupt blocks in the throwaway repo: {corrupt[0]}",
        blocks=outcome.blocks,
        size=outcome.size,
        seconds=outcome.seconds,
    )


def _one_line(text: str) -> str:
    """A node's or a service's message on one line (Kubo lists failed dials one a line),
    without any token."""
    flat = redact_text(" ".join(text.split()))
    return flat if len(flat) <= MAX_DETAIL else flat[: MAX_DETAIL - 1] + "…"


def _peer_of(address: str) -> str | None:
    match = _PEER.search(address)
    return match.group(1) if match else None
