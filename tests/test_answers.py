"""Property tests for `pinsyncd.answers`: what a service's answer means for a row. These are the
functions the sync layer calls on every answer (adoption, lookups, tracking, the second look
before a replace, a refused add)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pinsyncd.answers import (
    STATUS_RANK,
    AdoptionCounts,
    Unanswered,
    apply,
    looked_again,
    rank,
    row_rank,
    take_over,
    unanswered,
    unchanged,
)
from pinsyncd.model import LIVE_STATUSES, Listed, Origin, RemotePin, RemoteStatus
from pinsyncd.psa import MalformedResponse, NetworkError, PinningServiceError, ServerError
from pinsyncd.sync.sender import how_unanswered
from tests.cidgen import random_cid

SERVICE = "svc"
START = 1_000.0
CIDS = [f"c{i}" for i in range(6)]
LISTED_STATUSES = [RemoteStatus.QUEUED, RemoteStatus.PINNING, RemoteStatus.PINNED]


def listed(cid: str, requestid: str, status: RemoteStatus, ts: float, owned: bool) -> Listed:
    return Listed(
        cid, requestid, status, f"2026-01-01T00:00:{int(ts) % 60:02d}+00:00", ts, None, None, owned
    )


listings = st.lists(
    st.builds(
        listed,
        cid=st.sampled_from(CIDS),
        requestid=st.sampled_from([f"r{i}" for i in range(10)]),
        status=st.sampled_from([*LISTED_STATUSES, RemoteStatus.FAILED]),
        ts=st.floats(0, 59, allow_nan=False),
        owned=st.booleans(),
    ),
    max_size=15,
)
stored_rows = st.dictionaries(
    st.sampled_from(CIDS),
    st.builds(
        lambda status, requestid, origin, updated: (status, requestid, origin, updated),
        status=st.sampled_from(list(RemoteStatus)),
        requestid=st.sampled_from([None, "r1", "r2", "r9"]),
        origin=st.sampled_from(list(Origin)),
        updated=st.sampled_from([START - 1, START + 1]),
    ),
    max_size=6,
)


@settings(max_examples=300, deadline=None)
@given(listings, stored_rows)
def test_adoption_keeps_one_request_per_cid_and_never_drops_a_live_one(
    records: list[Listed], stored: dict[str, tuple[RemoteStatus, str | None, Origin, float]]
) -> None:
    rows = {
        cid: RemotePin(SERVICE, cid, status, requestid=rid, origin=origin, updated=updated)
        for cid, (status, rid, origin, updated) in stored.items()
    }
    found = AdoptionCounts()
    chunk = [(r, rows.get(r.cid)) for r in records]
    result = take_over(chunk, START, SERVICE, found)
    by_cid = {row.cid: row for row in result}
    assert len(by_cid) == len(result), "one row per CID"
    assert found.adopted + found.resolved + found.duplicates <= len(records)
    for cid, after in by_cid.items():
        before = rows.get(cid)
        assert after.requestid in {r.requestid for r in records if r.cid == cid}
        live = before is not None and before.status in LIVE_STATUSES - {RemoteStatus.INTENT}
        if before is not None and live and after.requestid != before.requestid:
            # only a request this adoption itself took over may give way to a better one
            assert before.origin is Origin.ADOPTED and before.updated >= START
    for cid in {r.cid for r in records}:
        before = rows.get(cid)
        if before is None or before.status in (RemoteStatus.INTENT, RemoteStatus.ERROR):
            assert cid in by_cid, "a CID with no live row takes a listed request"


def test_a_request_known_before_the_adoption_is_kept_when_seen_again_beside_a_better_one() -> None:
    """Found by the property above: a request adopted before (r1) is listed again, then a
    pinned duplicate (r0). Seeing r1 again refreshed its time, so it passed for a request
    first seen in this adoption and r0 replaced it: r1, a request of ours, was forgotten."""
    known = RemotePin(
        SERVICE, "c0", RemoteStatus.QUEUED, "r1", origin=Origin.ADOPTED, updated=START - 1
    )
    chunk = [
        (listed("c0", "r1", RemoteStatus.QUEUED, 1.0, False), known),
        (listed("c0", "r0", RemoteStatus.PINNED, 2.0, False), known),
    ]
    found = AdoptionCounts()
    (row,) = take_over(chunk, START, SERVICE, found)
    assert row.requestid == "r1" and found.duplicates == 1


@given(st.sampled_from(list(STATUS_RANK)), st.sampled_from(list(STATUS_RANK)))
def test_pinned_ranks_first_then_the_newest(a: RemoteStatus, b: RemoteStatus) -> None:
    old, new = listed("c", "r1", a, 1.0, True), listed("c", "r2", b, 2.0, True)
    assert (rank(new) > rank(old)) == (STATUS_RANK[b] >= STATUS_RANK[a])
    row = apply(RemotePin(SERVICE, "c", RemoteStatus.QUEUED), old)
    assert row_rank(row)[0] == STATUS_RANK[a]


def test_an_answer_applied_keeps_the_local_name_when_the_service_gives_none() -> None:
    row = RemotePin(SERVICE, "c", RemoteStatus.INTENT, name="photo.jpg", attempts=2)
    after = apply(row, listed("c", "r1", RemoteStatus.PINNED, 3.0, True))
    assert (after.status, after.requestid, after.name, after.attempts) == (
        RemoteStatus.PINNED,
        "r1",
        "photo.jpg",
        2,
    )


def test_the_second_look_replaces_only_a_request_still_failed() -> None:
    intent = RemotePin(SERVICE, "c", RemoteStatus.INTENT, attempts=3)
    assert looked_again(intent, listed("c", "r1", RemoteStatus.FAILED, 1.0, True)) is None
    now = looked_again(intent, listed("c", "r1", RemoteStatus.PINNED, 1.0, True))
    assert now is not None and now.status is RemoteStatus.PINNED
    assert now.attempts == 2, "the try that was not made is not counted"


def test_an_add_without_an_answer_keeps_its_intent_unless_it_certainly_did_not_get_there() -> None:
    intent = RemotePin(SERVICE, "c", RemoteStatus.INTENT, attempts=1)
    row = unanswered(intent, Unanswered.NOT_APPLIED, "HTTP 400", now=START, delay=30.0)
    assert (row.status, row.last_error, row.next_attempt) == (
        RemoteStatus.ERROR,
        "HTTP 400",
        START + 30.0,
    )
    kept = unanswered(intent, Unanswered.MAYBE_APPLIED, "HTTP 502", now=START, delay=30.0)
    assert (kept.status, kept.last_error, kept.next_attempt) == (
        RemoteStatus.INTENT,
        "HTTP 502",
        0.0,
    )


def test_the_client_errors_that_may_have_created_a_request() -> None:
    """The sync layer's reading of the client's errors (`sync.sender.how_unanswered`)."""
    maybe, no = Unanswered.MAYBE_APPLIED, Unanswered.NOT_APPLIED
    cases = [
        (NetworkError("svc", "add", "reset", maybe_applied=True), maybe),
        (NetworkError("svc", "add", "refused", maybe_applied=False), no),
        (ServerError("svc", "add", "HTTP 503"), maybe),
        (MalformedResponse("svc", "add", "not JSON"), maybe),
        (PinningServiceError("svc", "add", "HTTP 400"), no),
    ]
    for error, expected in cases:
        assert how_unanswered(error) is expected, error


def test_a_replace_that_did_nothing_is_told_from_one_that_did() -> None:
    old, new = random_cid(), random_cid()
    same = listed(new, "r1", RemoteStatus.QUEUED, 1.0, True)
    # a new request: it worked
    assert not unchanged("r1", "failed", new, "n", listed(new, "r2", RemoteStatus.QUEUED, 1, True))
    # the same requestid, still failed: nothing was done (Helia's server)
    assert unchanged("r1", "failed", new, "n", listed(new, "r1", RemoteStatus.FAILED, 1, True))
    # the same requestid, still for the old CID: nothing was done
    assert unchanged("r1", "mfs", new, "n", listed(old, "r1", RemoteStatus.PINNED, 1, True))
    # a rename that kept the old name did nothing; one that took the new name worked
    assert unchanged("r1", "rename", new, "new name", same)
    assert not unchanged("r1", "rename", new, None, same)
    # ipfs-cluster: the requestid is the CID, and a re-add by CID is a real replace
    assert not unchanged(new, "failed", new, "n", listed(new, new, RemoteStatus.FAILED, 1, True))
