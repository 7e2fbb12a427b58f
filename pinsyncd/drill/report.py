"""What a restore drill found, without I/O: each CID's result and why, which CIDs are drawn
for it, the exit code, the lines and JSON the command prints, and the entry that is kept.

A CID's result is one of:
- `fetched`: a throwaway node connected only to the service's delegates fetched its whole
  DAG (every block checked against its hash);
- `not_fetched`: the service says it is pinned, and could not serve it (no delegates, none
  reachable, nothing came within the timeout, or the transfer stalled);
- `not_pinned`: the service does not say it is pinned (now): nothing to check;
- `error`: the drill could not check it (the service could not be asked, the throwaway node
  failed);
- `inconclusive`: fetched, but the throwaway node was also connected to this node, which may
  have served it.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

from pinsyncd.exits import EX_FAILED, EX_INCOMPLETE, EX_OK
from pinsyncd.sizes import human_bytes

EX_NOT_RUN = EX_FAILED
EX_NOT_SERVED = EX_INCOMPLETE
"""Exit codes: every CID fetched; the drill could not run (all of it or part); a CID a
service says is pinned could not be fetched from it (this wins over EX_NOT_RUN)."""

MAX_KEPT = 100
"""The most failing CIDs kept per service in the record."""

_Item = TypeVar("_Item")


class Outcome(StrEnum):
    FETCHED = "fetched"
    NOT_FETCHED = "not_fetched"
    NOT_PINNED = "not_pinned"
    ERROR = "error"
    INCONCLUSIVE = "inconclusive"


class Reason(StrEnum):
    NO_DELEGATES = "no_delegates"
    DELEGATES_UNREACHABLE = "delegates_unreachable"
    NOTHING_FETCHED = "nothing_fetched"
    STALLED = "stalled"
    NOT_PINNED = "not_pinned"
    SERVICE_ERROR = "service_error"
    NODE_ERROR = "node_error"
    CONNECTED_TO_THIS_NODE = "connected_to_this_node"


OUTCOME_OF: dict[Reason, Outcome] = {
    Reason.NO_DELEGATES: Outcome.NOT_FETCHED,
    Reason.DELEGATES_UNREACHABLE: Outcome.NOT_FETCHED,
    Reason.NOTHING_FETCHED: Outcome.NOT_FETCHED,
    Reason.STALLED: Outcome.NOT_FETCHED,
    Reason.NOT_PINNED: Outcome.NOT_PINNED,
    Reason.SERVICE_ERROR: Outcome.ERROR,
    Reason.NODE_ERROR: Outcome.ERROR,
    Reason.CONNECTED_TO_THIS_NODE: Outcome.INCONCLUSIVE,
}


@dataclass(frozen=True)
class Target:
    """A CID to check on a service, with the requestid the state file has for it (if any)."""

    cid: str
    requestid: str | None = None


@dataclass(frozen=True)
class CidResult:
    cid: str
    reason: Reason | None = None
    """None: fetched."""
    detail: str = ""
    blocks: int = 0
    size: int = 0
    """Bytes fetched (the DAG's blocks, as the node counted them)."""
    seconds: float = 0.0

    @property
    def outcome(self) -> Outcome:
        return Outcome.FETCHED if self.reason is None else OUTCOME_OF[self.reason]


@dataclass
class ServiceResult:
    service: str
    cids: list[CidResult] = field(default_factory=list)
    seconds: float = 0.0
    delegates: int = 0
    """Delegates the throwaway node was told to dial (this node's own left out)."""
    connected: int = 0
    """Of those, how many it connected to."""
    verified: int = 0
    """Blocks of the throwaway repo read again and checked against their hashes."""

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys((o.value for o in Outcome), 0)
        for result in self.cids:
            counts[result.outcome.value] += 1
        return counts

    @property
    def failing(self) -> list[CidResult]:
        return [r for r in self.cids if r.outcome is not Outcome.FETCHED]


@dataclass
class DrillReport:
    time: float
    """Unix time the drill started."""
    timeout: float
    services: list[ServiceResult] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return exit_code(r.outcome for s in self.services for r in s.cids)


def exit_code(outcomes: Iterable[Outcome]) -> int:
    seen = set(outcomes)
    if Outcome.NOT_FETCHED in seen:
        return EX_NOT_SERVED
    if seen & {Outcome.ERROR, Outcome.INCONCLUSIVE}:
        return EX_NOT_RUN
    return EX_OK


def choose(items: Sequence[_Item], count: int, rng: random.Random) -> list[_Item]:
    """`count` of `items` drawn at random (all of them when there are no more)."""
    if count >= len(items):
        return list(items)
    return rng.sample(list(items), count)


# --- what is printed and kept ----------------------------------------------------------------


def render(report: DrillReport) -> list[str]:
    """One line per CID, then one summary line per service."""
    lines: list[str] = []
    for service in report.services:
        lines.extend(cid_line(service.service, result) for result in service.cids)
        lines.append(summary_line(service))
    if not report.services:
        lines.append("no service to check")
    return lines


def cid_line(service: str, result: CidResult) -> str:
    return f"{service}  {result.cid}  {_describe(result)}"


def summary_line(service: ServiceResult) -> str:
    counts = service.counts()
    checked = len(service.cids) - counts[Outcome.NOT_PINNED]
    if not service.cids:
        return f"{service.service}: nothing to check (no CID is recorded as pinned there)"
    total = sum(r.size for r in service.cids if r.outcome is Outcome.FETCHED)
    text = (
        f"{service.service}: {counts[Outcome.FETCHED]} of {checked} fetched "
        f"({human_bytes(total)} in {service.seconds:.1f}s"
    )
    if service.delegates:
        text += f", from {service.connected} of {service.delegates} delegates"
    if service.verified:
        text += f", {service.verified} blocks verified again"
    text += ")"
    others = [
        f"{counts[o]} {o.value.replace('_', ' ')}"
        for o in (Outcome.NOT_FETCHED, Outcome.ERROR, Outcome.INCONCLUSIVE, Outcome.NOT_PINNED)
        if counts[o]
    ]
    if others:
        text += ": " + ", ".join(others)
    if counts[Outcome.NOT_FETCHED]:
        text += "; WARNING: it says it has pinned data it could not serve"
    return text


def _describe(result: CidResult) -> str:
    if result.reason is None:
        return (
            f"fetched: {result.blocks} blocks, {human_bytes(result.size)} in {result.seconds:.1f}s"
        )
    label = {
        Outcome.NOT_FETCHED: "NOT FETCHED",
        Outcome.NOT_PINNED: "not pinned there",
        Outcome.ERROR: "not checked",
        Outcome.INCONCLUSIVE: "inconclusive",
    }[result.outcome]
    return f"{label} ({result.reason.value.replace('_', ' ')}): {result.detail}"


def as_json(report: DrillReport) -> dict[str, Any]:
    """The `check --retrieval --json` document."""
    return {
        "time": _iso(report.time),
        "timeout": report.timeout,
        "exit_code": report.exit_code,
        "services": {
            s.service: {
                **s.counts(),
                "seconds": round(s.seconds, 3),
                "delegates": s.delegates,
                "connected": s.connected,
                "verified_blocks": s.verified,
                "cids": [_cid_json(r) for r in s.cids],
            }
            for s in report.services
        },
    }


def record_entry(service: ServiceResult, when: float) -> dict[str, Any]:
    """What is kept of one service's drill (`store.drill_record`): the time, the counts,
    and the CIDs that were not fetched, with why."""
    return {
        "time": when,
        **service.counts(),
        "bytes": sum(r.size for r in service.cids if r.outcome is Outcome.FETCHED),
        "seconds": round(service.seconds, 3),
        "failing": [_cid_json(r) for r in service.failing[:MAX_KEPT]],
    }


def _cid_json(result: CidResult) -> dict[str, Any]:
    return {
        "cid": result.cid,
        "result": result.outcome.value,
        "reason": result.reason.value if result.reason else None,
        "detail": result.detail or None,
        "blocks": result.blocks,
        "bytes": result.size,
        "seconds": round(result.seconds, 3),
    }


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")
