"""Tests for the fake Pinning Service API server (tests/fake_psa.py), over real sockets."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import sys
import time
from email.utils import parsedate_to_datetime
from pathlib import Path

import aiohttp
import pytest

from tests.fake_psa import FAIL_DETAILS, FakePinningService, Fault, format_created, parse_rfc3339

TOKEN = "secret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROOT = Path(__file__).resolve().parent.parent
CREATED_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def make_cid(i: int | str) -> str:
    """A CIDv1 (raw, sha256, base32) for some test data."""
    digest = hashlib.sha256(str(i).encode()).digest()
    raw = bytes([0x01, 0x55, 0x12, 0x20]) + digest
    return "b" + base64.b32encode(raw).decode().lower().rstrip("=")


@pytest.fixture
async def svc():
    async with FakePinningService(token=TOKEN) as s:
        yield s


@pytest.fixture
async def http():
    async with aiohttp.ClientSession(headers=AUTH) as s:
        yield s


async def add(http, svc, cid, **fields):
    async with http.post(f"{svc.url}/pins", json={"cid": cid, **fields}) as r:
        assert r.status == 202, await r.text()
        return await r.json()


async def get(http, url, **params):
    async with http.get(url, params=params) as r:
        return r.status, await r.json()


async def list_pins(http, svc, **params):
    status, body = await get(http, f"{svc.url}/pins", **params)
    assert status == 200, body
    return body


# ---------------------------------------------------------------------- auth and basics


async def test_auth_missing_and_wrong_token(svc):
    async with aiohttp.ClientSession() as plain:
        async with plain.get(f"{svc.url}/pins") as r:
            assert r.status == 401
            assert r.content_type == "application/json"
            assert await r.json() == {
                "error": {"reason": "UNAUTHORIZED", "details": "access token is missing"}
            }
        async with plain.get(f"{svc.url}/pins", headers={"Authorization": "Bearer nope"}) as r:
            assert r.status == 401
            assert (await r.json())["error"]["reason"] == "UNAUTHORIZED"
        async with plain.get(f"{svc.url}/pins", headers={"Authorization": TOKEN}) as r:
            assert r.status == 401
        async with plain.get(f"{svc.url}/pins", headers=AUTH) as r:
            assert r.status == 200
    assert svc.count(status=401) == 3
    assert TOKEN not in repr(svc.requests)


async def test_add_returns_spec_pin_status(svc, http):
    cid = make_cid(1)
    ps = await add(
        http, svc, cid, name="n", origins=["/ip4/1.2.3.4/tcp/4001/p2p/QmX"], meta={"a": "b"}
    )
    assert ps["status"] == "queued"
    assert re.fullmatch(r"[0-9a-f]{32}", ps["requestid"])
    assert CREATED_RE.fullmatch(ps["created"])
    assert ps["pin"] == {
        "cid": cid,
        "name": "n",
        "origins": ["/ip4/1.2.3.4/tcp/4001/p2p/QmX"],
        "meta": {"a": "b"},
    }
    assert len(ps["delegates"]) == 1
    assert re.fullmatch(r"/ip4/127\.0\.0\.1/tcp/4001/p2p/12D3KooW\w{44}", ps["delegates"][0])
    assert ps["info"] == {}
    assert svc.requests[-1].body == ps["pin"]
    assert svc.get_pin(ps["requestid"]) == ps


async def test_same_cid_twice_gives_two_requests_and_unique_created(svc, http):
    cid = make_cid("dup")
    a = await add(http, svc, cid)
    b = await add(http, svc, cid)
    assert a["requestid"] != b["requestid"]
    assert [p["requestid"] for p in svc.pins_for_cid(cid)] == [a["requestid"], b["requestid"]]
    for i in range(50):
        svc.add_pin(make_cid(i))
    created = [p["created"] for p in svc.pins]
    assert created == sorted(created)
    assert len(set(created)) == len(created)


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "[]",
        json.dumps({"name": "no cid"}),
        json.dumps({"cid": "hello"}),
        json.dumps({"cid": 5}),
        json.dumps({"cid": make_cid(1), "name": "x" * 256}),
        json.dumps({"cid": make_cid(1), "name": None}),
        json.dumps({"cid": make_cid(1), "origins": [f"/ip4/1.1.1.{i}" for i in range(21)]}),
        json.dumps({"cid": make_cid(1), "meta": {"a": 1}}),
    ],
)
async def test_add_rejects_bad_pins(svc, http, body):
    async with http.post(f"{svc.url}/pins", data=body) as r:
        assert r.status == 400
        assert (await r.json())["error"]["reason"] == "BAD_REQUEST"
    assert svc.pins == []


async def test_cid_forms_accepted(svc, http):
    for cid in [
        "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG",
        "bafkqaaa",
        make_cid(9),
        "zdj7WWeQ43G6JJvLWQWZpyHuAMq6uYWRjkBXFad11vE2LHhQ7",
    ]:
        await add(http, svc, cid)
    assert len(svc.pins) == 4


async def test_unknown_path_and_method(svc, http):
    async with http.get(f"{svc.url}/nope") as r:
        assert r.status == 404
        assert (await r.json())["error"]["reason"] == "NOT_FOUND"
    async with http.put(f"{svc.url}/pins") as r:
        assert r.status == 405
        assert r.content_type == "application/json"


# ---------------------------------------------------------------------- listing


async def test_default_lists_pinned_only_newest_first_with_total_count(svc, http):
    ids = [(await add(http, svc, make_cid(i)))["requestid"] for i in range(25)]
    assert (await list_pins(http, svc)) == {"count": 0, "results": []}
    for rid in ids[:-1]:  # all but the newest are pinned
        svc.set_status(rid, "pinned")
    body = await list_pins(http, svc)
    assert body["count"] == 24
    assert [p["requestid"] for p in body["results"]] == ids[-2::-1][:10]
    every = await list_pins(http, svc, status="queued,pinning,pinned,failed", limit=1000)
    assert every["count"] == 25


async def test_pagination_with_before_reads_everything_once(svc, http):
    for i in range(23):
        svc.add_pin(make_cid(i), status="pinned")
    seen, before = [], None
    while True:
        params = {"limit": 10} | ({"before": before} if before else {})
        body = await list_pins(http, svc, **params)
        seen += [p["requestid"] for p in body["results"]]
        if body["count"] <= len(body["results"]):
            break
        before = body["results"][-1]["created"]
    assert seen == [p["requestid"] for p in reversed(svc.pins)]


async def test_filters(svc, http):
    a = svc.add_pin(make_cid("a"), name="Holiday.JPG", meta={"app": "x", "k": "1"}, status="pinned")
    b = svc.add_pin(make_cid("b"), name="holiday.jpg", meta={"app": "x"}, status="queued")
    c = svc.add_pin(make_cid("c"), status="failed")
    every = "queued,pinning,pinned,failed"

    async def ids(**params):
        return [p["requestid"] for p in (await list_pins(http, svc, **params))["results"]]

    assert await ids(status=every, cid=f"{make_cid('a')},{make_cid('c')}") == [
        c["requestid"],
        a["requestid"],
    ]
    assert await ids(status=every, name="holiday.jpg") == [b["requestid"]]
    assert await ids(status=every, name="holiday.jpg", match="iexact") == [
        b["requestid"],
        a["requestid"],
    ]
    assert await ids(status=every, name="day.J", match="partial") == [a["requestid"]]
    assert await ids(status=every, name="DAY", match="ipartial") == [
        b["requestid"],
        a["requestid"],
    ]
    assert await ids(status=every, meta=json.dumps({"app": "x", "k": "1"})) == [a["requestid"]]
    assert await ids(status=every, meta=json.dumps({"app": "x"})) == [
        b["requestid"],
        a["requestid"],
    ]
    assert await ids(status="queued,failed") == [c["requestid"], b["requestid"]]
    assert await ids(status=every, after=a["created"]) == [c["requestid"], b["requestid"]]
    assert await ids(status=every, after=a["created"], before=c["created"]) == [b["requestid"]]
    # A query string built by hand with URL-escaped meta, as in the spec's example.
    url = f"{svc.url}/pins?status=queued&meta=%7B%22app%22%3A%22x%22%7D"
    async with http.get(url) as r:
        assert [p["requestid"] for p in (await r.json())["results"]] == [b["requestid"]]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "1001"},
        {"limit": "ten"},
        {"cid": ",".join(make_cid(i) for i in range(11))},
        {"status": "bogus"},
        {"status": "pinned,bogus"},
        {"match": "fuzzy", "name": "x"},
        {"before": "yesterday"},
        {"before": "2024-01-01T00:00:00"},
        {"after": "2024-01-01 00:00:00+02:00"},
        {"meta": "{not json"},
        {"meta": "[1]"},
        {"name": "x" * 256},
        [("status", "pinned"), ("status", "queued")],
    ],
)
async def test_list_bad_queries_are_400(svc, http, params):
    async with http.get(f"{svc.url}/pins", params=params) as r:
        assert r.status == 400
        assert r.content_type == "application/json"
        assert (await r.json())["error"]["reason"] == "BAD_REQUEST"


async def test_list_accepts_limits_and_rfc3339_forms(svc, http):
    for params in (
        {"limit": "1"},
        {"limit": "1000"},
        {"cid": ",".join(make_cid(i) for i in range(10))},
        {"before": "2024-01-01T00:00:00.123456789Z"},
        {"before": "2024-01-01T02:00:00+02:00"},
    ):
        await list_pins(http, svc, **params)


def test_rfc3339_helpers():
    assert parse_rfc3339("1970-01-01T00:00:01.5Z") == 1_500_000_000
    assert parse_rfc3339("1970-01-01T01:00:00+01:00") == 0
    assert format_created(1_500_001_000) == "1970-01-01T00:00:01.500001Z"
    with pytest.raises(ValueError):
        parse_rfc3339("1970-01-01")


# ---------------------------------------------------------------------- single pin operations


async def test_get_replace_delete(svc, http):
    old = await add(http, svc, make_cid("old"), name="v1")
    status, body = await get(http, f"{svc.url}/pins/{old['requestid']}")
    assert (status, body) == (200, old)
    assert (await get(http, f"{svc.url}/pins/unknown"))[0] == 404

    async with http.post(f"{svc.url}/pins/{old['requestid']}", json={"cid": make_cid("new")}) as r:
        assert r.status == 202
        new = await r.json()
    assert new["requestid"] != old["requestid"]
    assert new["pin"]["cid"] == make_cid("new")
    assert new["created"] > old["created"]
    status, body = await get(http, f"{svc.url}/pins/{old['requestid']}")
    assert status == 404
    assert body["error"]["reason"] == "NOT_FOUND"
    assert (await get(http, f"{svc.url}/pins/{new['requestid']}"))[0] == 200
    async with http.post(f"{svc.url}/pins/{old['requestid']}", json={"cid": make_cid(3)}) as r:
        assert r.status == 404

    async with http.delete(f"{svc.url}/pins/{new['requestid']}") as r:
        assert r.status == 202
        assert await r.read() == b""
    async with http.delete(f"{svc.url}/pins/{new['requestid']}") as r:
        assert r.status == 404
    assert svc.pins == []


async def test_base_path():
    async with (
        FakePinningService(token=TOKEN, base_path="/psa/") as svc,
        aiohttp.ClientSession(headers=AUTH) as http,
    ):
        assert svc.url.endswith("/psa")
        ps = await add(http, svc, make_cid(1))
        assert (await get(http, f"{svc.url}/pins/{ps['requestid']}"))[0] == 200
        async with http.get(f"http://127.0.0.1:{svc.port}/pins") as r:
            assert r.status == 404
        assert svc.requests[0].path == "/pins"


# ---------------------------------------------------------------------- status transitions


async def test_transitions_by_time_and_fail_cids(http):
    bad = make_cid("bad")
    async with FakePinningService(token=TOKEN, transition_after=0.4, fail_cids={bad}) as svc:
        good = await add(http, svc, make_cid("good"))
        failing = await add(http, svc, bad)
        assert good["status"] == failing["status"] == "queued"
        await asyncio.sleep(0.5)  # age 0.5: pinning until 0.8
        assert (await get(http, f"{svc.url}/pins/{good['requestid']}"))[1]["status"] == "pinning"
        await asyncio.sleep(0.4)
        assert (await get(http, f"{svc.url}/pins/{good['requestid']}"))[1]["status"] == "pinned"
        _, body = await get(http, f"{svc.url}/pins/{failing['requestid']}")
        assert body["status"] == "failed"
        assert body["info"]["status_details"] == FAIL_DETAILS
        assert [p["requestid"] for p in (await list_pins(http, svc))["results"]] == [
            good["requestid"]
        ]


async def test_transition_after_zero_is_instant(http):
    async with FakePinningService(token=TOKEN, transition_after=0) as svc:
        assert (await add(http, svc, make_cid(1)))["status"] == "pinned"


async def test_set_status_and_vanish(svc, http):
    cid = make_cid("x")
    a = await add(http, svc, cid)
    b = await add(http, svc, cid)
    assert svc.set_status(a["requestid"], "pinning", "50%") == [a["requestid"]]
    body = (await get(http, f"{svc.url}/pins/{a['requestid']}"))[1]
    assert (body["status"], body["info"]) == ("pinning", {"status_details": "50%"})
    assert svc.set_status(cid, "failed", "lack of funds") == [a["requestid"], b["requestid"]]
    assert {p["status"] for p in svc.pins_for_cid(cid)} == {"failed"}
    with pytest.raises(KeyError):
        svc.set_status(make_cid("unknown"), "pinned")
    with pytest.raises(ValueError):
        svc.set_status(cid, "done")
    svc.vanish(a["requestid"])
    assert (await get(http, f"{svc.url}/pins/{a['requestid']}"))[0] == 404
    assert [p["requestid"] for p in svc.pins_for_cid(cid)] == [b["requestid"]]


async def test_fail_cids_file_is_reloaded(tmp_path, http):
    path = tmp_path / "fail.txt"
    async with FakePinningService(token=TOKEN, transition_after=0, fail_cids_file=path) as svc:
        assert (await add(http, svc, make_cid(1)))["status"] == "pinned"
        path.write_text(f"{make_cid(2)}\n")
        assert (await add(http, svc, make_cid(2)))["status"] == "failed"


# ---------------------------------------------------------------------- quirk switches


async def test_quirk_oldest_first_and_page_count(http):
    async with FakePinningService(
        token=TOKEN, order="oldest_first", count_mode="page", default_all_statuses=True
    ) as svc:
        ids = [(await add(http, svc, make_cid(i)))["requestid"] for i in range(13)]
        body = await list_pins(http, svc)  # queued pins listed: no pinned-only default
        assert body["count"] == 10
        assert [p["requestid"] for p in body["results"]] == ids[:10]


async def test_quirk_inclusive_before_with_shared_created(http):
    async with FakePinningService(
        token=TOKEN, inclusive_before=True, same_created_batch=3, default_all_statuses=True
    ) as svc:
        pins = [await add(http, svc, make_cid(i)) for i in range(6)]
        assert len({p["created"] for p in pins}) == 2
        first = await list_pins(http, svc, limit=2)
        second = await list_pins(http, svc, limit=2, before=first["results"][-1]["created"])
        overlap = {p["requestid"] for p in first["results"]} & {
            p["requestid"] for p in second["results"]
        }
        assert overlap  # duplicates across pages, like ipfs-cluster


async def test_quirk_requestid_is_cid(http):
    async with FakePinningService(token=TOKEN, requestid_is_cid=True) as svc:
        cid = make_cid(1)
        a = await add(http, svc, cid)
        b = await add(http, svc, cid)
        assert a["requestid"] == b["requestid"] == cid
        assert len(svc.pins) == 1
        async with http.post(f"{svc.url}/pins/{cid}", json={"cid": make_cid(2)}) as r:
            assert (await r.json())["requestid"] == make_cid(2)
        assert [p["pin"]["cid"] for p in svc.pins] == [make_cid(2)]


async def test_quirk_ignore_limit_over(http):
    async with FakePinningService(token=TOKEN, ignore_limit_over=5) as svc:
        for i in range(8):
            svc.add_pin(make_cid(i), status="pinned")
        body = await list_pins(http, svc, limit=1000)
        assert (body["count"], len(body["results"])) == (8, 5)


# ---------------------------------------------------------------------- faults


async def test_status_fault_targeting_times_and_skip(svc, http):
    rule = svc.inject(
        Fault("status", status=409, details="no money"), method="POST", path="/pins", times=2
    )
    svc.inject(Fault("status", status=503), method="GET", path="/pins/*", skip=1)
    for _ in range(2):
        async with http.post(f"{svc.url}/pins", json={"cid": make_cid(1)}) as r:
            assert r.status == 409
            assert await r.json() == {
                "error": {"reason": "INSUFFICIENT_FUNDS", "details": "no money"}
            }
    assert svc.pins == []
    assert (await list_pins(http, svc))["count"] == 0  # GET /pins is not targeted
    ps = await add(http, svc, make_cid(1))
    assert rule.hits == 2 and rule.exhausted
    url = f"{svc.url}/pins/{ps['requestid']}"
    assert [(await get(http, url))[0] for _ in range(3)] == [200, 503, 200]
    assert svc.requests[-2].fault == Fault("status", status=503)
    assert svc.requests[-1].fault is None


@pytest.mark.parametrize("code", [401, 403, 404, 500, 502])
async def test_status_fault_codes(svc, http, code):
    svc.inject(Fault("status", status=code))
    status, body = await get(http, f"{svc.url}/pins")
    assert status == code
    assert body["error"]["reason"]


async def test_rate_limit_seconds_and_violations(svc, http):
    svc.in_flight_grace = 0.0  # count every early request, even one already on the wire
    svc.inject(Fault("rate_limit", retry_after=0.3, reset_header=True), path="/pins")
    async with http.get(f"{svc.url}/pins") as r:
        assert r.status == 429
        assert r.headers["Retry-After"] == "0.300"
        assert r.headers["X-RateLimit-Remaining"] == "0"
        assert r.headers["X-RateLimit-Limit"]
        assert int(r.headers["X-RateLimit-Reset"]) >= time.time()
    assert svc.rate_limit_violations == []
    async with http.get(f"{svc.url}/pins/whatever") as r:  # too early: a violation
        assert r.status == 429
        assert 0 < float(r.headers["Retry-After"]) <= 0.3
    [violation] = svc.rate_limit_violations
    assert violation.path == "/pins/whatever" and violation.early_by > 0
    await asyncio.sleep(0.3)
    assert (await get(http, f"{svc.url}/pins"))[0] == 200
    assert len(svc.rate_limit_violations) == 1


async def test_rate_limit_http_date(svc, http):
    svc.inject(Fault("rate_limit", retry_after=1, retry_after_header="http_date"))
    async with http.post(f"{svc.url}/pins", json={"cid": make_cid(1)}) as r:
        assert r.status == 429
        when = parsedate_to_datetime(r.headers["Retry-After"]).timestamp()
        assert time.time() < when <= time.time() + 2
        assert "X-RateLimit-Reset" not in r.headers
    assert svc.rate_limited_until == when
    svc.clear_faults()
    assert (await get(http, f"{svc.url}/pins"))[0] == 200
    assert svc.rate_limit_violations == []


async def test_reset_before_and_after_apply(svc, http):
    svc.inject(Fault("reset"), method="POST", path="/pins")
    with pytest.raises(aiohttp.ClientConnectionError):
        await add(http, svc, make_cid(1))
    assert svc.pins_for_cid(make_cid(1)) == []
    assert svc.requests[-1].status is None

    svc.inject(Fault("reset", after_apply=True, rst=False), method="POST", path="/pins")
    with pytest.raises(aiohttp.ClientConnectionError):
        await add(http, svc, make_cid(1))
    [stored] = svc.pins_for_cid(make_cid(1))  # created, but the answer was lost
    assert svc.requests[-1].applied_status == 202
    assert svc.requests[-1].status is None
    assert (await get(http, f"{svc.url}/pins/{stored['requestid']}"))[0] == 200


async def test_hang_and_clean_stop(http):
    svc = FakePinningService(token=TOKEN)
    await svc.start()
    try:
        svc.inject(Fault("hang", after_apply=True), method="POST")
        with pytest.raises(TimeoutError):
            await http.post(
                f"{svc.url}/pins",
                json={"cid": make_cid(1)},
                timeout=aiohttp.ClientTimeout(total=0.2),
            )
        assert len(svc.pins_for_cid(make_cid(1))) == 1
        svc.inject(Fault("hang"), method="GET")
        pending = asyncio.ensure_future(http.get(f"{svc.url}/pins"))
        await asyncio.sleep(0.1)
    finally:
        started = time.monotonic()
        await svc.stop()
        assert time.monotonic() - started < 1.0
    with pytest.raises(aiohttp.ClientConnectionError):
        await pending


async def test_slow(svc, http):
    svc.inject(Fault("slow", delay=0.2))
    started = time.monotonic()
    assert (await add(http, svc, make_cid(1)))["pin"]["cid"] == make_cid(1)
    assert time.monotonic() - started >= 0.2


async def test_malformed_and_html(svc, http):
    svc.inject(Fault("malformed"), method="GET", path="/pins")
    async with http.get(f"{svc.url}/pins") as r:
        assert r.status == 200
        with pytest.raises(ValueError):
            json.loads(await r.text())
    svc.inject(Fault("malformed", shape="wrong_shape"), method="GET", path="/pins")
    assert await get(http, f"{svc.url}/pins") == (200, {"count": "x", "results": {"oops": True}})
    svc.inject(Fault("malformed", shape="wrong_shape", after_apply=True), method="POST")
    async with http.post(f"{svc.url}/pins", json={"cid": make_cid(1)}) as r:
        assert r.status == 202
        assert (await r.json())["requestid"] == 7
    assert len(svc.pins) == 1
    svc.inject(Fault("html_500"))
    async with http.get(f"{svc.url}/pins") as r:
        assert r.status == 500
        assert r.content_type == "text/html"
        assert "<pre>Error:" in await r.text()


async def test_chaos_is_seeded_and_targeted(svc, http):
    svc.chaos(0.5, [Fault("status", status=502)], seed=7, method="GET")

    async def run():
        return [(await get(http, f"{svc.url}/pins"))[0] for _ in range(20)]

    first = await run()
    assert set(first) == {200, 502}
    svc.chaos(0.5, [Fault("status", status=502)], seed=7, method="GET")
    assert await run() == first
    await add(http, svc, make_cid(1))  # POST untouched
    svc.chaos(0)
    assert set(await run()) == {200}


async def test_request_recording(svc, http):
    await add(http, svc, make_cid(1))
    await list_pins(http, svc, limit=5)
    rec = svc.requests[-1]
    assert (rec.method, rec.path, rec.query, rec.status) == ("GET", "/pins", {"limit": "5"}, 200)
    assert svc.count() == 2
    assert svc.count("post") == 1
    assert svc.count(path_prefix="/pins") == 2


async def test_restart_keeps_port_and_pins(http):
    svc = FakePinningService(token=TOKEN)
    async with svc:
        ps = await add(http, svc, make_cid(1))
        port = svc.port
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(http, f"{svc.url}/pins")
    async with svc:
        assert svc.port == port
        assert (await get(http, f"{svc.url}/pins/{ps['requestid']}"))[0] == 200


async def test_large_store_is_fast(svc, http):
    for i in range(20_000):
        svc.add_pin(make_cid(i), status="pinned")
    started = time.monotonic()
    seen, before = 0, None
    while True:
        body = await list_pins(http, svc, limit=1000, **({"before": before} if before else {}))
        seen += len(body["results"])
        if body["count"] <= len(body["results"]):
            break
        before = body["results"][-1]["created"]
    assert seen == 20_000
    for p in svc.pins[:10_000]:
        svc.vanish(p["requestid"])
    assert (await list_pins(http, svc, limit=1))["count"] == 10_000
    assert time.monotonic() - started < 3.0


# ---------------------------------------------------------------------- standalone process


async def test_standalone_process(tmp_path):
    fail = tmp_path / "fail"
    fail.write_text(make_cid("bad") + "\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.fake_psa",
        "--port",
        "0",
        "--token",
        "T",
        "--transition-after",
        "0",
        "--fail-cids-file",
        str(fail),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 10)
        port = json.loads(line)["port"]
        async with aiohttp.ClientSession(headers={"Authorization": "Bearer T"}) as http:
            url = f"http://127.0.0.1:{port}/pins"
            async with http.post(url, json={"cid": make_cid("bad")}) as r:
                assert r.status == 202
                assert (await r.json())["status"] == "failed"
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.communicate()
    assert proc.returncode == 0
