"""The Pinning Service API client against the third-party npm `mock-ipfs-pinning-service`."""

from __future__ import annotations

import asyncio

import pytest

from pinsyncd.cids import multihash_of
from pinsyncd.psa import (
    ALL_STATUSES,
    ListingReport,
    NotFound,
    Pin,
    PinningServiceClient,
    ServerError,
    Status,
    Unauthorized,
    find_pins,
    iter_pins,
)
from pinsyncd.tokens import Secret
from tests.cidgen import random_cid, random_cids
from tests.peers import MockPinningService


def client_for(mock: MockPinningService, token: str | None = None) -> PinningServiceClient:
    return PinningServiceClient("mock", mock.url, Secret(token or mock.token, "test"))


async def add_many(client: PinningServiceClient, cids: list[str], concurrency: int = 8) -> None:
    limit = asyncio.Semaphore(concurrency)

    async def add(cid: str) -> None:
        async with limit:
            await client.add_pin(Pin(cid=cid, name=f"n-{cid[-6:]}"))

    await asyncio.gather(*(add(cid) for cid in cids))


async def test_all_five_operations(mock_psa: MockPinningService) -> None:
    cid, other = random_cid(), random_cid()
    async with client_for(mock_psa) as client:
        added = await client.add_pin(
            Pin(cid=cid, name="backup", meta={"app_id": "pinsyncd"}, origins=["/ip4/1.2.3.4"])
        )
        assert added.status is Status.QUEUED
        assert added.pin.cid == cid and added.pin.name == "backup"
        assert added.delegates, "the mock returns its (loopback) delegates"

        fetched = await client.get_pin(added.requestid)
        assert fetched.requestid == added.requestid and fetched.created == added.created

        mock_psa.set_status(cid, "pinned")
        pinned = await client.list_pins(statuses=[Status.PINNED], limit=10)
        assert [p.requestid for p in pinned.results] == [added.requestid]

        replaced = await client.replace_pin(added.requestid, Pin(cid=other, name="backup"))
        assert replaced.requestid != added.requestid and replaced.pin.cid == other
        with pytest.raises(NotFound) as gone:
            await client.get_pin(added.requestid)
        assert gone.value.status == 404
        assert "\n" not in str(gone.value), "the mock's stack trace is cut to one line"

        await client.delete_pin(replaced.requestid)
        with pytest.raises(NotFound):
            await client.delete_pin(replaced.requestid)
        everything = await client.list_pins(statuses=ALL_STATUSES)
        assert everything.results == []
        assert client.requests == {"add": 1, "get": 2, "list": 2, "replace": 1, "delete": 2}


async def test_wrong_token_is_unauthorized_and_never_shown(mock_psa: MockPinningService) -> None:
    async with PinningServiceClient(
        "mock", mock_psa.url, Secret("wrong-token-value", "$MOCK_TOKEN")
    ) as client:
        with pytest.raises(Unauthorized) as caught:
            await client.add_pin(Pin(cid=random_cid()))
    message = str(caught.value)
    assert caught.value.status == 401
    assert "token from $MOCK_TOKEN was refused" in message
    assert "wrong-token-value" not in message and "wrong-token-value" not in repr(caught.value)


async def test_pages_through_more_than_1000_pins(mock_psa: MockPinningService) -> None:
    """The mock lists oldest-first and sets count = page length; nothing may be missed."""
    cids = random_cids(2300)
    async with client_for(mock_psa) as client:
        await add_many(client, cids)
        report = ListingReport()
        listed = [pin async for pin in iter_pins(client, report=report)]
    assert sorted(p.pin.cid for p in listed) == sorted(cids)
    assert len({p.requestid for p in listed}) == len(cids)
    assert report.order == "oldest_first"
    assert report.pages == 3, "pages of 1000: 1000 + 1000 + 300"


async def test_status_filter_is_sent_explicitly(mock_psa: MockPinningService) -> None:
    cids = random_cids(5)
    async with client_for(mock_psa) as client:
        await add_many(client, cids)
        for cid in cids[:2]:
            mock_psa.set_status(cid, "pinned")
        mock_psa.set_status(cids[2], "failed")
        pinned = [p async for p in iter_pins(client, statuses=[Status.PINNED])]
        pending = [p async for p in iter_pins(client, statuses=[Status.QUEUED, Status.PINNING])]
        failed = [p async for p in iter_pins(client, statuses=[Status.FAILED])]
    assert sorted(p.pin.cid for p in pinned) == sorted(cids[:2])
    assert sorted(p.pin.cid for p in pending) == sorted(cids[3:])
    assert [p.pin.cid for p in failed] == [cids[2]]


async def test_find_pins_by_cid_in_chunks_and_across_versions(
    mock_psa: MockPinningService,
) -> None:
    v0 = random_cid(version=0)
    cids = [*random_cids(24), v0]
    async with client_for(mock_psa) as client:
        await add_many(client, cids[:20])
        await client.add_pin(Pin(cid=v0))
        # Ask for the v0 pin by its CIDv1: the mock compares strings, so both forms are sent.
        from multiformats import CID

        v1_of_v0 = CID.decode(v0).set(version=1).encode("base32")
        asked = [*cids[:24], v1_of_v0]
        before = client.requests["list"]
        found = await find_pins(client, asked)
        sent = client.requests["list"] - before
    assert sent == 3, "25 CIDs + 1 extra spelling = 26 strings, 10 per request"
    for cid in cids[:20]:
        assert [p.pin.cid for p in found[multihash_of(cid)]] == [cid]
    for cid in cids[20:24]:
        assert found[multihash_of(cid)] == []
    assert [p.pin.cid for p in found[multihash_of(v0)]] == [v0]


async def test_mock_meta_filter_crash_is_a_clear_server_error(
    mock_psa: MockPinningService,
) -> None:
    """The mock answers any `meta` filter with an HTML 500 page."""
    async with client_for(mock_psa) as client:
        with pytest.raises(ServerError) as caught:
            await client.list_pins(meta={"app_id": "pinsyncd"}, statuses=ALL_STATUSES)
    assert caught.value.status == 500
    assert "not a Failure JSON" in str(caught.value)
