"""Whole listings across pages, robust to how real servers differ from the spec, and lookups
of pins by CID in chunks of at most 10.

The spec pages newest-first with `before = created of the oldest item` and `count` = total.
Real servers differ: the npm mock lists oldest-first and reports
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

A `created` cursor only works on pages sorted by `created`. ipfs-cluster's are not: it lists
in its own key order (by CID), with `created` cut to whole seconds (docs/cluster.md). A cursor
there skips pins, or sticks on a second that more than a page of pins share. So when a page
proves the cursor cannot work (its `created` values are out of order; a page that honours the
cursor brings nothing new while `count` says more exist; or the listing ends with fewer pins
than the first `count` said), the pager asks once for all of them in one page, `limit` =
`count` (over the spec's 1000; cluster has no cap). A server that refuses that leaves the
listing incomplete, and `ListingReport.complete` says so.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Literal

import structlog

from pinsyncd.cids import InvalidCIDError, cid_forms, multihash_of
from pinsyncd.psa.client import PinningServiceClient
from pinsyncd.psa.errors import BadRequest, ClientError
from pinsyncd.psa.models import (
    ALL_STATUSES,
    MAX_CIDS_PER_QUERY,
    MAX_PAGE_SIZE,
    PinResults,
    PinStatus,
    Status,
)

log = structlog.get_logger("pinsyncd.psa")

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
    max_count: int | None = None
    order: Literal["newest_first", "oldest_first"] | None = None
    one_page: str | None = None
    """Why the rest was asked for in one page (the server's order defeats a cursor)."""
    complete: bool = True
    """False when some pins may be missing: the server refused that one page, records were
    skipped, or the listing was cut off (see `cut_off`)."""
    skipped: int = 0
    """Records that do not match the spec, left out (see `parse_page`)."""
    skipped_cids: list[str] = field(default_factory=list)
    """The `pin.cid` of skipped records that have one (at most `MAX_SKIPPED_CIDS`)."""
    cut_off: str | None = None
    """Why the listing was stopped before the server said it ended."""
    skipped_reason: str | None = None
    """Why the first skipped record was skipped (see `PinResults.skipped_reason`)."""


MAX_SKIPPED_CIDS = 100_000
LISTING_FLOOR = 250_000
"""A listing may always bring this many requests; past it, only as many as twice the largest
`count` a page reported. A server whose pages never end (fresh requestids on every page) is
stopped there instead of holding the service forever."""


def listing_bound(report: ListingReport) -> int:
    return max(LISTING_FLOOR, 2 * (report.max_count or 0))


def _note_page(report: ListingReport, page: PinResults, *, whole: bool = False) -> None:
    """Count a page. A `whole` page lists again everything the cursor pages listed, so its
    skipped records include theirs: it sets the count (if higher) rather than adding to it."""
    report.pages += 1
    if report.first_count is None:
        report.first_count = page.count
    report.max_count = max(report.max_count or 0, page.count)
    if not page.skipped:
        return
    report.complete = False
    report.skipped_reason = report.skipped_reason or page.skipped_reason
    if whole:
        report.skipped = max(report.skipped, page.skipped)
        known = set(report.skipped_cids)
        fresh = [cid for cid in page.skipped_cids if cid not in known]
    else:
        report.skipped += page.skipped
        fresh = list(page.skipped_cids)
    room = MAX_SKIPPED_CIDS - len(report.skipped_cids)
    report.skipped_cids.extend(fresh[: max(0, room)])


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
) -> AsyncGenerator[PinStatus, None]:
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
        _note_page(report, page)
        fresh = [pin for pin in page.results if pin.requestid not in seen]
        report.duplicates += len(page.results) - len(fresh)
        for pin in fresh:
            seen.add(pin.requestid)
            report.seen += 1
            yield pin
        listed = len(page.results) + page.skipped
        full = listed >= page_size or page.count > listed
        if not (page.results and full):
            break
        if report.seen > listing_bound(report):
            _cut_off(client, report)
            return
        step = _next_cursor(report, page, bool(fresh), cursor_before, cursor_after)
        if step == "stop":
            return  # the server ignores the cursor: what it lists is all we can get
        if step == "one page":
            break
        cursor_before, cursor_after = step
    total = report.first_count or 0
    if report.one_page is None and report.seen < total:
        report.one_page = f"the listing ended with {report.seen} of the {total} pins counted"
    if report.one_page is None:
        return
    # The rest in one page: all that match the caller's filters, deduplicated.
    for _attempt in range(3):
        limit = max(page_size, total + ONE_PAGE_SLACK)
        try:
            page = await client.list_pins(
                cids=cids,
                name=name,
                statuses=statuses,
                after=after,
                limit=limit,
                meta=meta,
                over_spec_limit=True,
            )
        except (BadRequest, ClientError):
            report.complete = False
            return
        _note_page(report, page, whole=True)
        for pin in page.results:
            if pin.requestid in seen:
                report.duplicates += 1
                continue
            seen.add(pin.requestid)
            report.seen += 1
            yield pin
        if page.count <= len(page.results) + page.skipped:
            return
        if report.seen > listing_bound(report):
            _cut_off(client, report)
            return
        total = page.count  # more were added meanwhile
    report.complete = False


