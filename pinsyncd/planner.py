"""The pure planner: (the pins a service should hold, what we know of it) -> what to do on it.

No I/O and no clock of its own (`now`, and `intent_age` for the age of an intent, come in),
so it can be property-tested. The rules:

- a CID with a live request (`intent`, `queued`, `pinning`, `pinned`) is never added again;
- an `intent` (an add whose outcome is unknown) is looked up once it is older than the grace
  period, never re-sent blindly;
- a `failed` request is replaced (`POST /pins/{requestid}`) when its backoff has passed and
  the node is online (it is usually the only provider), so no stale failed pin is left
  behind; an `error` (an add that never reached the service) is added again when its backoff
  has passed;
- a request is deleted only when the policy says so (`gone`: unpinned locally past the grace
  period; `surplus`: K copies are pinned ahead of this service) or when it is an older MFS
  root; and only a request this device owns (`RemotePin.owned`), known by its requestid: never
  another device's or another tool's, even one it adopted;
- only an owned request is replaced; a failed one that is not ours gets a new request of ours
  beside it;
- a new MFS root replaces the previous root's request, so blocks the two share stay pinned;
- with `rename`, a pinned request whose name no longer matches the local name is replaced;
- nothing is added before the service's existing pins have been adopted (a paused service
  is not planned at all: its cycle ends before);
- a cycle plans its pins a window at a time (`first` is its first window): what concerns the
  service's rows rather than the window's pins (intents to look up, deletes, errored adds to
  forget) is decided in the first window only, so each is decided once a cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Literal

from pinsyncd.model import PENDING_STATUSES, RemotePin, RemoteStatus
from pinsyncd.spec_limits import clip_name

_REMOVABLE = frozenset({*PENDING_STATUSES, RemoteStatus.PINNED, RemoteStatus.FAILED})


RemoveReason = Literal["unpinned locally", "extra copy", "old MFS root"]


@dataclass(frozen=True, slots=True)
class Add:
    cid: str
    name: str  # the local pin name ("" when the pin has none)


@dataclass(frozen=True, slots=True)
class Replace:
    cid: str
    requestid: str  # the request replaced
    name: str
    reason: Literal["failed", "rename", "mfs"] = "failed"
    supersedes: str | None = None  # for "mfs": the previous root, whose row goes on success


@dataclass(frozen=True, slots=True)
class Remove:
    cid: str
    requestid: str
    reason: RemoveReason


@dataclass
class ServicePlan:
    service: str
    adopt: bool = False
    resolve: list[str] = field(default_factory=list)
    add: list[Add] = field(default_factory=list)
    replace: list[Replace] = field(default_factory=list)
    remove: list[Remove] = field(default_factory=list)
    drop: list[str] = field(default_factory=list)  # errored adds no longer wanted: forget
    waiting: int = 0  # rows in backoff or within the intent grace period
    intents_due_in: float | None = None
    """Seconds until the first intent still within its grace may be looked up (None: none)."""


def plan_service(
    service: str,
    desired: Mapping[str, str],
    remote: Mapping[str, RemotePin],
    *,
    now: float,
    adopted: bool,
    first: bool = True,
    intent_grace: float = 60.0,
    intent_age: Callable[[RemotePin], float] | None = None,
    gone: Collection[str] = (),
    surplus: Collection[str] = (),
    mfs_root: str | None = None,
    mfs_name: str | None = None,
    rename: bool = False,
    node_online: bool = True,
) -> ServicePlan:
    plan = ServicePlan(service)
    if intent_age is None:
        intent_age = lambda row: now - row.updated  # noqa: E731 - the wall clock, for tests
    plan.adopt = not adopted
    old_roots: list[RemotePin] = []
    for cid, row in remote.items():
        if not first:
            break
        if row.status is RemoteStatus.INTENT:
            age = intent_age(row)
            if age >= intent_grace:
                plan.resolve.append(cid)
            else:
                plan.waiting += 1
                due = intent_grace - age
                plan.intents_due_in = min(due, plan.intents_due_in or due)
            continue
        if plan.adopt or cid in desired:
            continue
        if cid in gone or cid in surplus:
            _unwanted(plan, row, "unpinned locally" if cid in gone else "extra copy")
        elif mfs_name and row.name == mfs_name and cid != mfs_root and _ours_to_remove(row):
            old_roots.append(row)
    if plan.adopt:
        return plan  # adds wait until the service's existing pins are known
    for cid, name in desired.items():
        known = remote.get(cid)
        if cid == mfs_root and old_roots and _sendable(known, now):
            old = old_roots.pop()
            assert old.requestid is not None
            plan.replace.append(Replace(cid, old.requestid, name, "mfs", old.cid))
        elif known is None:
            plan.add.append(Add(cid, name))
        else:
            _wanted(plan, known, name, now=now, rename=rename, node_online=node_online)
    # Roots older than the one just replaced (left by a crash or a failed replace) go, once
    # the current root's request is known to exist or not.
    root = remote.get(mfs_root) if mfs_root else None
    if root is None or root.status is not RemoteStatus.INTENT:
        plan.remove.extend(
            Remove(row.cid, row.requestid, "old MFS root") for row in old_roots if row.requestid
        )
    return plan


def _ours_to_remove(row: RemotePin) -> bool:
    """A request this device made, known by its requestid, in a state a delete applies to."""
    return bool(row.requestid) and row.status in _REMOVABLE and row.owned


def _unwanted(plan: ServicePlan, row: RemotePin, why: RemoveReason) -> None:
    """A CID the service should no longer hold: forget an errored add, delete our request."""
    if row.status is RemoteStatus.ERROR:
        plan.drop.append(row.cid)
    elif _ours_to_remove(row):
        assert row.requestid is not None
        plan.remove.append(Remove(row.cid, row.requestid, why))


def _sendable(row: RemotePin | None, now: float) -> bool:
    """No request yet, or an errored add whose backoff has passed: an add may go out."""
    return row is None or (row.status is RemoteStatus.ERROR and row.next_attempt <= now)


def _wanted(
    plan: ServicePlan, row: RemotePin, name: str, *, now: float, rename: bool, node_online: bool
) -> None:
    """A CID the service should hold, with a row for it: what, if anything, to send."""
    due = row.next_attempt <= now
    if row.status is RemoteStatus.ERROR or (
        row.status is RemoteStatus.FAILED and not (row.requestid and row.owned)
    ):
        if due:
            plan.add.append(Add(row.cid, name))
        else:
            plan.waiting += 1
    elif row.status is RemoteStatus.FAILED:
        assert row.requestid is not None
        # While the node is offline it is most likely the only provider: a replace
        # would fail again and use up an attempt, so it waits for the node.
        if due and node_online:
            plan.replace.append(Replace(row.cid, row.requestid, name))
        else:
            plan.waiting += 1
    elif (
        rename
        and row.owned
        and row.status is RemoteStatus.PINNED
        and row.requestid
        and row.name is not None
        and row.name != clip_name(name or row.cid)
    ):
        plan.replace.append(Replace(row.cid, row.requestid, name, "rename"))
