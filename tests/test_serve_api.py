"""`pinsyncd serve` in this process, on a real socket, with a real aiohttp client and the
fault-injecting `FakeKubo` as its node: every operation of the Pinning Service API as the
spec says, per-account isolation, the Kubo side (one `pin/add` per CID, `pin/rm` only for the
last request of a pin this service made), restarts and reloads. Kubo itself and the official
compliance suite are in test_serve_kubo.py and test_serve_compliance.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import ssl
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme

from pinsyncd.config import load_config
from pinsyncd.notify import Notifier
from pinsyncd.serve.run import ServeDaemon
from tests.fake_kubo import FakeKubo, generated_cid

LOOPBACK = ["/ip4/127.0.0.1/tcp/4001"]  # the node's addresses: the delegates it hands out
TOKENS = {"laptop": "laptop-secret-token", "desktop": "desktop-secret-token"}


def fast_clock() -> float:
    """Time 1000 times faster: a 600 s no-progress limit passes in 0.6 s."""
    return time.monotonic() * 1000


@dataclass
class Served:
    daemon: ServeDaemon
    task: asyncio.Task[int]
    kubo: FakeKubo
    config_path: Path
    session: aiohttp.ClientSession
    tokens: dict[str, str] = field(default_factory=lambda: dict(TOKENS))

    @property
    def url(self) -> str:
        assert self.daemon.url is not None
        return self.daemon.url

    def auth(self, user: str = "laptop") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    async def call(
        self, method: str, path: str, user: str | None = "laptop", **kwargs: Any
    ) -> tuple[int, Any]:
        headers = self.auth(user) if user else {}
        headers.update(kwargs.pop("headers", {}))
        async with self.session.request(
            method, self.url + path, headers=headers, **kwargs
        ) as response:
            body = await response.read()
            return response.status, json.loads(body) if body else None

    async def add(self, cid: str, user: str = "laptop", **pin: Any) -> dict[str, Any]:
        status, body = await self.call("POST", "/pins", user, json={"cid": cid, **pin})
        assert status == 202, body
        return dict(body)

    async def settled(self, requestid: str, user: str = "laptop") -> dict[str, Any]:
        """The request once it is pinned or failed."""
        for _ in range(400):
            status, body = await self.call("GET", f"/pins/{requestid}", user)
            assert status == 200, body
            if body["status"] in ("pinned", "failed"):
                return dict(body)
            await asyncio.sleep(0.01)
        raise AssertionError(f"{requestid} still {body['status']}")

    async def stop(self) -> int:
        self.daemon.stop()
        return await asyncio.wait_for(self.task, 30)


def write_config(tmp_path: Path, kubo: FakeKubo, extra: str = "", users: str = "") -> Path:
    tokens = tmp_path / "tokens"
    tokens.mkdir(exist_ok=True)
    for user, token in TOKENS.items():
        (tokens / user).write_text(token + "\n")
        (tokens / user).chmod(0o600)
    users = users or "".join(
        f"    - name: {user}\n      token_file: tokens/{user}\n" for user in TOKENS
    )
    path = tmp_path / "serve.yaml"
    path.write_text(
        f"node:\n  api: {kubo.url}\n"
        f"serve:\n  listen: 127.0.0.1:0\n  state: serve.db\n  origins: all\n"
        f"  pin_timeout: 600s\n{extra}  users:\n{users}"
    )
    return path


async def start(config_path: Path, kubo: FakeKubo, session: aiohttp.ClientSession) -> Served:
    daemon = ServeDaemon(
        load_config(config_path), notifier=Notifier({}), clock=fast_clock, clock_speed=1000
    )
    task = asyncio.create_task(daemon.run())
    for _ in range(500):
        if daemon.url is not None and daemon.delegates():
            break
        if task.done():
            raise AssertionError(f"serve ended: {task.result()}")
        await asyncio.sleep(0.01)
    return Served(daemon, task, kubo, config_path, session)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    async with FakeKubo(addresses=LOOPBACK) as kubo, aiohttp.ClientSession() as session:
        running = await start(write_config(tmp_path, kubo), kubo, session)
        try:
            yield running
        finally:
            await running.stop()


def cids(count: int, seed: str = "serve") -> list[str]:
    return [generated_cid(i, seed) for i in range(count)]


# --- auth ------------------------------------------------------------------------------------


async def test_requests_without_a_valid_token_get_401_with_the_failure_schema(
    served: Served,
) -> None:
    status, body = await served.call("GET", "/pins", None)
    assert status == 401
    assert body == {"error": {"reason": "UNAUTHORIZED", "details": "access token is missing"}}
    status, body = await served.call("GET", "/pins", None, headers={"Authorization": "Bearer nope"})
    assert (status, body["error"]["details"]) == (401, "access token is invalid")
    status, body = await served.call(
        "POST", "/pins", None, headers={"Authorization": f"Basic {TOKENS['laptop']}"}
    )
    assert status == 401


async def test_each_account_sees_only_its_own_pins(served: Served) -> None:
    (cid,) = cids(1)
    mine = await served.add(cid, name="mine")
    await served.settled(mine["requestid"])
    status, _ = await served.call("GET", f"/pins/{mine['requestid']}", "desktop")
    assert status == 404
    status, _ = await served.call("DELETE", f"/pins/{mine['requestid']}", "desktop")
    assert status == 404
    status, body = await served.call("GET", "/pins?status=queued,pinning,pinned,failed", "desktop")
    assert body == {"count": 0, "results": []}
    status, body = await served.call("GET", "/pins", "laptop")
    assert [r["requestid"] for r in body["results"]] == [mine["requestid"]]


# --- add, get ---------------------------------------------------------------------------------


async def test_an_add_answers_202_queued_and_kubo_pins_it(served: Served) -> None:
    (cid,) = cids(1)
    origin = "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWJm1fGbbNnoyBY7aRsCD6fxyRAfFG6AK4NN6vjyZ3Q8AR"
    added = await served.add(cid, name="photos", origins=[origin], meta={"app": "x"})
    assert added["status"] in ("queued", "pinning")
    assert added["pin"] == {"cid": cid, "name": "photos", "origins": [origin], "meta": {"app": "x"}}
    assert added["delegates"] and all("/p2p/" in d for d in added["delegates"])
    assert added["created"].endswith("Z") and len(added["created"]) == 24  # ms, UTC
    done = await served.settled(added["requestid"])
    assert done["status"] == "pinned" and done["info"] == {}
    assert served.kubo.added == [(cid, "photos")]
    assert served.kubo.dials == [origin]


async def test_a_second_add_of_a_cid_is_a_new_request_that_pins_at_once(served: Served) -> None:
    (cid,) = cids(1)
    first = await served.add(cid)
    second = await served.add(cid, user="desktop")
    third = await served.add(cid)
    ids = {first["requestid"], second["requestid"], third["requestid"]}
    assert len(ids) == 3
    for request, user in ((first, "laptop"), (second, "desktop"), (third, "laptop")):
        assert (await served.settled(request["requestid"], user))["status"] == "pinned"


async def test_origins_off_the_policy_are_not_dialled(tmp_path: Path) -> None:
    async with FakeKubo(addresses=LOOPBACK) as kubo, aiohttp.ClientSession() as session:
        config = write_config(tmp_path, kubo)
        config.write_text(config.read_text().replace("origins: all", "origins: public"))
        served = await start(config, kubo, session)
        try:
            peer = "12D3KooWJm1fGbbNnoyBY7aRsCD6fxyRAfFG6AK4NN6vjyZ3Q8AR"
            local = f"/ip4/192.168.1.5/tcp/4001/p2p/{peer}"
            added = await served.add(cids(1)[0], origins=[local, "/ip4/1.2.3.4/tcp/1"])
            await served.settled(added["requestid"])
            assert kubo.dials == []  # a private address, and one without /p2p/
        finally:
            await served.stop()


async def test_a_cid_that_cannot_be_fetched_fails_with_the_reason(served: Served) -> None:
    (cid,) = cids(1)
    served.kubo.unfetchable.add(cid)
    added = await served.add(cid)
    done = await served.settled(added["requestid"])
    assert done["status"] == "failed"
    assert "no provider" in done["info"]["status_details"]
    assert "no origin was given" in done["info"]["status_details"]


# --- list ---------------------------------------------------------------------------------------


async def test_list_defaults_to_pinned_newest_first_with_the_total_count(served: Served) -> None:
    added = [await served.add(cid, name=f"n{i}") for i, cid in enumerate(cids(13))]
    for request in added:
        await served.settled(request["requestid"])
    status, body = await served.call("GET", "/pins")
    assert status == 200
    assert body["count"] == 13 and len(body["results"]) == 10
    names = [r["pin"]["name"] for r in body["results"]]
    assert names == [f"n{i}" for i in range(12, 2, -1)]
    oldest = body["results"][-1]["created"]
    status, page = await served.call("GET", f"/pins?before={oldest}")
    assert page["count"] == 3
    assert [r["pin"]["name"] for r in page["results"]] == ["n2", "n1", "n0"]
    status, page = await served.call("GET", f"/pins?after={oldest}&limit=1000")
    assert page["count"] == 9


async def test_list_filters_by_status_cid_name_match_and_meta(served: Served) -> None:
    one, two, three = cids(3)
    served.kubo.unfetchable.add(three)
    a = await served.add(one, name="Holiday-Photos", meta={"app": "gallery", "year": "2026"})
    b = await served.add(two, name="holiday-video", meta={"app": "gallery"})
    c = await served.add(three, name="notes")
    for request in (a, b, c):
        await served.settled(request["requestid"])

    async def names(query: str) -> list[str]:
        status, body = await served.call("GET", "/pins?" + query)
        assert status == 200, body
        assert body["count"] == len(body["results"])
        return sorted(r["pin"]["name"] for r in body["results"])

    assert await names("") == ["Holiday-Photos", "holiday-video"]
    assert await names("status=failed") == ["notes"]
    assert await names("status=pinned,failed") == ["Holiday-Photos", "holiday-video", "notes"]
    assert await names("status=pinned&status=failed") == await names("status=pinned,failed")
    assert await names("name=holiday-video") == ["holiday-video"]
    assert await names("name=HOLIDAY-VIDEO") == []
    assert await names("name=HOLIDAY-VIDEO&match=iexact") == ["holiday-video"]
    assert await names("name=day-&match=partial") == ["Holiday-Photos", "holiday-video"]
    assert await names("name=Holi&match=partial") == ["Holiday-Photos"]
    assert await names("name=HOLI&match=ipartial") == ["Holiday-Photos", "holiday-video"]
    assert await names('meta={"app":"gallery"}') == ["Holiday-Photos", "holiday-video"]
    assert await names('meta={"app":"gallery","year":"2026"}') == ["Holiday-Photos"]
    assert await names(f"cid={one},{two}") == ["Holiday-Photos", "holiday-video"]


async def test_a_cid_filter_finds_the_pin_whichever_cid_version_is_asked(served: Served) -> None:
    v0 = "QmdfTbBqBPQ7VNxZEYEj14VmRuZBkqFbiwReogJgS1zR1n"
    v1 = "bafybeihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    added = await served.add(v0)
    await served.settled(added["requestid"])
    status, body = await served.call("GET", f"/pins?cid={v1}")
    assert status == 200, body
    assert body["count"] == 1 and body["results"][0]["pin"]["cid"] == v0


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("limit=1001", "limit is 1001; it must be 1 to 1000"),
        ("limit=0", "limit is 0"),
        ("limit=ten", "not a whole number"),
        ("cid=" + ",".join(cids(11)), "at most 10"),
        ("cid=nonsense", "invalid CID"),
        ("status=bogus", "'bogus' is not one of"),
        ("match=fuzzy&name=x", "'fuzzy' is not one of"),
        ("before=yesterday", "not an RFC 3339 time"),
        ("after=2020-07-27T17:32:28", "not an RFC 3339 time"),
        ("meta=notjson", "meta is not JSON"),
        ('meta={"a":1}', "values are strings"),
        ("name=" + "x" * 256, "at most 255"),
    ],
)
async def test_a_query_the_spec_does_not_allow_is_a_400_that_says_why(
    served: Served, query: str, says: str
) -> None:
    status, body = await served.call("GET", "/pins?" + query)
    assert status == 400
    assert body["error"]["reason"] == "BAD_REQUEST"
    assert says in body["error"]["details"]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"not json", "not JSON"),
        (b"[]", "must be a Pin object"),
        (b"{}", "cid is required"),
        (b'{"cid": "nonsense"}', "invalid CID"),
        (b'{"cid": "bafkqaaa", "name": 7}', "name must be a string"),
        (json.dumps({"cid": "bafkqaaa", "name": "x" * 256}).encode(), "at most 255"),
        (b'{"cid": "bafkqaaa", "origins": "x"}', "origins must be a list"),
        (b'{"cid": "bafkqaaa", "meta": {"a": 1}}', "values are strings"),
    ],
)
async def test_a_pin_the_spec_does_not_allow_is_a_400_that_says_why(
    served: Served, body: bytes, says: str
) -> None:
    status, answer = await served.call("POST", "/pins", data=body)
    assert status == 400
    assert says in answer["error"]["details"]


async def test_a_body_over_64_kib_is_a_413(served: Served) -> None:
    big = json.dumps({"cid": "bafkqaaa", "meta": {"x": "y" * 70_000}}).encode()
    status, body = await served.call("POST", "/pins", data=big)
    assert status == 413 and body["error"]["reason"] == "PAYLOAD_TOO_LARGE"


async def test_an_unknown_requestid_is_a_404_with_the_failure_schema(served: Served) -> None:
    for method in ("GET", "DELETE"):
        status, body = await served.call(method, "/pins/no-such-request")
        assert status == 404 and body["error"]["reason"] == "NOT_FOUND"
    status, body = await served.call("POST", "/pins/no-such-request", json={"cid": "bafkqaaa"})
    assert status == 404


# --- replace, delete, and what Kubo keeps -------------------------------------------------------


async def test_replace_makes_a_new_request_and_unpins_the_old_cid_after(served: Served) -> None:
    old_cid, new_cid = cids(2)
    old = await served.settled((await served.add(old_cid))["requestid"])
    status, new = await served.call(
        "POST", f"/pins/{old['requestid']}", json={"cid": new_cid, "name": "v2"}
    )
    assert status == 202 and new["requestid"] != old["requestid"]
    assert (await served.call("GET", f"/pins/{old['requestid']}"))[0] == 404
    assert (await served.settled(new["requestid"]))["status"] == "pinned"
    await until(lambda: served.kubo.removed == [old_cid])
    assert new_cid in served.kubo.pinset() and old_cid not in served.kubo.pinset()


async def test_replace_by_the_same_cid_keeps_it_pinned(served: Served) -> None:
    (cid,) = cids(1)
    old = await served.settled((await served.add(cid))["requestid"])
    status, new = await served.call("POST", f"/pins/{old['requestid']}", json={"cid": cid})
    assert status == 202 and new["requestid"] != old["requestid"]
    assert (await served.settled(new["requestid"]))["status"] == "pinned"
    await asyncio.sleep(0.1)
    assert served.kubo.removed == [] and cid in served.kubo.pinset()


async def test_a_cid_stays_pinned_until_its_last_request_is_deleted(served: Served) -> None:
    (cid,) = cids(1)
    mine = await served.settled((await served.add(cid))["requestid"])
    theirs = await served.settled((await served.add(cid, user="desktop"))["requestid"], "desktop")
    status, body = await served.call("DELETE", f"/pins/{mine['requestid']}")
    assert (status, body) == (202, None)
    await asyncio.sleep(0.1)
    assert served.kubo.removed == []
    await served.call("DELETE", f"/pins/{theirs['requestid']}", "desktop")
    await until(lambda: served.kubo.removed == [cid])
    assert cid not in served.kubo.pinset()


async def test_a_pin_that_was_on_the_node_before_is_never_unpinned(served: Served) -> None:
    (cid,) = cids(1, "the-users-own")
    served.kubo.extra[cid] = "mine, pinned by hand"
    added = await served.settled((await served.add(cid))["requestid"])
    await served.call("DELETE", f"/pins/{added['requestid']}")
    await asyncio.sleep(0.2)
    assert served.kubo.removed == [] and cid in served.kubo.pinset()


async def test_a_pin_that_was_on_the_node_before_keeps_its_name(served: Served) -> None:
    """Kubo gives an existing pin the name of a new `pin/add` (or none): serve sends none for
    a CID the node has pinned already, so the user's own pin keeps its name (found with real
    Kubo in test_serve_kubo)."""
    (cid,) = cids(1, "named-by-hand")
    served.kubo.extra[cid] = "mine"
    await served.settled((await served.add(cid, name="from-the-laptop"))["requestid"])
    await served.settled((await served.add(cid, user="desktop"))["requestid"], "desktop")
    assert served.kubo.added == [] and served.kubo.pinset()[cid] == "mine"


async def test_a_direct_pin_by_hand_is_made_recursive_under_its_name_and_never_unpinned(
    served: Served,
) -> None:
    """A direct pin holds one block and the request needs them all: serve has Kubo pin it
    recursively (Kubo turns the direct pin into a recursive one), under the user's name, and
    leaves it when the request is deleted."""
    cid, sentinel = cids(2, "direct-by-hand")
    served.kubo.direct[cid] = "mine"
    added = await served.settled((await served.add(cid, name="from-the-laptop"))["requestid"])
    assert added["status"] == "pinned" and served.kubo.added == [(cid, "mine")]
    await served.call("DELETE", f"/pins/{added['requestid']}")
    done = await served.settled((await served.add(sentinel))["requestid"])
    await served.call("DELETE", f"/pins/{done['requestid']}")
    await until(lambda: served.kubo.removed == [sentinel])  # the delete before it was seen
    assert served.kubo.pinset()[cid] == "mine"


async def test_a_pin_removed_by_hand_meanwhile_is_pinned_by_serve_for_a_new_request(
    served: Served,
) -> None:
    """A found pin the user removes by hand is not the node's any more: the next request for
    its CID has serve pin it, as its own (removed with the last request)."""
    (cid,) = cids(1, "unpinned-by-hand")
    served.kubo.extra[cid] = "mine"
    first = await served.settled((await served.add(cid))["requestid"])
    del served.kubo.extra[cid]  # `ipfs pin rm` by the user
    second = await served.settled((await served.add(cid, name="again"))["requestid"])
    assert second["status"] == "pinned" and served.kubo.added == [(cid, "again")]
    await served.call("DELETE", f"/pins/{first['requestid']}")
    await served.call("DELETE", f"/pins/{second['requestid']}")
    await until(lambda: served.kubo.removed == [cid])


async def test_deleting_a_pin_still_fetching_stops_the_fetch_and_keeps_nothing(
    served: Served,
) -> None:
    (cid,) = cids(1)
    served.kubo.unfetchable.add(cid)
    served.daemon.pinner.stall = 10**9
    added = await served.add(cid)
    await until(lambda: served.daemon.pinner.busy == 1)
    await served.call("DELETE", f"/pins/{added['requestid']}")
    await until(lambda: served.daemon.pinner.busy == 0)
    await until_held(served, added["pin"]["cid"], None)  # unpinned, or never noted
    assert cid not in served.kubo.pinset()


@pytest.mark.parametrize("moment", ["before it is noted", "while it fetches", "as it ends"])
async def test_a_delete_racing_the_pin_of_its_cid_leaves_no_pin_behind(
    served: Served, moment: str
) -> None:
    """Wherever the delete of the last request falls in the pinner's work on its CID, the
    node keeps no pin that nothing asks for (the pin, when it was made, is removed)."""
    (cid,) = cids(1, moment)
    pinner, store = served.daemon.pinner, served.daemon.store
    hold, pin_add = store.hold, pinner._node.pin_add
    reached, deleted = asyncio.Event(), asyncio.Event()

    async def at(this: str) -> None:
        """At `moment`, hold the pinner's work until the test has deleted the request."""
        if this == moment:
            reached.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(deleted.wait(), 5)

    async def hold_late(key: str, held_cid: str, state: str) -> None:
        await at("before it is noted")
        await hold(key, held_cid, state)

    async def pin_add_racing(*args: Any, **kwargs: Any) -> Any:
        await at("while it fetches")
        result = await pin_add(*args, **kwargs)
        await at("as it ends")
        return result

    store.hold = hold_late  # type: ignore[method-assign]
    pinner._node.pin_add = pin_add_racing  # type: ignore[method-assign]
    added = await served.add(cid)
    await asyncio.wait_for(reached.wait(), 10)
    assert (await served.call("DELETE", f"/pins/{added['requestid']}"))[0] == 202
    deleted.set()
    await until(lambda: pinner.busy == 0)
    await until_held(served, cid, None)
    await until(lambda: cid not in served.kubo.pinset())


