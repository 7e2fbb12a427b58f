"""One service's executor against our spec-faithful service, over real sockets, with a real
SQLite state file. The local pinset is given directly (the Kubo side has its own tests)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from pinsyncd.backoff import RetryPolicy
from pinsyncd.config import Service
from pinsyncd.model import Origin, RemoteStatus
from pinsyncd.ownership import APP_ID, meta_for
from pinsyncd.policy import Directives
from pinsyncd.psa import PinningServiceClient
from pinsyncd.store import StateStore
from pinsyncd.sync.context import NodeView, ServiceReport
from pinsyncd.sync.service import ServiceExecutor
from pinsyncd.tokens import Secret
from pinsyncd.tuning import DEFAULT, Tuning
from tests.cidgen import random_cid, random_cids
from tests.conftest import StoppedClock
from tests.fake_psa import FakePinningService, Fault

TOKEN = "executor-token"
ONLINE = NodeView(
    online=True, peer_id="12D3KooWTestPeer", origins=("/ip4/8.8.8.8/tcp/4001/p2p/12D3KooWTestPeer",)
)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    state = await StateStore.open(tmp_path / "state.db")
    yield state
    await state.close()


@pytest.fixture
async def service() -> AsyncIterator[FakePinningService]:
    async with FakePinningService(token=TOKEN) as svc:
        yield svc


def executor_for(
    svc: FakePinningService,
    store: StateStore,
    *,
    name: str = "spec",
    timeout: float = 2.0,
    token: str = TOKEN,
    concurrency: int = 4,
    tuning: Tuning = DEFAULT,
) -> ServiceExecutor:
    config = Service(name, svc.url, Secret(token, "$TOKEN"), concurrency, timeout)
    client = PinningServiceClient(name, svc.url, config.token, timeout=timeout)
    return ServiceExecutor(
        config, client, store, None, retry=RetryPolicy(base=0.01, cap=0.05), tuning=tuning
    )


def local_pins(count: int) -> dict[str, str]:
    return {cid: f"file-{i}.txt" for i, cid in enumerate(random_cids(count))}


async def test_adds_every_local_pin_once_with_name_meta_and_origins(
    service: FakePinningService, store: StateStore
) -> None:
    local = local_pins(150)
    local[random_cid()] = ""  # an unnamed pin is named by its CID
    executor = executor_for(service, store)
    async with executor.client:
        report = await executor.sync(local, ONLINE)
    assert report.added == 151 and report.errors == 0
    for cid, name in local.items():
        (pin,) = service.pins_for_cid(cid)
        assert pin["pin"]["name"] == (name or cid)
        assert pin["pin"]["meta"]["app_id"] == APP_ID
        assert pin["pin"]["meta"]["node"] == "12D3KooWTestPeer"
        assert pin["pin"]["origins"] == list(ONLINE.origins)
    rows = await store.remote_pins("spec")
    assert {r.status for r in rows.values()} == {RemoteStatus.QUEUED}
    assert all(r.requestid for r in rows.values())


async def test_no_origins_while_the_node_is_offline(
    service: FakePinningService, store: StateStore
) -> None:
    local = local_pins(3)
    executor = executor_for(service, store)
    async with executor.client:
        await executor.sync(local, NodeView(online=False, peer_id="12D3KooWTestPeer"))
    for cid in local:
        (pin,) = service.pins_for_cid(cid)
        assert "origins" not in pin["pin"]
        assert pin["pin"]["meta"]["node"] == "12D3KooWTestPeer", "still says whose it is"


async def test_no_first_contact_before_the_node_was_listed(
    service: FakePinningService, store: StateStore
) -> None:
    """Without the node's peer id, this device's requests cannot be told from another
    device's: nothing is listed, adopted or sent until the node has been listed once."""
    executor = executor_for(service, store)
    async with executor.client:
        report = await executor.sync(local_pins(3), NodeView(online=False))
    assert service.pin_count == 0 and sum(service.request_counts().values()) == 0
    assert report.backoff and "first listing" in report.backoff
    assert not (await store.service_state("spec")).adopted


async def test_second_cycle_sends_nothing_new(
    service: FakePinningService, store: StateStore
) -> None:
    local = local_pins(50)
    executor = executor_for(service, store)
    async with executor.client:
        await executor.sync(local, ONLINE)
        posts = service.count(method="POST")
        report = await executor.sync(local, ONLINE)
    assert service.count(method="POST") == posts == 50
    assert report.added == 0


