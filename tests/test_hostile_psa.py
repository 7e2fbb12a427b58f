"""Services that misbehave on purpose, over real sockets: answers that never end, absurd
waits, requestids no URL keeps, records with impossible timestamps."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from pinsyncd.cids import multihash_of
from pinsyncd.model import RemoteStatus
from pinsyncd.psa import (
    ListingReport,
    MalformedResponse,
    NotFound,
    Pin,
    RateLimited,
    addressable,
    find_pins,
    iter_pins,
)
from pinsyncd.psa.client import MAX_ANSWER
from pinsyncd.psa.errors import retry_after_seconds
from pinsyncd.status import render_table
from pinsyncd.store import StateStore
from pinsyncd.store.readonly import read_status
from tests.cidgen import random_cid, random_cids
from tests.fake_psa import FakePinningService, Fault
from tests.servers import client_for, serving
from tests.test_hostile_state import EXEC_TOKEN, ONLINE, executor_for


async def test_an_endless_answer_is_cut_off_at_the_cap(service: FakePinningService) -> None:
    service.inject(Fault("flood", size=None), method="GET", path="/pins", times=None)
    async with client_for(service, read_retries=0) as client:
        with pytest.raises(MalformedResponse, match="too large"):
            await client.list_pins()
    # The client stopped reading at the cap: the server could not push much past it.
    assert MAX_ANSWER < service.flooded < MAX_ANSWER + 8 * 2**20


async def test_a_large_error_body_is_read_only_in_part(service: FakePinningService) -> None:
    service.inject(Fault("flood", status=500, size=200 * 2**20), method="GET", times=None)
    async with client_for(service, read_retries=0) as client:
        with pytest.raises(Exception, match="HTTP 500"):
            await client.list_pins()
    assert service.flooded < 16 * 2**20


def test_absurd_waits_are_rejected_or_capped() -> None:
    now = time.time()

    def wait(**headers: str) -> float | None:
        return retry_after_seconds(CIMultiDictProxy(CIMultiDict(headers)), now=now)

    for value in ("inf", "-inf", "nan", "Infinity"):
        assert wait(**{"Retry-After": value}) is None, value
        assert wait(**{"X-RateLimit-Reset": value}) is None, value
    assert wait(**{"Retry-After": "1e300"}) == 3600
    assert wait(**{"Retry-After": "315360000"}) == 3600
    assert wait(**{"X-RateLimit-Reset": str(int((now + 30) * 1000))}) == pytest.approx(30, abs=1)
    assert wait(**{"Retry-After": "-5"}) == 0
    assert wait(**{"Retry-After": "Fri, 31 Dec 9999 23:59:59 GMT"}) == 3600


@pytest.mark.parametrize("value", ["inf", "1e300", "315360000"])
async def test_a_429_with_an_absurd_wait_pauses_at_most_the_cap(
    service: FakePinningService, value: str
) -> None:
    service.inject(Fault("status", status=429, headers={"Retry-After": value}), method="POST")
    async with client_for(service, max_wait=600) as client:
        with pytest.raises(RateLimited) as caught:
            await client.add_pin(Pin(cid=random_cid()))
    wait = caught.value.retry_after
    assert wait is None or wait <= 600
    if value != "inf":
        assert wait == 600 and "asks to wait" in str(caught.value)


async def test_dot_requestids_stay_one_segment() -> None:
    paths: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        paths.append(request.raw_path)
        return web.json_response({"error": {"reason": "NOT_FOUND"}}, status=404)

    async with serving(handler) as url, client_for(f"{url}/api") as client:
        for rid in (".", "..", "a/b", "%2F", "x y"):
            with pytest.raises(NotFound):
                await client.get_pin(rid)
    assert paths == [
        "/api/pins/%2E",
        "/api/pins/%2E%2E",
        "/api/pins/a%2Fb",
        "/api/pins/%252F",
        "/api/pins/x%20y",
    ]
    assert not any(addressable(r) for r in (".", "..", "a/b", "%2F", "x y", ""))
    assert all(addressable(r) for r in ("a.b", "3fa85f64-5717-4562-b3fc-2c963f66afa6", "7"))


def _record(requestid: str, cid: str, created: str) -> dict[str, object]:
    return {"requestid": requestid, "status": "pinned", "created": created, "pin": {"cid": cid}}


async def test_bad_records_are_skipped_and_counted_and_keep_a_lookup_open(
    service: FakePinningService,
) -> None:
    good, year_9999, empty_id, long_id = (random_cid() for _ in range(4))
    page = {
        "count": 5,
        "results": [
            _record("r1", good, "2024-05-01T00:00:00Z"),
            _record("r2", year_9999, "9999-12-31T23:59:59Z"),
            _record("r3", year_9999, "1969-12-31T23:59:59Z"),
            _record("", empty_id, "2024-05-01T00:00:00Z"),
            _record("x" * 2000, long_id, "2024-05-01T00:00:00Z"),
        ],
    }
    service.inject(
        Fault("malformed", body=json.dumps(page)), method="GET", path="/pins", times=None
    )
    async with client_for(service) as client:
        report = ListingReport()
        listed = [pin async for pin in iter_pins(client, report=report)]
        assert [pin.requestid for pin in listed] == ["r1"]
        # Listed again in one page (1 of 5 readable), counted once: 4, not 8.
        assert report.skipped == 4 and report.one_page and not report.complete
        unsure: set[bytes] = set()
        await find_pins(client, [good, year_9999], uncertain=unsure)
    assert unsure == {multihash_of(year_9999)}, "a request may exist: it is not 'absent'"


async def test_a_404_for_a_request_still_listed_is_not_a_vanished_pin(tmp_path: Path) -> None:
    """A server (or a proxy before it) that answers 404 for `GET /pins/{id}` of requests it
    still has: verification must not count them vanished and pin them a second time."""
    store = await StateStore.open(tmp_path / "state.db")
    local = {cid: f"f{i}" for i, cid in enumerate(random_cids(20))}
    async with FakePinningService(token=EXEC_TOKEN, transition_after=0.0) as svc:
        executor = executor_for(svc, store)
        async with executor.client:
            await executor.sync(local, ONLINE)
            await executor.sync(local, ONLINE, send=False)
            rows = await store.remote_pins("spec")
            assert {r.status for r in rows.values()} == {RemoteStatus.PINNED}
            executor.verify_interval = 0.0
            empty = json.dumps({"count": 0, "results": []})
            svc.inject(Fault("malformed", body=empty), method="GET", path="/pins", times=1)
            svc.inject(Fault("status", status=404), method="GET", path="/pins/*", times=None)
            report = await executor.sync(local, ONLINE)
        gets = svc.count(method="GET")
        assert report.vanished == 0 and report.added == 0
        assert all(len(svc.pins_for_cid(cid)) == 1 for cid in local)
        assert gets > 20, "each 404 was checked against a listing"
    rows = await store.remote_pins("spec")
    await store.close()
    assert len(rows) == 20 and {r.status for r in rows.values()} == {RemoteStatus.PINNED}


async def test_a_listing_that_never_ends_is_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every page brings fresh requestids, newest first, whatever the cursor: the listing
    stops at its bound (lowered here from 250,000 so the test is quick) and says so."""
    monkeypatch.setattr("pinsyncd.psa.pager.LISTING_FLOOR", 50)
    served = 0
    cid = random_cid()

    async def handler(request: web.Request) -> web.Response:
        nonlocal served
        limit = int(request.query.get("limit", "10"))
        records = []
        for _ in range(limit):
            served += 1
            stamp = f"2024-05-01T00:00:00.{1_000_000 - served:06d}Z"
            records.append(_record(f"fresh-{served}", cid, stamp))
        return web.json_response({"count": 10, "results": records})

    report = ListingReport()
    async with serving(handler) as url, client_for(url) as client:
        pins = [pin async for pin in iter_pins(client, page_size=10, report=report)]
    assert 50 < len(pins) <= 60 and served <= 70
    assert not report.complete and report.cut_off and "more than its count" in report.cut_off