async def until_held(served: Served, cid: str, state: str | None, within: float = 10.0) -> None:
    """Until the store's note of who holds `cid` is `state` (None: no note)."""
    from pinsyncd.serve.wire import content_key

    deadline = time.monotonic() + within
    while await served.daemon.store.held(content_key(cid)) != state:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{cid} is still held as {await served.daemon.store.held(content_key(cid))}"
            )
        await asyncio.sleep(0.01)


async def test_an_account_over_its_max_pins_gets_409(tmp_path: Path) -> None:
    async with FakeKubo(addresses=LOOPBACK) as kubo, aiohttp.ClientSession() as session:
        users = (
            "    - name: laptop\n      token_file: tokens/laptop\n      max_pins: 2\n"
            "    - name: desktop\n      token_file: tokens/desktop\n"
        )
        served = await start(write_config(tmp_path, kubo, users=users), kubo, session)
        try:
            one, two, three = cids(3)
            await served.add(one)
            await served.add(two)
            status, body = await served.call("POST", "/pins", json={"cid": three})
            assert status == 409 and body["error"]["reason"] == "INSUFFICIENT_FUNDS"
            assert "at most 2" in body["error"]["details"]
            await served.add(three, user="desktop")  # another account is not held back
        finally:
            await served.stop()


# --- the process: restarts, reloads, the node away ---------------------------------------------