async def test_a_slow_add_does_not_hold_up_the_adds_after_it(
    service: FakePinningService, store: StateStore
) -> None:
    """No barrier between blocks of adds: while one answer takes a second, the other
    connections go on through the following blocks (a block is 64 adds here)."""
    local = local_pins(400)
    service.inject(Fault("slow", delay=1.0), method="POST", skip=5)
    executor = executor_for(service, store, concurrency=4)
    async with executor.client:
        report = await executor.sync(local, ONLINE)
    assert report.added == 400 and report.errors == 0
    posts = [r for r in service.requests if r.method == "POST"]
    slow = next(r for r in posts if r.fault is not None)
    during = [r for r in posts if slow.time < r.time < slow.time + 0.9]
    assert len(during) > 3 * 64, f"only {len(during)} adds went out while one was slow"
    assert all(len(service.pins_for_cid(cid)) == 1 for cid in local)
    rows = await store.remote_pins("spec")
    assert len(rows) == 400 and {r.status for r in rows.values()} == {RemoteStatus.QUEUED}


async def test_a_refusal_mid_stream_still_commits_every_answer(
    service: FakePinningService, store: StateStore
) -> None:
    """The token is refused after 100 adds (two blocks in): the answers already on their way
    are committed as what they are, nothing is left as an intent to look up later."""
    local = local_pins(300)
    service.inject(Fault("status", status=401), method="POST", skip=100, times=None)
    executor = executor_for(service, store, concurrency=4)
    async with executor.client:
        report = await executor.sync(local, ONLINE)
    accepted = service.count(method="POST", status=202)
    assert report.paused and report.added == accepted >= 100
    rows = await store.remote_pins("spec")
    assert {r.status for r in rows.values()} == {RemoteStatus.QUEUED}
    assert len(rows) == accepted and report.unsent == 300 - accepted


async def test_new_requests_are_not_listed_in_the_cycle_that_made_them(
    service: FakePinningService, store: StateStore
) -> None:
    first = local_pins(30)
    executor = executor_for(service, store)
    async with executor.client:
        await executor.sync(first, ONLINE)
        lists = service.count(method="GET", path_prefix="/pins")
        assert lists == 1, "only the first-contact listing: the new requests are not listed"
        for pin in service.pins:
            service.set_status(pin["requestid"], "pinning")
        more = {**first, **local_pins(20)}
        report = await executor.sync(more, ONLINE)
    assert report.added == 20
    assert service.count(method="GET", path_prefix="/pins") > lists, "older ones are tracked"
    rows = await store.remote_pins("spec")
    statuses = [rows[cid].status for cid in first]
    assert statuses == [RemoteStatus.PINNING] * 30
    new = [rows[cid] for cid in more if cid not in first]
    assert {r.status for r in new} <= {RemoteStatus.QUEUED, RemoteStatus.PINNING}


