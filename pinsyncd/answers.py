"""What a service's answer means for pinsyncd's rows, decided without I/O: a request's status
applied to a row, which request is kept when a CID has several (adoption), whether a replace
did anything, and what an add that did not get there leaves.

The sync layer turns the service's wire answers into `model.Listed` and carries out what
these functions return; they are property-tested with the planner's rules
(tests/test_answers.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from pinsyncd.cids import same_content
from pinsyncd.model import Listed, Origin, RemotePin, RemoteStatus

STATUS_RANK = {
    RemoteStatus.PINNED: 3,
    RemoteStatus.PINNING: 2,
    RemoteStatus.QUEUED: 1,
    RemoteStatus.FAILED: 0,
}
"""Among requests for one CID, the one kept: pinned first, then pinning, queued, failed."""


def apply(row: RemotePin, answer: Listed, **changes: Any) -> RemotePin:
    """`row` as the service's answer says it is now: status, requestid, created, details;
    the service's name for it when it gives one."""
    return row.evolve(
        status=answer.status,
        requestid=answer.requestid,
        created=answer.created,
        name=answer.name if answer.name is not None else row.name,
        details=answer.details,
        **changes,
    )


def rank(answer: Listed) -> tuple[int, float]:
    """Which of several requests for a CID is the best: the highest status, then the newest."""
    return STATUS_RANK[answer.status], answer.created_ts


def row_rank(row: RemotePin) -> tuple[int, float]:
    created = datetime.fromisoformat(row.created).timestamp() if row.created else 0.0
    return STATUS_RANK.get(row.status, -1), created


@dataclass
class AdoptionCounts:
    """What adopting a listing found (counts for the cycle's report)."""

    adopted: int = 0  # requests taken over for CIDs that had none
    resolved: int = 0  # our intents settled by the request the listing shows
    duplicates: int = 0  # further requests for a CID that already has one


def take_over(
    chunk: Sequence[tuple[Listed, RemotePin | None]],
    start: float,
    service: str,
    found: AdoptionCounts,
) -> list[RemotePin]:
    """The state's rows after adoption of a chunk of listed requests (with each CID's row as
    it was before the chunk). A request for a CID with no live row is taken over (or settles
    our intent); another request for a CID that has one is counted as a duplicate, and
    among duplicates first seen in this adoption (since `start`) the best (`rank`) is kept."""
    updates: dict[str, RemotePin] = {}
    for listed, stored in chunk:
        row = updates.get(listed.cid) or stored
        if row is not None and row.requestid == listed.requestid:  # known: its claim may be
            owned = row.owned or listed.owned  # news to a state from before ownership
            seen = apply(row.evolve(owned=owned), listed)
            # Seen again, not taken over: it keeps its time, so that a request known before
            # this adoption never passes for one first seen in it (which a better duplicate
            # may replace), and stays tracked.
            updates[listed.cid] = replace(seen, updated=row.updated, stamp=row.stamp)
        elif row is None or row.status in (RemoteStatus.INTENT, RemoteStatus.ERROR):
            origin = Origin.CREATED if row is not None else Origin.ADOPTED
            base = row or RemotePin(service, listed.cid, RemoteStatus.QUEUED)
            updates[listed.cid] = apply(base.evolve(origin=origin, owned=listed.owned), listed)
            found.adopted += row is None
            found.resolved += row is not None
        else:  # another request for a CID that already has one
            found.duplicates += 1
            adopted_now = row.origin is Origin.ADOPTED and row.updated >= start
            if adopted_now and rank(listed) > row_rank(row):
                updates[listed.cid] = apply(row, listed)
    return list(updates.values())


def unchanged(
    requestid: str, reason: str, sent_cid: str, sent_name: str | None, answer: Listed
) -> bool:
    """Whether a replace of `requestid` came back as the request it was meant to replace:
    the same requestid, still `failed`, or still for the old CID (or, for a rename, the old
    name). Such a service's replace does nothing (Helia's server)."""
    if answer.requestid != requestid or same_content(requestid, sent_cid):
        return False  # a new request, or a pin made again by its CID (ipfs-cluster)
    if answer.status is RemoteStatus.FAILED or not same_content(answer.cid, sent_cid):
        return True
    return reason == "rename" and answer.name != sent_name


class Unanswered(StrEnum):
    """How an add (or replace) that got no usable answer ended, as the sync layer tells it
    from the client's error."""

    NOT_APPLIED = "not applied"  # certainly not created: refused before sending, a 4xx, a 404
    MAYBE_APPLIED = "maybe applied"  # a lost or reset answer, a timeout, a 5xx, a garbled body


def unanswered(
    intent: RemotePin, how: Unanswered, message: str, *, now: float, delay: float
) -> RemotePin:
    """The row after an add without a usable answer. One that may have been applied keeps
    its intent: it is looked up by CID once its grace is over, never sent again blindly (a
    second request would pin the CID twice). One that certainly was not is an error, added
    again once `delay` has passed; its attempts count towards failed for good."""
    if how is Unanswered.MAYBE_APPLIED:
        return intent.evolve(last_error=message)
    return intent.evolve(status=RemoteStatus.ERROR, last_error=message, next_attempt=now + delay)


def looked_again(intent: RemotePin, current: Listed) -> RemotePin | None:
    """Before replacing a failed request, pinsyncd looks at it once more (`failed` can be
    transient or wrong on a service). None: it is still failed, replace it; else the row as
    the service now has it, and the try that was about to be made is not counted."""
    if current.status is RemoteStatus.FAILED:
        return None
    return apply(intent, current, attempts=intent.attempts - 1, last_error=None)