async def test_pending_pins_survive_a_restart(tmp_path: Path) -> None:
    async with FakeKubo(addresses=LOOPBACK) as kubo, aiohttp.ClientSession() as session:
        config = write_config(tmp_path, kubo)
        served = await start(config, kubo, session)
        wanted = cids(5)
        kubo.unfetchable.update(wanted)
        served.daemon.pinner.stall = 10**9
        ids = [(await served.add(cid))["requestid"] for cid in wanted]
        await until(lambda: served.daemon.pinner.busy == 4)
        assert await served.stop() == 0
        kubo.unfetchable.clear()
        served = await start(config, kubo, session)
        try:
            for requestid in ids:
                assert (await served.settled(requestid))["status"] == "pinned"
            assert set(wanted) <= set(kubo.pinset())
        finally:
            await served.stop()


async def test_a_node_never_reached_answers_503_and_healthz_says_why(tmp_path: Path) -> None:
    kubo = FakeKubo(addresses=LOOPBACK)
    await kubo.come_back()
    await kubo.go_offline()  # a port nobody listens on
    async with aiohttp.ClientSession() as session:
        daemon = ServeDaemon(load_config(write_config(tmp_path, kubo)), notifier=Notifier({}))
        task = asyncio.create_task(daemon.run())
        served = Served(daemon, task, kubo, tmp_path / "serve.yaml", session)
        try:
            await until(lambda: daemon.url is not None)
            status, body = await served.call("POST", "/pins", json={"cid": cids(1)[0]})
            assert status == 503 and body["error"]["reason"] == "NODE_UNAVAILABLE"
            async with session.get(served.url + "/healthz") as response:
                assert response.status == 503
                assert "cannot connect" in await response.text()
            await kubo.come_back()
            await until(lambda: bool(daemon.delegates()), within=15)
            await served.add(cids(1)[0])
        finally:
            await served.stop()
            await kubo.go_offline()


