"""The service's wire answers in the model's terms (`listed_of`), for `pinsyncd.answers` to
decide on; and small helpers of the sync layer: pages of a listing, CIDs by multihash, what
counts as unsent."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping
from datetime import datetime
from typing import Any

from pinsyncd.answers import apply
from pinsyncd.cids import InvalidCIDError, multihash_of
from pinsyncd.model import Listed, RemotePin, RemoteStatus
from pinsyncd.psa import PinStatus


def apply_status(row: RemotePin, status: PinStatus, **changes: Any) -> RemotePin:
    """`answers.apply` for a status as the service sent it."""
    return apply(row, listed_of(status), **changes)


def listed_of(status: PinStatus, *, owned: bool = True) -> Listed:
    """A status as the service sent it, in the model's terms (what `answers` decides on)."""
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
