"""The pure planner: (local pinset, what we know of one service) -> what to do on it.

No I/O and no clock of its own (`now` comes in), so it can be property-tested. The rules:

- a CID with a live request (`intent`, `queued`, `pinning`, `pinned`) is never added again;
- an `intent` (an add whose outcome is unknown) is looked up once it is older than the grace
  period, never re-sent blindly;
- a `failed` request is replaced (`POST /pins/{requestid}`) when its backoff has passed, so
  no stale failed pin is left behind; an `error` (an add that never reached the service) is
  added again when its backoff has passed;
- nothing is added before the service's existing pins have been adopted, nor while the
  service is paused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pinsyncd.state import PENDING_STATUSES, RemotePin, RemoteStatus


@dataclass(frozen=True, slots=True)
class Add:
    cid: str
    name: str  # the local pin name ("" when the pin has none)


@dataclass(frozen=True, slots=True)
class Replace:
    cid: str
    requestid: str
    name: str


@dataclass
class ServicePlan:
    service: str
    adopt: bool = False
    resolve: list[str] = field(default_factory=list)
    add: list[Add] = field(default_factory=list)
    replace: list[Replace] = field(default_factory=list)
    track: list[RemotePin] = field(default_factory=list)
    waiting: int = 0  # rows in backoff or within the intent grace period


def plan_service(
    service: str,
    local: Mapping[str, str],
    remote: Mapping[str, RemotePin],
    *,
    now: float,
    adopted: bool,
    paused: bool = False,
    intent_grace: float = 60.0,
) -> ServicePlan:
    plan = ServicePlan(service)
    if paused:
        return plan
    if not adopted:
        plan.adopt = True
    for cid, row in remote.items():
        if row.status is RemoteStatus.INTENT:
            if now - row.updated >= intent_grace:
                plan.resolve.append(cid)
            else:
                plan.waiting += 1
        elif row.status in PENDING_STATUSES and row.requestid:
            plan.track.append(row)
    if plan.adopt:
        return plan  # adds wait until the service's existing pins are known
    for cid, name in local.items():
        row = remote.get(cid)
        if row is None:
            plan.add.append(Add(cid, name))
        elif row.status is RemoteStatus.ERROR or (
            row.status is RemoteStatus.FAILED and not row.requestid
        ):
            if row.next_attempt <= now:
                plan.add.append(Add(cid, name))
            else:
                plan.waiting += 1
        elif row.status is RemoteStatus.FAILED:
            assert row.requestid is not None
            if row.next_attempt <= now:
                plan.replace.append(Replace(cid, row.requestid, name))
            else:
                plan.waiting += 1
    return plan