async def test_a_node_that_goes_away_leaves_requests_waiting_not_failed(served: Served) -> None:
    await served.kubo.go_offline()
    added = await served.add(cids(1)[0])
    for _ in range(1000):  # until the pinner has met the node's absence
        status, body = await served.call("GET", f"/pins/{added['requestid']}")
        assert status == 200 and body["status"] in ("queued", "pinning"), body
        if "waiting for the node" in body["info"].get("status_details", ""):
            break
        await asyncio.sleep(0.01)
    assert body["status"] == "queued", body
    assert "waiting for the node" in body["info"]["status_details"]
    assert served.daemon.pinner.node_trouble is not None
    await served.kubo.come_back()
    served.daemon.pinner._retry.clear()  # not wait out the pause
    served.daemon.pinner.wake()
    assert (await served.settled(added["requestid"]))["status"] == "pinned"


async def test_a_changed_token_file_and_a_new_user_take_effect_without_a_restart(
    served: Served,
) -> None:
    tokens = served.config_path.parent / "tokens"
    (tokens / "laptop").write_text("rotated-laptop-token\n")
    (tokens / "phone").write_text("phone-token\n")
    text = served.config_path.read_text()
    served.config_path.write_text(text + "    - name: phone\n      token_file: tokens/phone\n")
    assert served.daemon.reload_now()
    assert (await served.call("GET", "/pins"))[0] == 401
    served.tokens.update(laptop="rotated-laptop-token", phone="phone-token")
    assert (await served.call("GET", "/pins"))[0] == 200
    assert (await served.call("GET", "/pins", "phone"))[0] == 200