async def test_junk_in_fields_pinsyncd_only_passes_on_does_not_cost_the_record(
    tmp_path: Path,
) -> None:
    """A server that echoes junk another client sent (Helia keeps `origins: [1, 2, "x"]`).
    Such fields are only passed on, never decided on: the junk is dropped, the record used.
    Before: the record was skipped (and, before per-record salvage, the whole first listing
    failed): its CID was held back instead of adopted."""
    store = await StateStore.open(tmp_path / "state.db")
    local = {cid: f"f{i}" for i, cid in enumerate(random_cids(2000))}
    junk = next(iter(local))
    async with FakePinningService(token=EXEC_TOKEN, transition_after=0.0) as svc:
        for cid, name in local.items():
            if cid == junk:
                origins: list[object] = [1, 2, "/ip4/127.0.0.1/tcp/4001"]
                svc.add_pin(cid, name=7, origins=origins, meta={"x": {"y": 1}}, status="pinned")  # type: ignore[arg-type]
            else:
                svc.add_pin(cid, name=name, status="pinned")
        executor = executor_for(svc, store)
        async with executor.client:
            report = await executor.sync(local, ONLINE)
        assert report.adopted == 2000 and svc.count(method="POST") == 0
    rows = await store.remote_pins("spec")
    await store.close()
    assert rows[junk].status is RemoteStatus.PINNED and len(rows) == 2000


async def test_records_skipped_at_first_contact_are_counted_in_status(tmp_path: Path) -> None:
    """A record that cannot be used (no requestid) is skipped, the rest adopted, and `status`
    says how many were skipped and why, in the validator's words."""
    good = random_cids(3)
    records = [_record(f"r{i}", cid, "2024-05-01T00:00:00Z") for i, cid in enumerate(good)]
    records.append(_record("", random_cid(), "2024-05-01T00:00:00Z"))
    page = json.dumps({"count": 4, "results": records})
    store = await StateStore.open(tmp_path / "state.db")
    async with FakePinningService(token=EXEC_TOKEN) as svc:
        svc.inject(Fault("malformed", body=page), method="GET", path="/pins", times=None)
        executor = executor_for(svc, store)
        async with executor.client:
            report = await executor.sync(dict.fromkeys(good, ""), ONLINE, send=False)
    await store.close()
    assert report.adopted == 3
    (spec,) = read_status(tmp_path / "state.db", ["spec"])["services"].values()
    assert spec["skipped_records"] == 1
    assert spec["skipped_reason"] == "results.3.requestid: Value error, empty requestid"
    assert "1 records in its last full listing do not match the spec" in render_table(
        read_status(tmp_path / "state.db", ["spec"])
    )
