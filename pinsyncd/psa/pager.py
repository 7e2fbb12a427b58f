"""Whole listings across pages, robust to how real servers differ from the spec, and lookups
of pins by CID in chunks of at most 10.

The spec pages newest-first with `before = created of the oldest item` and `count` = total.
Real servers differ (RESEARCH.md §3.3, §4): the npm mock lists oldest-first and reports
`count` = page length; ipfs-cluster's `before` is inclusive; timestamps may repeat within a
millisecond. So the pager:

- follows the order the server actually uses (a `before` cursor for newest-first pages, an
  `after` cursor for oldest-first ones);
- moves the cursor one tick of the server's timestamp resolution past the boundary (1 s, 1 ms
  or 1 µs, read off the page itself), so a strict `<` or `>` behaves as `<=`/`>=` and pins that
  share the boundary timestamp are not skipped, and drops what it has already seen by
  requestid (an inclusive server repeats the boundary pins too);
- asks for another page while the last one was full or `count` says more exist, and stops on
  an empty page or one that brings nothing new (so a server that ignores the cursor cannot
  loop it forever).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from pinsyncd.cids import InvalidCIDError, cid_forms, multihash_of
from pinsyncd.psa.client import PinningServiceClient
from pinsyncd.psa.models import (
    ALL_STATUSES,
    MAX_CIDS_PER_QUERY,
    MAX_PAGE_SIZE,
    PinStatus,
    Status,
)

_SECOND = timedelta(seconds=1)
_MILLISECOND = timedelta(milliseconds=1)
_MICROSECOND = timedelta(microseconds=1)


@dataclass
class ListingReport:
    """What a listing cost and saw; for logs, metrics and benchmarks."""

    pages: int = 0
    seen: int = 0
    duplicates: int = 0
    first_count: int | None = None
    order: Literal["newest_first", "oldest_first"] | None = None


async def iter_pins(
    client: PinningServiceClient,
    *,
    statuses: Iterable[Status] = ALL_STATUSES,
    cids: Sequence[str] | None = None,
    name: str | None = None,
    meta: Mapping[str, str] | None = None,
    after: datetime | None = None,
    page_size: int = MAX_PAGE_SIZE,
    report: ListingReport | None = None,
) -> AsyncIterator[PinStatus]:
    """Every pin request matching the filters, each once. The status filter is always sent:
    the spec's default is `pinned` only, and some servers default to all statuses. `after`
    limits the listing to requests created after that moment."""
    statuses = tuple(statuses)
    report = report if report is not None else ListingReport()
    seen: set[str] = set()
    cursor_before: datetime | None = None
    cursor_after = after
    while True:
        page = await client.list_pins(
            cids=cids,
            name=name,
            statuses=statuses,
            before=cursor_before,
            after=cursor_after,
            limit=page_size,
            meta=meta,
        )
        report.pages += 1
        if report.first_count is None:
            report.first_count = page.count
        fresh = [pin for pin in page.results if pin.requestid not in seen]
        report.duplicates += len(page.results) - len(fresh)
        for pin in fresh:
            seen.add(pin.requestid)
            report.seen += 1
            yield pin
        full = len(page.results) >= page_size or page.count > len(page.results)
        if not fresh or not full:
            return
        first, last = page.results[0].created, page.results[-1].created
        if report.order is None and first != last:
            report.order = "oldest_first" if first < last else "newest_first"
        created = [pin.created for pin in page.results]
        tick = timestamp_resolution(created)
        if report.order == "oldest_first":
            cursor_after = max(created) - tick
        else:
            cursor_before = min(created) + tick


def timestamp_resolution(stamps: Sequence[datetime]) -> timedelta:
    """The coarsest tick consistent with every timestamp: whole seconds, milliseconds (the npm
    mock, JavaScript dates) or microseconds (finer ones, e.g. Go's nanoseconds, arrive here
    truncated to microseconds, and one microsecond past them still covers them)."""
    if all(stamp.microsecond == 0 for stamp in stamps):
        return _SECOND
    if all(stamp.microsecond % 1000 == 0 for stamp in stamps):
        return _MILLISECOND
    return _MICROSECOND


async def find_pins(
    client: PinningServiceClient,
    cids: Iterable[str],
    *,
    statuses: Iterable[Status] = ALL_STATUSES,
    report: ListingReport | None = None,
) -> dict[bytes, list[PinStatus]]:
    """The service's pin requests for `cids`, keyed by multihash (so a CIDv1 answer matches a
    CIDv0 question). Each CID is asked for in all its spellings, at most 10 per request."""
    wanted: set[bytes] = set()
    queries: list[str] = []
    for cid in cids:
        key = multihash_of(cid)
        if key in wanted:
            continue
        wanted.add(key)
        queries.extend(cid_forms(cid))
    found: dict[bytes, list[PinStatus]] = {key: [] for key in wanted}
    seen: set[str] = set()
    for start in range(0, len(queries), MAX_CIDS_PER_QUERY):
        chunk = queries[start : start + MAX_CIDS_PER_QUERY]
        async for pin in iter_pins(client, cids=chunk, statuses=statuses, report=report):
            if pin.requestid in seen:
                continue
            seen.add(pin.requestid)
            try:
                key = multihash_of(pin.pin.cid)
            except InvalidCIDError:
                continue  # not one of ours, whatever it is
            if key in found:
                found[key].append(pin)
    return found