async def test_a_reload_with_a_bad_config_keeps_the_running_accounts(served: Served) -> None:
    served.config_path.write_text(served.config_path.read_text() + "    - name: x\n")
    assert not served.daemon.reload_now()
    assert (await served.call("GET", "/pins"))[0] == 200


async def test_two_accounts_with_one_token_are_refused_at_reload(served: Served) -> None:
    tokens = served.config_path.parent / "tokens"
    (tokens / "desktop").write_text(TOKENS["laptop"])
    assert not served.daemon.reload_now()
    assert (await served.call("GET", "/pins", "desktop"))[0] == 200


async def test_metrics_and_healthz_need_no_token_and_name_no_pin(served: Served) -> None:
    (cid,) = cids(1)
    await served.settled((await served.add(cid, name="secret-name"))["requestid"])
    async with served.session.get(served.url + "/healthz") as response:
        assert (response.status, await response.text()) == (200, "ok\n")
    async with served.session.get(served.url + "/metrics") as response:
        text = await response.text()
    assert 'pinsyncd_serve_requests{account="laptop",status="pinned"} 1.0' in text
    assert 'pinsyncd_serve_api_requests_total{code="202",operation="add"} 1.0' in text
    assert 'pinsyncd_serve_held_pins{state="ours"} 1.0' in text
    assert "pinsyncd_serve_pin_seconds_count" in text
    for secret in (cid, "secret-name", *TOKENS.values()):
        assert secret not in text


