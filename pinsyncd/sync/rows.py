"""What the service's answers mean for pinsyncd's rows: a status or a listed record applied
to a row, the rows adoption leaves (which request is kept when a CID has several), whether a
replace did anything. No I/O."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from pinsyncd.cids import InvalidCIDError, multihash_of
from pinsyncd.model import Origin, RemotePin, RemoteStatus
from pinsyncd.planner import Replace
from pinsyncd.psa import Pin, PinStatus, Status, same_content
from pinsyncd.store import Listed
from pinsyncd.sync.context import ServiceReport

STATUS_RANK = {Status.PINNED: 3, Status.PINNING: 2, Status.QUEUED: 1, Status.FAILED: 0}


def rank(status: PinStatus) -> tuple[int, float]:
    return STATUS_RANK[status.status], status.created.timestamp()


def row_rank(row: RemotePin) -> tuple[int, float]:
    created = parse_time(row.created).timestamp() if row.created else 0.0
    return STATUS_RANK[Status(row.status.value)], created


def unchanged(item: Replace, sent: Pin, answer: PinStatus) -> bool:
    """Whether a replace came back as the request it was meant to replace: the same
    requestid, still `failed`, or still for the old CID or name."""
    if answer.requestid != item.requestid or same_content(item.requestid, sent.cid):
        return False  # a new request, or a pin made again by its CID (ipfs-cluster)
    if answer.status is Status.FAILED or not same_content(answer.pin.cid, sent.cid):
        return True
    return item.reason == "rename" and answer.pin.name != sent.name


def apply_status(row: RemotePin, status: PinStatus, **changes: Any) -> RemotePin:
    return row.evolve(
        status=RemoteStatus(status.status.value),
        requestid=status.requestid,
        created=status.created.isoformat(),
        name=status.pin.name if status.pin.name is not None else row.name,
        details=status.info.get("status_details"),
        **changes,
    )


def take_over(
    chunk: Sequence[tuple[Listed, RemotePin | None]], start: float, report: ServiceReport
) -> list[RemotePin]:
    """The state's rows after adoption of a chunk of listed requests (with each CID's row as
    it was before the chunk). A request for a CID with no live row is taken over (or settles
    our intent); another request for a CID that has one is counted as a duplicate, and
    among duplicates first seen in this adoption the best (pinned, then newest) is kept."""
    updates: dict[str, RemotePin] = {}
    for listed, stored in chunk:
        row = updates.get(listed.cid) or stored
        if row is not None and row.requestid == listed.requestid:  # known: its claim may be
            owned = row.owned or listed.owned  # news to a state from before ownership
            updates[listed.cid] = apply_listed(row.evolve(owned=owned), listed)
        elif row is None or row.status in (RemoteStatus.INTENT, RemoteStatus.ERROR):
            origin = Origin.CREATED if row is not None else Origin.ADOPTED
            base = row or RemotePin(report.service, listed.cid, RemoteStatus.QUEUED)
            updates[listed.cid] = apply_listed(
                base.evolve(origin=origin, owned=listed.owned), listed
            )
            report.adopted += row is None
            report.resolved += row is not None
        else:  # another request for a CID that already has one
            report.duplicates += 1
            adopted_now = row.origin is Origin.ADOPTED and row.updated >= start
            rank = (STATUS_RANK[Status(listed.status.value)], listed.created_ts)
            if adopted_now and rank > row_rank(row):
                updates[listed.cid] = apply_listed(row, listed)
    return list(updates.values())


def listed_of(status: PinStatus, *, owned: bool) -> Listed:
    return Listed(
        status.pin.cid,
        status.requestid,
        RemoteStatus(status.status.value),
        status.created.isoformat(),
        status.created.timestamp(),
        status.pin.name,
        status.info.get("status_details"),
        owned,
    )


def apply_listed(row: RemotePin, listed: Listed) -> RemotePin:
    return row.evolve(
        status=listed.status,
        requestid=listed.requestid,
        created=listed.created,
        name=listed.name if listed.name is not None else row.name,
        details=listed.details,
    )


async def in_pages(
    statuses: AsyncIterator[PinStatus], size: int
) -> AsyncGenerator[list[PinStatus], None]:
    page: list[PinStatus] = []
    async for status in statuses:
        page.append(status)
        if len(page) >= size:
            yield page
            page = []
    if page:
        yield page


def parses(cid: str) -> bool:
    try:
        multihash_of(cid)
    except InvalidCIDError:
        return False
    return True


def hash_index(cids: Iterable[str]) -> dict[bytes, str]:
    index: dict[bytes, str] = {}
    for cid in cids:
        try:
            index.setdefault(multihash_of(cid), cid)
        except InvalidCIDError:
            continue
    return index


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def count_unsent(desired: Mapping[str, str], remote: Mapping[str, RemotePin]) -> int:
    """Pins meant for the service with no request on it (never sent, or the add failed)."""
    return sum(
        1 for cid in desired if (row := remote.get(cid)) is None or row.status is RemoteStatus.ERROR
    )