def _next_cursor(
    report: ListingReport,
    page: PinResults,
    fresh: bool,
    before: datetime | None,
    after: datetime | None,
) -> tuple[datetime | None, datetime | None] | Literal["stop", "one page"]:
    """Where the next page starts, after a full `page` that brought new requests or not
    (`fresh`): the next (before, after) cursor; "stop" when the server ignores the cursor;
    "one page" when the cursor cannot walk this listing (`report.one_page` says why)."""
    created = [pin.created for pin in page.results]
    if not fresh:
        if not _honours_cursor(created, before, after):
            return "stop"
        report.one_page = "more pins share one `created` than fit in a page"
        return "one page"
    if not _sorted(created):
        report.one_page = "the pages are not sorted by `created`"
        return "one page"
    first, last = created[0], created[-1]
    if report.order is None and first != last:
        report.order = "oldest_first" if first < last else "newest_first"
    tick = timestamp_resolution(created)
    if report.order == "oldest_first":
        return before, max(created) - tick
    return min(created) + tick, after


def _cut_off(client: PinningServiceClient, report: ListingReport) -> None:
    report.complete = False
    report.cut_off = (
        f"the listing was stopped after {report.pages} pages and {report.seen} requests: "
        f"more than its count ({report.max_count}) can justify"
    )
    log.warning(
        "a listing that does not end was cut off; what it brought is used",
        service=client.name,
        pages=report.pages,
        requests=report.seen,
        count=report.max_count,
    )


ONE_PAGE_SLACK = 100
"""Room in a one-page listing for pins added between the count and the listing."""


def _sorted(stamps: Sequence[datetime]) -> bool:
    pairs = list(pairwise(stamps))
    return all(a <= b for a, b in pairs) or all(a >= b for a, b in pairs)


def _honours_cursor(
    stamps: Sequence[datetime], before: datetime | None, after: datetime | None
) -> bool:
    """Whether every listed pin is within the cursor (inclusive: a server may be either)."""
    if before is None and after is None:
        return False
    return all(
        (before is None or stamp <= before) and (after is None or stamp >= after)
        for stamp in stamps
    )


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
    uncertain: set[bytes] | None = None,
) -> dict[bytes, list[PinStatus]]:
    """The service's pin requests for `cids`, keyed by multihash (so a CIDv1 answer matches a
    CIDv0 question). Each CID is asked for in all its spellings, at most 10 per request.
    Keys whose lookup brought a record that had to be skipped (it does not match the spec)
    are added to `uncertain`: a request may exist for them that cannot be read."""
    wanted: set[bytes] = set()
    queries: list[tuple[bytes, str]] = []
    for cid in cids:
        key = multihash_of(cid)
        if key in wanted:
            continue
        wanted.add(key)
        queries.extend((key, form) for form in cid_forms(cid))
    found: dict[bytes, list[PinStatus]] = {key: [] for key in wanted}
    seen: set[str] = set()
    for start in range(0, len(queries), MAX_CIDS_PER_QUERY):
        chunk = queries[start : start + MAX_CIDS_PER_QUERY]
        chunk_report = ListingReport()
        pins = iter_pins(
            client, cids=[form for _key, form in chunk], statuses=statuses, report=chunk_report
        )
        async for pin in pins:
            if pin.requestid in seen:
                continue
            seen.add(pin.requestid)
            try:
                key = multihash_of(pin.pin.cid)
            except InvalidCIDError:
                continue  # not one of ours, whatever it is
            if key in found:
                found[key].append(pin)
        if report is not None:
            _merge(report, chunk_report)
        if uncertain is not None and chunk_report.skipped:
            uncertain.update(_unreadable_keys(chunk_report, {key for key, _form in chunk}))
    return found


def _unreadable_keys(report: ListingReport, asked: set[bytes]) -> set[bytes]:
    """Which of the `asked` keys a skipped record may be for: the one its CID names, or all
    of them when a skipped record has no readable CID."""
    keys: set[bytes] = set()
    for cid in report.skipped_cids:
        try:
            keys.add(multihash_of(cid))
        except InvalidCIDError:
            return asked
    if len(report.skipped_cids) < report.skipped:
        return asked
    return keys & asked


def _merge(total: ListingReport, part: ListingReport) -> None:
    total.pages += part.pages
    total.seen += part.seen
    total.duplicates += part.duplicates
    total.skipped += part.skipped
    total.complete = total.complete and part.complete