async def until(done: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError("not within the time given")
        await asyncio.sleep(0.01)


async def test_serve_over_tls_with_the_configured_certificate(tmp_path: Path) -> None:
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1")
    certificate.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "chain.pem"))
    certificate.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    trusted = ssl.create_default_context()
    authority.configure_trust(trusted)
    tls = "  tls:\n    cert_file: chain.pem\n    key_file: key.pem\n"
    async with (
        FakeKubo(addresses=LOOPBACK) as kubo,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trusted)) as session,
    ):
        served = await start(write_config(tmp_path, kubo, extra=tls), kubo, session)
        try:
            assert served.url.startswith("https://127.0.0.1:")
            added = await served.add(cids(1)[0])
            assert (await served.settled(added["requestid"]))["status"] == "pinned"
        finally:
            await served.stop()


async def test_a_pinned_cid_gone_from_the_node_is_pinned_again(served: Served) -> None:
    kept, lost = cids(2)
    ids = [
        (await served.settled((await served.add(cid))["requestid"]))["requestid"]
        for cid in (kept, lost)
    ]
    del served.kubo.extra[lost]  # `ipfs pin rm` behind the service's back
    assert await served.daemon.pinner.verify() == 1
    assert (await served.settled(ids[1]))["status"] == "pinned"
    await until(lambda: [cid for cid, _ in served.kubo.added].count(lost) == 2)
    assert lost in served.kubo.pinset()
    assert await served.daemon.pinner.verify() == 0