async def test_a_cycle_goes_through_its_pins_a_window_at_a_time(
    service: FakePinningService, store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With windows of 7 CIDs, 60 pins are all added exactly once; the new MFS root, whose
    CID sorts after the first window, still replaces the old root in place (nothing is
    deleted first); a failed request is replaced once; a paused service counts all. The dry
    run's plan walks the same windows and plans what the cycle then does."""
    local = local_pins(60)
    ordered = sorted(local)
    old_root, new_root, failed = random_cid(), ordered[-1], ordered[30]
    mfs = Directives(mfs_root=new_root, mfs_name="policy/12D3KooWTestPeer/mfs")
    executor = executor_for(service, store, tuning=Tuning(window=7))
    async with executor.client:
        await executor.sync({failed: local[failed]}, ONLINE)  # first contact, one pin
        (failing,) = service.pins_for_cid(failed)
        service.set_status(failing["requestid"], "failed")
        ours = meta_for(ONLINE.peer_id, "")  # the old root is this device's own request
        old = service.add_pin(old_root, name=mfs.mfs_name, status="pinned", meta=ours)
        await store.replace_local_pins({**local, old_root: ""})
        await executor.sync(Directives(), ONLINE, send=False)  # learns of the failure
        rows = await store.remote_pins("spec")
        await store.save([rows[failed].evolve(next_attempt=0.0)])
        await executor.adoption.adopt(ServiceReport("spec"), ONLINE)  # the old root
        await store.replace_local_pins(local)  # the node's MFS moved on to new_root
        service.requests.clear()
        planned = [plan async for plan in executor.plans(mfs, True, ONLINE)]  # the dry run's
        assert service.requests == [], "a plan calls no service"
        report = await executor.sync(mfs, ONLINE)
    assert report.added == 58 and report.replaced == 2 and report.unsent == 0
    assert len(planned) == 9, "60 pins in windows of 7"
    assert sum(len(p.add) for p in planned) == 58 and not any(p.remove for p in planned)
    assert [r.reason for p in planned for r in p.replace] in (["mfs", "failed"], ["failed", "mfs"])
    assert service.count(method="DELETE") == 0
    assert all(len(service.pins_for_cid(cid)) == 1 for cid in local)
    assert service.pins_for_cid(old_root) == [], "replaced in place by the new root"
    replaced = {r.path for r in service.requests if r.method == "POST" and r.path != "/pins"}
    assert replaced == {f"/pins/{failing['requestid']}", f"/pins/{old['requestid']}"}

    paused = executor_for(service, store, name="other", tuning=Tuning(window=7))
    await store.save_service_state(
        replace(await store.service_state("other"), adopted=True, paused_until=time.time() + 60)
    )
    async with paused.client:
        assert (await paused.sync(Directives(), ONLINE)).unsent == 60
        assert (await paused.sync(mfs, ONLINE)).unsent == 60, "the MFS root counted once"


async def test_adopts_existing_pins_on_first_contact(
    service: FakePinningService, store: StateStore
) -> None:
    """Pins made by another tool, stored as CIDv1 while the node lists CIDv0, are adopted."""
    from multiformats import CID

    local = {random_cid(version=0): f"old-{i}" for i in range(5)}
    for cid in local:
        service.add_pin(CID.decode(cid).set(version=1).encode("base32"), status="pinned")
    foreign = random_cid()
    service.add_pin(foreign, status="pinned")  # not ours: never touched
    local.update(local_pins(5))
    executor = executor_for(service, store)
    async with executor.client:
        report = await executor.sync(local, ONLINE)
    assert report.adopted == 5 and report.added == 5
    assert service.count(method="POST") == 5
    rows = await store.remote_pins("spec")
    assert sum(r.origin is Origin.ADOPTED for r in rows.values()) == 5
    assert foreign not in rows


@pytest.mark.parametrize("chunk", [1, 2, 10_000])
async def test_adoption_keeps_the_best_of_several_requests_for_a_cid(
    service: FakePinningService,
    store: StateStore,
    monkeypatch: pytest.MonkeyPatch,
    chunk: int,
) -> None:
    """Another tool left several requests for some CIDs: the pinned (else the newest) one is
    adopted and the rest counted, whether or not they fall in the same chunk of the staged
    listing, and in whichever spelling they were made."""
    from multiformats import CID

    a, b, c = (random_cid(version=0) for _ in range(3))
    service.add_pin(a, status="queued")
    best_a = service.add_pin(a, status="pinned")["requestid"]
    service.add_pin(a, status="failed")
    service.add_pin(b, status="failed")
    best_b = service.add_pin(b, status="queued")["requestid"]
    best_c = service.add_pin(CID.decode(c).set(version=1).encode("base32"), status="pinned")[
        "requestid"
    ]
    service.add_pin(c, status="queued")
    executor = executor_for(service, store, tuning=Tuning(adopt_batch=chunk))
    async with executor.client:
        report = await executor.sync({a: "a", b: "b", c: "c"}, ONLINE, send=False)
    assert report.adopted == 3 and report.duplicates == 4
    rows = await store.remote_pins("spec")
    assert rows[a].requestid == best_a and rows[a].status is RemoteStatus.PINNED
    assert rows[b].requestid == best_b and rows[b].status is RemoteStatus.QUEUED
    assert rows[c].requestid == best_c and rows[c].status is RemoteStatus.PINNED
    assert service.count(method="POST") == 0


async def test_lost_answer_is_looked_up_not_resent(
    service: FakePinningService, store: StateStore, pinsyncd_clock: StoppedClock
) -> None:
    """The service created the pin, but the answer was lost (reset after apply)."""
    local = local_pins(10)
    service.inject(Fault("reset", after_apply=True), method="POST", path="/pins", times=3)
    executor = executor_for(service, store, timeout=0.2)
    async with executor.client:
        await executor.sync(local, ONLINE)
        rows = await store.remote_pins("spec")
        assert sum(r.status is RemoteStatus.INTENT for r in rows.values()) == 3
        report = await executor.sync(local, ONLINE)
        assert report.resolved == 0, "intents wait out the grace period (2 x timeout)"
        pinsyncd_clock.advance(executor.intent_grace + 1)
        report = await executor.sync(local, ONLINE)
    assert report.resolved == 3 and report.added == 0
    for cid in local:
        assert len(service.pins_for_cid(cid)) == 1
    rows = await store.remote_pins("spec")
    assert RemoteStatus.INTENT not in {r.status for r in rows.values()}


async def test_hung_add_then_lookup_finds_nothing_and_adds_again(
    service: FakePinningService, store: StateStore, pinsyncd_clock: StoppedClock
) -> None:
    local = local_pins(1)
    service.inject(Fault("hang"), method="POST", times=1)  # never applied, never answered
    executor = executor_for(service, store, timeout=0.2)
    async with executor.client:
        await executor.sync(local, ONLINE)
        report = await executor.sync(local, ONLINE)
        assert report.added == 0, "the intent waits out its grace"
        pinsyncd_clock.advance(executor.intent_grace + 1)
        report = await executor.sync(local, ONLINE)
    assert report.added == 1
    (cid,) = local
    assert len(service.pins_for_cid(cid)) == 1


async def test_server_error_on_add_is_treated_as_maybe_applied(
    service: FakePinningService, store: StateStore, pinsyncd_clock: StoppedClock
) -> None:
    local = local_pins(4)
    service.inject(Fault("status", status=502, after_apply=True), method="POST", times=2)
    executor = executor_for(service, store, timeout=0.2)
    async with executor.client:
        await executor.sync(local, ONLINE)
        pinsyncd_clock.advance(executor.intent_grace + 1)
        await executor.sync(local, ONLINE)
    assert all(len(service.pins_for_cid(cid)) == 1 for cid in local)


async def test_refused_add_is_retried_after_backoff(
    service: FakePinningService, store: StateStore
) -> None:
    local = local_pins(2)
    service.inject(Fault("status", status=400, details="bad pin"), method="POST", times=1)
    executor = executor_for(service, store)
    async with executor.client:
        first = await executor.sync(local, ONLINE)
        assert first.errors == 1
        rows = await store.remote_pins("spec")
        (error,) = [r for r in rows.values() if r.status is RemoteStatus.ERROR]
        assert "HTTP 400" in (error.last_error or "") and error.next_attempt > 0
        await asyncio.sleep(0.05)
        second = await executor.sync(local, ONLINE)
    assert second.added == 1
    assert all(len(service.pins_for_cid(cid)) == 1 for cid in local)


@pytest.mark.slow
async def test_tracking_lists_instead_of_polling_each_pin(
    service: FakePinningService, store: StateStore
) -> None:
    local = local_pins(2500)
    executor = executor_for(service, store, concurrency=16)
    async with executor.client:
        await executor.sync(local, ONLINE)
        for pin in service.pins[:2000]:
            service.set_status(pin["requestid"], "pinned")
        service.set_status(service.pins[2000]["requestid"], "failed", "DAG too big")
        service.requests.clear()
        report = await executor.sync(local, ONLINE, send=False)
    gets = [r for r in service.requests if r.method == "GET"]
    assert report.became_pinned == 2000 and report.became_failed == 1
    assert len(gets) <= 5, f"{len(gets)} requests for 2500 pending pins"
    assert not any(r.path.startswith("/pins/") for r in gets), "no per-pin GET"
    rows = await store.remote_pins("spec")
    failed = [r for r in rows.values() if r.status is RemoteStatus.FAILED]
    assert len(failed) == 1 and failed[0].details == "DAG too big"


async def test_failed_pin_is_replaced_not_duplicated(
    service: FakePinningService, store: StateStore
) -> None:
    local = local_pins(3)
    executor = executor_for(service, store)
    async with executor.client:
        await executor.sync(local, ONLINE)
        victim = next(iter(local))
        (old,) = service.pins_for_cid(victim)
        service.set_status(old["requestid"], "failed", "could not fetch")
        await executor.sync(local, ONLINE, send=False)
        await asyncio.sleep(0.05)  # past the (test-short) failed backoff
        report = await executor.sync(local, ONLINE)
    assert report.replaced == 1
    (new,) = service.pins_for_cid(victim)
    assert new["requestid"] != old["requestid"], "a new request replaced the failed one"
    assert service.count(method="POST", path_prefix=f"/pins/{old['requestid']}") == 1


async def test_vanished_pin_is_added_again(service: FakePinningService, store: StateStore) -> None:
    local = local_pins(3)
    executor = executor_for(service, store)
    async with executor.client:
        await executor.sync(local, ONLINE)
        victim = next(iter(local))
        (pin,) = service.pins_for_cid(victim)
        service.vanish(pin["requestid"])
        report = await executor.sync(local, ONLINE, send=False)
        assert report.vanished == 1
        report = await executor.sync(local, ONLINE)
    assert report.added == 1
    assert len(service.pins_for_cid(victim)) == 1


@pytest.mark.parametrize(
    ("status", "words"), [(401, "token from $TOKEN was refused"), (409, "insufficient funds")]
)
async def test_auth_and_funds_errors_pause_the_service(
    service: FakePinningService, store: StateStore, status: int, words: str
) -> None:
    local = local_pins(20)
    service.inject(Fault("status", status=status), method="POST", times=None)
    executor = executor_for(service, store)
    async with executor.client:
        report = await executor.sync(local, ONLINE)
        assert report.paused and words in report.paused
        assert report.unsent == 20, "what was not sent is counted"
        posts = service.count(method="POST")
        assert posts <= 16, "sending stops after the first batch"
        again = await executor.sync(local, ONLINE)
    assert again.paused == report.paused
    assert service.count(method="POST") == posts, "a paused service is not called"
    state = await store.service_state("spec")
    assert state.paused_until > time.time() + 30
    rows = await store.remote_pins("spec")
    assert RemoteStatus.INTENT not in {r.status for r in rows.values()}


async def test_a_short_retry_after_is_waited_out_and_the_add_sent_once(
    service: FakePinningService, store: StateStore
) -> None:
    local = local_pins(10)
    service.inject(Fault("rate_limit", retry_after=0.3), method="POST", skip=3)
    executor = executor_for(service, store, concurrency=1)
    async with executor.client:
        report = await executor.sync(local, ONLINE)
    assert report.backoff is None and report.added == 10
    assert service.count(status=429) == 1
    assert service.rate_limit_violations == []
    assert all(len(service.pins_for_cid(cid)) == 1 for cid in local)


async def test_rate_limit_pauses_until_retry_after(
    service: FakePinningService, store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = local_pins(10)
    service.inject(Fault("rate_limit", retry_after=0.5), method="POST", skip=3)
    executor = executor_for(service, store, concurrency=1, tuning=Tuning(inline_wait=0.1))
    async with executor.client:
        report = await executor.sync(local, ONLINE)
        assert report.backoff and report.backoff.startswith("rate limited: nothing is sent")
        assert report.paused is None, "a rate limit is temporary, not a pause for the user"
        assert (await executor.sync(local, ONLINE)).backoff, "still within Retry-After"
        await asyncio.sleep(0.6)
        report = await executor.sync(local, ONLINE)
    assert report.backoff is None and report.paused is None
    assert service.rate_limit_violations == []
    assert all(len(service.pins_for_cid(cid)) == 1 for cid in local)


async def test_a_failing_service_does_not_stop_another(store: StateStore) -> None:
    local = local_pins(20)
    async with FakePinningService(token=TOKEN) as good, FakePinningService(token=TOKEN) as bad:
        bad.inject(Fault("status", status=500), times=None)
        ok_exec = executor_for(good, store, name="good")
        bad_exec = executor_for(bad, store, name="bad")
        async with ok_exec.client, bad_exec.client:
            import asyncio

            ok_report, bad_report = await asyncio.gather(
                ok_exec.sync(local, ONLINE), bad_exec.sync(local, ONLINE)
            )
    assert ok_report.added == 20 and ok_report.error is None
    assert bad_report.error and "HTTP 500" in bad_report.error
    assert (await store.service_state("bad")).last_error == bad_report.error
