"""The Pinning Service API client against our own spec-faithful service (tests/fake_psa.py):
the quirks the npm mock cannot show, every error class, and the redirect policy."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from aiohttp import web

from pinsyncd.cids import multihash_of
from pinsyncd.psa import (
    ALL_STATUSES,
    BadRequest,
    InsufficientFunds,
    ListingReport,
    MalformedResponse,
    NetworkError,
    NotFound,
    Pin,
    PinningServiceClient,
    RateLimited,
    RedirectRefused,
    ServerError,
    Status,
    Unauthorized,
    clip_name,
    find_pins,
    iter_pins,
)
from pinsyncd.psa.errors import retry_after_seconds
from pinsyncd.tokens import Secret
from tests.cidgen import random_cid, random_cids
from tests.fake_psa import FakePinningService, Fault
from tests.servers import SPEC_TOKEN, client_for, serving

TOKEN = SPEC_TOKEN


def seed(svc: FakePinningService, count: int, status: str = "pinned") -> list[str]:
    cids = random_cids(count)
    for cid in cids:
        svc.add_pin(cid, name=f"n-{cid[-6:]}", status=status)
    return cids


# --- listing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "quirks",
    [
        pytest.param({}, id="spec: newest-first, count=total"),
        pytest.param({"order": "oldest_first", "count_mode": "page"}, id="npm-mock-like"),
        pytest.param({"inclusive_before": True, "default_all_statuses": True}, id="cluster-like"),
        pytest.param({"same_created_batch": 7}, id="repeated timestamps"),
        pytest.param({"same_created_batch": 7, "order": "oldest_first"}, id="repeated, oldest"),
        pytest.param({"ignore_limit_over": 400}, id="server caps the page size"),
    ],
)
async def test_listing_sees_every_pin_exactly_once(quirks: dict[str, object]) -> None:
    async with FakePinningService(token=TOKEN, **quirks) as svc:  # type: ignore[arg-type]
        cids = seed(svc, 2500)
        async with client_for(svc) as client:
            report = ListingReport()
            listed = [pin async for pin in iter_pins(client, report=report)]
    assert len(listed) == 2500
    assert {p.pin.cid for p in listed} == set(cids)
    assert report.pages <= 8
    assert report.duplicates <= report.pages * 7, "overlap is at most the boundary timestamp"
    for request in svc.requests:
        assert request.query["status"] == "queued,pinning,pinned,failed"
        assert request.query["limit"] == "1000"


async def test_listing_stops_when_a_server_ignores_the_cursor(
    service: FakePinningService,
) -> None:
    """A server that ignores `before` returns the same page forever; we stop at once."""
    seed(service, 1200)
    async with client_for(service) as client:
        original = client.list_pins

        async def without_cursor(**kwargs: object) -> object:
            kwargs["before"] = kwargs["after"] = None
            return await original(**kwargs)  # type: ignore[arg-type]

        client.list_pins = without_cursor  # type: ignore[method-assign]
        listed = [pin async for pin in iter_pins(client)]
    assert len(listed) == 1000
    assert service.count(method="GET") == 2


async def test_default_status_filter_is_pinned_only_so_we_always_send_one(
    service: FakePinningService,
) -> None:
    seed(service, 3, status="queued")
    seed(service, 2, status="pinned")
    async with client_for(service) as client:
        bare = await client.list_pins()
        every = [p async for p in iter_pins(client)]
        queued = [p async for p in iter_pins(client, statuses=[Status.QUEUED])]
    assert bare.count == 2, "the spec's default: pinned only"
    assert len(every) == 5
    assert len(queued) == 3


async def test_find_pins_sends_at_most_10_cids_per_request(service: FakePinningService) -> None:
    cids = seed(service, 25)
    async with client_for(service) as client:
        found = await find_pins(client, [*cids, random_cid()])
    lists = [r for r in service.requests if r.method == "GET"]
    assert [len(r.query["cid"].split(",")) for r in lists] == [10, 10, 6]
    assert all(len(found[multihash_of(cid)]) == 1 for cid in cids)


async def test_find_pins_sees_duplicates(service: FakePinningService) -> None:
    """Two requests for one CID both come back, so a caller can see a duplicate."""
    cid = random_cid()
    async with client_for(service) as client:
        await client.add_pin(Pin(cid=cid))
        await client.add_pin(Pin(cid=cid))
        found = await find_pins(client, [cid])
    assert len(found[multihash_of(cid)]) == 2


async def test_operations_and_transitions(service: FakePinningService) -> None:
    cid = random_cid()
    async with client_for(service) as client:
        added = await client.add_pin(Pin(cid=cid, name="x", meta={"app_id": "a"}))
        assert added.status is Status.QUEUED
        service.set_status(added.requestid, "failed", "DAG too big")
        failed = await client.get_pin(added.requestid)
        assert failed.status is Status.FAILED
        assert failed.info["status_details"] == "DAG too big"
        replaced = await client.replace_pin(added.requestid, Pin(cid=cid, name="x"))
        assert replaced.requestid != added.requestid
        with pytest.raises(NotFound):
            await client.get_pin(added.requestid)
        await client.delete_pin(replaced.requestid)
    body = service.requests[0].body
    assert body == {"cid": cid, "name": "x", "meta": {"app_id": "a"}}, "no nulls, no empty keys"


# --- errors ----------------------------------------------------------------------------------


async def test_unauthorized(service: FakePinningService) -> None:
    async with PinningServiceClient("spec", service.url, Secret("nope", "/run/creds/x")) as client:
        with pytest.raises(Unauthorized, match=r"token from /run/creds/x was refused \(HTTP 401"):
            await client.list_pins()


async def test_forbidden_is_unauthorized_too(service: FakePinningService) -> None:
    service.inject(Fault("status", status=403, reason="FORBIDDEN"))
    async with client_for(service) as client:
        with pytest.raises(Unauthorized):
            await client.list_pins()


async def test_insufficient_funds(service: FakePinningService) -> None:
    service.inject(Fault("status", status=409, details="plan limit reached"), method="POST")
    async with client_for(service) as client:
        with pytest.raises(InsufficientFunds) as caught:
            await client.add_pin(Pin(cid=random_cid()))
    assert caught.value.reason == "INSUFFICIENT_FUNDS"
    assert caught.value.details == "plan limit reached"
    assert str(caught.value) == ("spec: add: HTTP 409 INSUFFICIENT_FUNDS: plan limit reached")


async def test_bad_request_from_the_server(service: FakePinningService) -> None:
    async with client_for(service) as client:
        with pytest.raises(BadRequest, match="HTTP 400"):
            await client.add_pin(Pin(cid="not-a-cid"))


async def test_client_side_limits() -> None:
    async with PinningServiceClient("x", "http://127.0.0.1:1", Secret("t", "t")) as client:
        with pytest.raises(ValueError, match="at most 10 CIDs"):
            await client.list_pins(cids=random_cids(11))
        with pytest.raises(ValueError, match="limit must be"):
            await client.list_pins(limit=1001)
        assert client.requests["list"] == 0, "refused before anything was sent"


@pytest.mark.parametrize("header", ["seconds", "http_date"])
async def test_rate_limited_with_retry_after(service: FakePinningService, header: str) -> None:
    service.inject(Fault("rate_limit", retry_after=30, retry_after_header=header))  # type: ignore[arg-type]
    async with client_for(service) as client:
        with pytest.raises(RateLimited) as caught:
            await client.list_pins()
        with pytest.raises(RateLimited, match="not sent: the service asked to wait"):
            await client.add_pin(Pin(cid=random_cid()))
    assert caught.value.retry_after is not None
    assert 27 <= caught.value.retry_after <= 31  # an HTTP-date has whole seconds
    assert service.count() == 1, "nothing more is sent before Retry-After"
    assert service.rate_limit_violations == []


async def test_short_retry_after_is_waited_out_then_the_read_succeeds(
    service: FakePinningService,
) -> None:
    service.inject(Fault("rate_limit", retry_after=0.4), method="GET")
    async with client_for(service) as client:
        started = time.monotonic()
        page = await client.list_pins()
        waited = time.monotonic() - started
        assert client.throttle.rate_limited == 1
    assert page.count == 0
    assert waited >= 0.4
    assert service.count(method="GET") == 2
    assert service.rate_limit_violations == []


async def test_transient_read_errors_are_retried(service: FakePinningService) -> None:
    service.inject(Fault("status", status=503), method="GET", times=2)
    async with client_for(service) as client:
        assert (await client.list_pins()).count == 0
    assert service.count(method="GET") == 3


async def test_creates_are_never_retried_by_the_client(service: FakePinningService) -> None:
    service.inject(Fault("status", status=503), method="POST", times=1)
    async with client_for(service) as client:
        with pytest.raises(ServerError):
            await client.add_pin(Pin(cid=random_cid()))
    assert service.count(method="POST") == 1


async def test_rate_limited_with_reset_header_only(service: FakePinningService) -> None:
    service.inject(Fault("rate_limit", retry_after=20, retry_after_header=None, reset_header=True))
    async with client_for(service) as client:
        with pytest.raises(RateLimited) as caught:
            await client.add_pin(Pin(cid=random_cid()))
    assert caught.value.status == 429
    assert caught.value.retry_after is not None
    assert 18 <= caught.value.retry_after <= 21


def test_retry_after_parsing() -> None:
    from multidict import CIMultiDict, CIMultiDictProxy

    now = time.time()

    def wait(**headers: str) -> float | None:
        return retry_after_seconds(CIMultiDictProxy(CIMultiDict(headers)), now=now)

    later = datetime.fromtimestamp(now + 90, UTC)
    assert wait(**{"Retry-After": "60"}) == 60
    assert wait(**{"Retry-After": "0.5"}) == 0.5
    assert 89 <= (wait(**{"Retry-After": format_datetime(later, usegmt=True)}) or 0) <= 90
    assert wait(**{"X-RateLimit-Reset": str(int(now + 42))}) == pytest.approx(42, abs=1)
    assert wait(**{"X-RateLimit-Reset": "15"}) == 15, "small values are seconds from now"
    assert wait(**{"Retry-After": "5", "X-RateLimit-Reset": str(int(now + 50))}) == (
        pytest.approx(50, abs=1)
    ), "the longer wait wins"
    assert wait(**{"Retry-After": "garbage"}) is None
    assert wait() is None
    assert wait(**{"Retry-After": format_datetime(datetime(2000, 1, 1, tzinfo=UTC))}) == 0


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors(service: FakePinningService, status: int) -> None:
    service.inject(Fault("status", status=status), times=None)
    async with client_for(service) as client:
        with pytest.raises(ServerError) as caught:
            await client.list_pins()
    assert caught.value.status == status and caught.value.transient


async def test_html_500(service: FakePinningService) -> None:
    service.inject(Fault("html_500"), times=None)
    async with client_for(service) as client:
        with pytest.raises(ServerError, match="not a Failure JSON"):
            await client.list_pins()


@pytest.mark.parametrize(
    ("shape", "message"),
    [("not_json", "the answer is not JSON"), ("wrong_shape", "does not match the spec: count")],
)
async def test_malformed_answers(service: FakePinningService, shape: str, message: str) -> None:
    service.inject(Fault("malformed", shape=shape), times=None)  # type: ignore[arg-type]
    async with client_for(service) as client:
        with pytest.raises(MalformedResponse, match=message):
            await client.list_pins()


async def test_malformed_pin_status_names_the_field(service: FakePinningService) -> None:
    service.inject(Fault("malformed", status=202, body='{"requestid": "r", "status": "done"}'))
    async with client_for(service) as client:
        with pytest.raises(MalformedResponse) as caught:
            await client.add_pin(Pin(cid=random_cid()))
    assert "status: Input should be 'queued', 'pinning', 'pinned' or 'failed'" in str(caught.value)


@pytest.mark.parametrize("rst", [True, False])
async def test_reset_after_apply_may_have_applied(service: FakePinningService, rst: bool) -> None:
    """The pin was created but the answer was lost: the error must say it may have applied."""
    service.inject(Fault("reset", after_apply=True, rst=rst), method="POST")
    cid = random_cid()
    async with client_for(service) as client:
        with pytest.raises(NetworkError) as caught:
            await client.add_pin(Pin(cid=cid))
        assert caught.value.maybe_applied
        found = await find_pins(client, [cid])
    assert len(found[multihash_of(cid)]) == 1, "and a lookup finds the pin"


async def test_hang_times_out(service: FakePinningService) -> None:
    service.inject(Fault("hang"), times=None)
    async with client_for(service, timeout=0.3) as client:
        started = time.monotonic()
        with pytest.raises(NetworkError, match=r"no answer within 0\.3s") as caught:
            await client.list_pins()
    assert time.monotonic() - started < 5, "three tries of 0.3 s, not a hang (the fault hangs 1 h)"
    assert caught.value.maybe_applied


async def test_connection_refused_cannot_have_applied() -> None:
    async with FakePinningService(token=TOKEN) as svc:
        url = svc.url
    async with PinningServiceClient("gone", url, Secret(TOKEN, "t")) as client:
        with pytest.raises(NetworkError, match="cannot connect") as caught:
            await client.add_pin(Pin(cid=random_cid()))
    assert not caught.value.maybe_applied


async def test_slow_answer_within_timeout(service: FakePinningService) -> None:
    service.inject(Fault("slow", delay=0.2))
    async with client_for(service, timeout=5) as client:
        assert (await client.list_pins()).count == 0


async def test_endpoint_with_a_base_path() -> None:
    async with FakePinningService(token=TOKEN, base_path="/psa") as svc:
        async with client_for(svc) as client:
            added = await client.add_pin(Pin(cid=random_cid()))
            assert (await client.get_pin(added.requestid)).requestid == added.requestid
        assert svc.url.endswith("/psa")


# --- redirects -------------------------------------------------------------------------------


@pytest.fixture
async def redirector() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """Two origins on 127.0.0.1. Origin A serves endpoints `/{other|same}-{code}`: `other`
    redirects to origin B, `same` to `/moved` on A. B records every header it is sent."""
    seen: list[dict[str, str]] = []
    pin_status = {
        "requestid": "r1",
        "status": "queued",
        "created": "2026-01-01T00:00:00Z",
        "pin": {"cid": "bafkqaaa"},
        "delegates": [],
    }

    async def record(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response({"count": 0, "results": []})

    async with serving(record) as url_b:

        async def redirect(request: web.Request) -> web.Response:
            if request.path.startswith("/moved"):
                body = pin_status if request.method == "POST" else {"count": 0, "results": []}
                return web.json_response(body, status=202 if request.method == "POST" else 200)
            mode, code = request.path.strip("/").split("/")[0].split("-")
            location = f"{url_b}/pins" if mode == "other" else "/moved/pins"
            return web.Response(status=int(code), headers={"Location": location})

        async with serving(redirect) as url_a:
            yield url_a, seen


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
async def test_redirect_to_another_origin_never_gets_the_token(
    redirector: tuple[str, list[dict[str, str]]], code: int
) -> None:
    url_a, seen = redirector
    async with PinningServiceClient("r", f"{url_a}/other-{code}", Secret(TOKEN, "t")) as client:
        with pytest.raises(RedirectRefused, match="another origin"):
            await client.list_pins()
        with pytest.raises(RedirectRefused, match="another origin"):
            await client.add_pin(Pin(cid=random_cid()))
    assert seen == [], "the other origin was never contacted"


async def test_same_origin_redirects(redirector: tuple[str, list[dict[str, str]]]) -> None:
    url_a, _ = redirector
    async with PinningServiceClient("r", f"{url_a}/same-301", Secret(TOKEN, "t")) as client:
        assert (await client.list_pins(statuses=ALL_STATUSES)).count == 0
        with pytest.raises(RedirectRefused, match="HTTP 301 redirect for POST"):
            await client.add_pin(Pin(cid=random_cid()))
    async with PinningServiceClient("r", f"{url_a}/same-307", Secret(TOKEN, "t")) as client:
        assert (await client.add_pin(Pin(cid=random_cid()))).requestid == "r1"


def test_clip_name_on_utf8_boundary() -> None:
    assert clip_name("a" * 300) == "a" * 255
    clipped = clip_name("é" * 200)  # 2 bytes each
    assert clipped == "é" * 127 and len(clipped.encode()) == 254
    assert clip_name("short") == "short"