async def test_an_edited_token_file_is_noticed_without_a_signal(served: Served) -> None:
    token_file = served.config_path.parent / "tokens" / "desktop"
    token_file.write_text("a-new-desktop-token\n")
    await until(lambda: served.daemon.app.accounts.find("Bearer a-new-desktop-token") != "invalid")
    assert (await served.call("GET", "/pins", "desktop"))[0] == 401
    served.tokens["desktop"] = "a-new-desktop-token"
    assert (await served.call("GET", "/pins", "desktop"))[0] == 200


async def test_a_port_in_use_or_a_state_file_that_is_not_one_ends_with_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with FakeKubo(addresses=LOOPBACK) as kubo:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            config = write_config(tmp_path, kubo)
            config.write_text(config.read_text().replace("127.0.0.1:0", f"127.0.0.1:{port}"))
            daemon = ServeDaemon(load_config(config), notifier=Notifier({}))
            assert await daemon.run() == 1
        assert f"cannot listen on 127.0.0.1:{port}" in "".join(capsys.readouterr())
        (tmp_path / "serve.db").write_bytes(b"not a database" * 100)
        daemon = ServeDaemon(load_config(config), notifier=Notifier({}))
        assert await daemon.run() == 1
        assert "cannot open the state file" in "".join(capsys.readouterr())  # log: out or err


async def test_status_on_the_home_box_shows_serves_side(served: Served) -> None:
    (cid,) = cids(1)
    await served.settled((await served.add(cid))["requestid"])
    env = {k: v for k, v in os.environ.items() if k != "PINSYNCD_CONFIG"}
    command = [sys.executable, "-m", "pinsyncd", "status", "-c", str(served.config_path)]
    process = await asyncio.create_subprocess_exec(
        *command, "--json", env=env, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0
    serve = json.loads(out)["serve"]
    assert serve["running"] == os.getpid()
    assert serve["accounts"]["laptop"]["pinned"] == 1
    assert serve["accounts"]["desktop"] == {"pinned": 0, "pinning": 0, "queued": 0, "failed": 0}
    assert serve["held"] == {"ours": 1}
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    text = out.decode()
    assert f"serve: running (pid {os.getpid()})" in text
    assert "  laptop: 1 pinned, 0 pinning, 0 queued, 0 failed" in text


async def test_work_that_fails_unexpectedly_is_tried_again_later_not_at_once(
    served: Served,
) -> None:
    """An unpin whose bookkeeping fails (a state file that cannot be written, say) is tried
    again after a pause that doubles, up to a minute: not in a loop as fast as it can."""
    (cid,) = cids(1)
    store = served.daemon.store
    unpinned, failures = store.unpinned, []

    async def broken(key: str) -> None:
        failures.append(key)
        raise RuntimeError("disk full")

    added = await served.settled((await served.add(cid))["requestid"])
    store.unpinned = broken  # type: ignore[method-assign]
    await served.call("DELETE", f"/pins/{added['requestid']}")
    await until(lambda: len(failures) >= 3)
    await asyncio.sleep(0.5)  # 500 s on the test's clock: a dozen tries, not thousands
    assert len(failures) < 100
    store.unpinned = unpinned  # type: ignore[method-assign]
    await until_held(served, cid, None, within=30)
