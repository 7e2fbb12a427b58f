"""Reliability, one behaviour at a time: the engine against our fault-injecting Pinning Service
and our fault-capable Kubo RPC server, over real sockets, with a real SQLite state file."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from pinsyncd import clock
from pinsyncd.config import Config, parse_config
from pinsyncd.model import RemotePin, RemoteStatus
from pinsyncd.store import StateStore
from pinsyncd.store.readonly import read_failed, read_status
from pinsyncd.sync.engine import SyncEngine
from pinsyncd.tuning import Tuning
from tests.cidgen import random_cids
from tests.fake_kubo import FakeKubo, StreamFault
from tests.fake_psa import FAIL_DETAILS, FakePinningService, Fault

TOKEN = "reliability-token"


def config_text(config: Config) -> str:
    """The YAML a Config came from (make_config keeps it on the object for tests)."""
    return config.source.read_text()


def make_config(
    tmp_path: Path,
    node: FakeKubo,
    services: Sequence[tuple[str, FakePinningService]],
    *,
    service_extra: str = "",
    retry: str = "base: 10ms\n  cap: 50ms\n  max_attempts: 3\n  failed_retry: 1d",
) -> Config:
    lines = [
        f"node:\n  api: {node.url}\n  timeout: 2s",
        "sync:\n  interval: 1h\n  status_interval: 100ms\n  origins: all",
        f"state:\n  path: {tmp_path / 'state.db'}",
        f"retry:\n  {retry}",
        "services:",
    ]
    for name, svc in services:
        lines.append(
            f"  - name: {name}\n    endpoint: {svc.url}\n    token_env: TOKEN\n"
            f"    timeout: 500ms\n    concurrency: 4\n{service_extra}"
        )
    text = "\n".join(lines) + "\n"
    source = tmp_path / "config.yaml"
    source.write_text(text)
    return parse_config(text, env={"TOKEN": TOKEN}, source=source)


@pytest.fixture
async def node() -> AsyncIterator[FakeKubo]:
    async with FakeKubo(pins=40) as fake:
        yield fake


@pytest.fixture
async def service() -> AsyncIterator[FakePinningService]:
    async with FakePinningService(token=TOKEN) as svc:
        yield svc


async def run_cycles(config: Config, count: int = 1, *, send: bool = True) -> list:
    store = await StateStore.open(config.state_path)
    engine = SyncEngine(config, store)
    reports = []
    try:
        for _ in range(count):
            reports.append(await engine.cycle(send=send))
    finally:
        await engine.close()
        await store.close()
    return reports


async def test_transient_failures_back_off_and_the_backoff_survives_a_restart(
    tmp_path: Path, node: FakeKubo, service: FakePinningService
) -> None:
    # Full jitter draws the wait from [0, cap]: with a 2 s cap it was sometimes a few ms, over
    # before the "restarted" run began. An hour makes that a one-in-ten-thousand chance.
    config = make_config(tmp_path, node, [("spec", service)], retry="base: 1h\n  cap: 1h")
    service.inject(Fault("status", status=503), method="GET", times=None)
    (report,) = await run_cycles(config)
    spec = report.services["spec"]
    assert spec.error and "HTTP 503" in spec.error
    assert spec.backoff and spec.backoff.startswith("backing off: 1 failed cycle(s)")
    assert service.count(method="GET") == 3, "a read is tried three times, then the cycle stops"
    sent = service.count()

    (again,) = await run_cycles(config)  # a new process: the backoff is in the state file
    assert again.services["spec"].backoff == spec.backoff
    assert service.count() == sent, "nothing is sent while backing off"
    status = read_status(config.state_path, ["spec"])["services"]["spec"]
    assert status["paused"] == spec.backoff


async def test_backoff_grows_and_resets_after_success(
    tmp_path: Path, node: FakeKubo, service: FakePinningService
) -> None:
    config = make_config(tmp_path, node, [("spec", service)], retry="base: 10ms\n  cap: 20ms")
    rule = service.inject(Fault("status", status=500), method="GET", times=None)
    await run_cycles(config)
    await asyncio.sleep(0.05)
    (second,) = await run_cycles(config)
    assert second.services["spec"].backoff.startswith("backing off: 2 failed cycle(s)")
    service.rules.remove(rule)
    await asyncio.sleep(0.05)
    with capture_logs() as logs:
        (ok,) = await run_cycles(config)
    assert ok.services["spec"].added == len(node.pinset()) and ok.services["spec"].backoff is None
    assert any(e["event"] == "service is answering again" for e in logs)
    store = await StateStore.open(config.state_path)
    try:
        assert (await store.service_state("spec")).failures == 0
    finally:
        await store.close()


@pytest.mark.slow
async def test_a_429_halves_the_rate_and_a_restart_remembers_it(
    tmp_path: Path, node: FakeKubo, service: FakePinningService
) -> None:
    config = make_config(
        tmp_path, node, [("spec", service)], service_extra="    rate_limit: 40/s\n"
    )
    service.inject(Fault("rate_limit", retry_after=0.2), method="POST", skip=37)
    (report,) = await run_cycles(config)
    assert report.services["spec"].backoff is None, "a short Retry-After is waited out"
    assert report.services["spec"].added == len(node.pinset())
    store = await StateStore.open(config.state_path)
    try:
        saved = (await store.service_state("spec")).rate
        assert saved is not None and 20.0 <= saved < 25.0, "halved from 40/s, then +2% a success"
    finally:
        await store.close()
    await asyncio.sleep(0.25)
    store = await StateStore.open(config.state_path)
    engine = SyncEngine(config, store)
    try:
        await engine.cycle(send=False, list_node=False)  # a status round: a request or two
        rate = engine.clients["spec"].throttle.rate
        assert rate is not None and saved < rate < saved * 1.1, "back up slowly from there"
        await engine.cycle()
    finally:
        await engine.close()
        await store.close()
    assert service.rate_limit_violations == []
    assert all(len(service.pins_for_cid(cid)) == 1 for cid in node.pinset())


@pytest.mark.parametrize(
    "fault",
    [
        Fault("rate_limit", retry_after=1.0, retry_after_header="seconds"),
        Fault("rate_limit", retry_after=1.2, retry_after_header="http_date"),
        Fault("rate_limit", retry_after=1.0, retry_after_header=None, reset_header=True),
    ],
    ids=["retry-after-seconds", "retry-after-http-date", "x-ratelimit-reset"],
)
@pytest.mark.slow
async def test_nothing_is_sent_before_the_service_says(
    tmp_path: Path, node: FakeKubo, service: FakePinningService, fault: Fault
) -> None:
    config = make_config(tmp_path, node, [("spec", service)])
    service.inject(fault, times=2, skip=3)
    store = await StateStore.open(config.state_path)
    engine = SyncEngine(config, store)
    try:
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            await engine.cycle()
            if all(service.pins_for_cid(cid) for cid in node.pinset()):
                break
            await asyncio.sleep(0.05)
    finally:
        await engine.close()
        await store.close()
    # Requests already under way when the 429 was sent may get one too; none may be sent after.
    assert service.count(status=429) >= 2
    assert service.rate_limit_violations == []
    assert all(len(service.pins_for_cid(cid)) == 1 for cid in node.pinset())


async def test_a_refused_token_is_logged_once_rechecked_slowly_and_others_go_on(
    tmp_path: Path, node: FakeKubo, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with FakePinningService(token="other") as bad, FakePinningService(token=TOKEN) as good:
        config = make_config(tmp_path, node, [("bad", bad), ("good", good)])
        store = await StateStore.open(config.state_path)
        engine = SyncEngine(config, store, tuning=Tuning(auth_recheck=30.0))
        boot = clock.boot_seconds()
        try:
            with capture_logs() as logs:
                for step in range(10):  # a cycle every 10 s of pinsyncd's clock, for 100 s
                    monkeypatch.setattr(clock, "boot_seconds", lambda s=step: boot + 10.0 * s)
                    report = await engine.cycle()
        finally:
            await engine.close()
            await store.close()
        pauses = [e for e in logs if e["event"].startswith("paused:")]
        errors = [e for e in pauses if e["log_level"] == "error"]
        assert len(errors) == 1, "one clear line, not one per recheck (those are debug)"
        assert pauses[0]["event"] == "paused: the token from $TOKEN was refused"
        assert pauses[0]["service"] == "bad"
        assert bad.count() == 4, "asked at 0, 30, 60 and 90 s (every recheck), not every cycle"
        assert report.services["bad"].paused == "paused: the token from $TOKEN was refused"
        assert report.services["good"].paused is None
        assert all(len(good.pins_for_cid(cid)) == 1 for cid in node.pinset())
        assert TOKEN not in str(logs) and "other" not in str(logs)


async def test_failed_pins_are_reverified_replaced_and_then_failed_for_good(
    tmp_path: Path, node: FakeKubo
) -> None:
    doomed = sorted(node.pinset())[:2]
    async with FakePinningService(token=TOKEN, transition_after=0.02, fail_cids=set(doomed)) as svc:
        config = make_config(tmp_path, node, [("spec", svc)])
        store = await StateStore.open(config.state_path)
        engine = SyncEngine(config, store)
        try:
            for _ in range(30):
                await engine.cycle()
                rows = await store.remote_pins("spec")
                if all(
                    rows[c].attempts >= 3 and rows[c].status is RemoteStatus.FAILED for c in doomed
                ):
                    break
                await asyncio.sleep(0.06)
        finally:
            await engine.close()
            await store.close()
        for cid in doomed:
            assert len(svc.pins_for_cid(cid)) == 1, "a replace never leaves the old request"
            assert rows[cid].attempts == 3
            assert rows[cid].next_attempt > time.time() + 23 * 3600, "now only once a day"
        replaces = [r for r in svc.requests if r.method == "POST" and r.path != "/pins"]
        assert len(replaces) == 4, "two replaces for each of the two doomed pins"
        verifies = [r for r in svc.requests if r.method == "GET" and r.path.startswith("/pins/")]
        assert len(verifies) >= 4, "each replace was preceded by a second look"
    status = read_status(config.state_path, ["spec"], max_attempts=3)["services"]["spec"]
    assert (status["failed"], status["failed_for_good"]) == (2, 2)
    assert status["pinned"] == len(node.pinset()) - 2
    failed = read_failed(config.state_path, ["spec"])
    assert {f["cid"] for f in failed} == set(doomed)
    assert {f["reason"] for f in failed} == {FAIL_DETAILS}


async def test_an_add_that_never_gets_through_fails_for_good_like_a_failed_pin(
    tmp_path: Path,
) -> None:
    """One rule for "failed for good", wherever it is read: `max_attempts` tries without a
    pin, whether the service marked it failed or the add never reached it (here, a 400 each
    time). `status` counts both, `status --failed` lists both with their reason, and the
    policy counts both as lost (so the next service in line takes them over)."""
    path = tmp_path / "state.db"
    store = await StateStore.open(path)
    failed, errored, young = random_cids(3)
    try:
        await store.replace_local_pins({failed: "a", errored: "b", young: "c"})
        await store.save(
            [
                RemotePin("spec", failed, RemoteStatus.FAILED, "r1", attempts=3, details="gone"),
                RemotePin("spec", errored, RemoteStatus.ERROR, attempts=3, last_error="HTTP 400"),
                RemotePin("spec", young, RemoteStatus.ERROR, attempts=2, last_error="HTTP 400"),
            ]
        )
        lost = await store.failed_for_good(["spec"], 3)
    finally:
        await store.close()
    assert lost == {failed: 1, errored: 1}
    status = read_status(path, ["spec"], max_attempts=3)["services"]["spec"]
    assert status["failed_for_good"] == 2
    listed = {f["cid"]: f["reason"] for f in read_failed(path, ["spec"], max_attempts=3)}
    assert listed == {failed: "gone", errored: "HTTP 400"}


async def test_a_failed_pin_that_is_in_fact_pinned_is_not_replaced(
    tmp_path: Path, node: FakeKubo, service: FakePinningService
) -> None:
    config = make_config(tmp_path, node, [("spec", service)])
    await run_cycles(config)
    victim = sorted(node.pinset())[0]
    (request,) = service.pins_for_cid(victim)
    service.set_status(request["requestid"], "failed", "flaky")
    await run_cycles(config, send=False)
    service.set_status(request["requestid"], "pinned")  # the service changes its mind
    await asyncio.sleep(0.06)
    await run_cycles(config)
    assert not [r for r in service.requests if r.method == "POST" and r.path != "/pins"]
    assert service.pins_for_cid(victim)[0]["requestid"] == request["requestid"]


async def test_node_offline_then_back(
    tmp_path: Path, node: FakeKubo, service: FakePinningService
) -> None:
    service.inject(Fault("status", status=400), method="POST", times=5)  # refused: retried later
    config = make_config(tmp_path, node, [("spec", service)])
    store = await StateStore.open(config.state_path)
    engine = SyncEngine(config, store)
    try:
        with capture_logs() as logs:
            first = await engine.cycle()
            assert first.node_online and first.services["spec"].errors == 5
            await node.go_offline()
            node.extra.update(
                {"bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy": "new"}
            )
            for pin in service.pins[:10]:
                service.set_status(pin["requestid"], "pinned")
            await asyncio.sleep(0.06)
            offline = [await engine.cycle(), await engine.cycle()]
            await node.come_back()
            back = await engine.cycle()
    finally:
        await engine.close()
        await store.close()
    assert all(not r.node_online and "node unreachable" in (r.node_error or "") for r in offline)
    assert sum(r.services["spec"].became_pinned for r in offline) == 10, "tracking goes on"
    retried = [p for p in service.pins if "origins" not in p["pin"]]
    assert len(retried) == 5, "the refused adds were retried while offline, without origins"
    assert all(p["pin"]["meta"]["node"] == node.peer_id for p in retried), "still ours"
    assert back.node_online and back.local_added == 1 and back.services["spec"].added == 1
    (new,) = service.pins_for_cid("bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy")
    assert new["pin"]["origins"], "online again: origins again"
    events = [e["event"] for e in logs]
    assert events.count("local node unreachable; working from the last listing") == 1
    assert events.count("local node is back") == 1


async def test_failed_pins_wait_for_the_node_and_are_retried_as_soon_as_it_is_back(
    tmp_path: Path, node: FakeKubo
) -> None:
    """A failed pin is not replaced while the node (usually the only provider) is offline,
    however due it is: that would only fail again and use up an attempt. When the node is
    back, failed pins are retried at once, with fresh origins, not after their backoff."""
    doomed = sorted(node.pinset())[:2]
    async with FakePinningService(token=TOKEN, transition_after=0.01, fail_cids=set(doomed)) as svc:
        # max_attempts well above what a slow machine can use up before the node goes away
        retry = "base: 10ms\n  cap: 50ms\n  max_attempts: 100\n  failed_retry: 1d"
        config = make_config(tmp_path, node, [("spec", svc)], retry=retry)
        store = await StateStore.open(config.state_path)
        engine = SyncEngine(config, store)

        def replaces() -> int:
            return sum(1 for r in svc.requests if r.method == "POST" and r.path != "/pins")

        try:
            await engine.cycle()
            for _ in range(20):
                await asyncio.sleep(0.03)
                await engine.cycle()
                rows = await store.remote_pins("spec")
                if all(rows[c].status is RemoteStatus.FAILED for c in doomed):
                    break
            await node.go_offline()
            before = replaces()
            for _ in range(5):  # the backoff (10-50 ms) passes many times over
                await asyncio.sleep(0.06)
                await engine.cycle()
            assert replaces() == before, "no replace while the node is offline"
            for cid in doomed:
                await store.save([(await store.remote_pins("spec"))[cid].evolve(next_attempt=9e9)])
            await node.come_back()
            back = await engine.cycle()
        finally:
            await engine.close()
            await store.close()
    assert back.node_came_back and back.services["spec"].replaced == 2, "retried at once"
    assert replaces() == before + 2
    for cid in doomed:
        [pin] = svc.pins_for_cid(cid)  # the replace took the failed request's place
        assert pin["pin"]["origins"], "with the node's addresses again"


async def test_a_malformed_answer_fails_that_service_only(tmp_path: Path, node: FakeKubo) -> None:
    async with FakePinningService(token=TOKEN) as broken, FakePinningService(token=TOKEN) as ok:
        broken.inject(Fault("malformed", shape="wrong_shape"), method="GET", times=None)
        config = make_config(tmp_path, node, [("broken", broken), ("ok", ok)])
        (report,) = await run_cycles(config)
    assert "does not match the spec" in (report.services["broken"].error or "")
    assert report.services["ok"].added == len(node.pinset())
    assert report.services["ok"].error is None


@pytest.mark.parametrize("kind", ["cut", "error"])
async def test_a_broken_pin_listing_never_replaces_the_last_complete_one(
    tmp_path: Path, node: FakeKubo, service: FakePinningService, kind: str
) -> None:
    config = make_config(tmp_path, node, [("spec", service)])
    store = await StateStore.open(config.state_path)
    engine = SyncEngine(config, store)
    try:
        first = await engine.cycle()
        node.extra["bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"] = "late"
        # A cut stops the probe (the listing without names) already; an error line only
        # makes it differ, and then breaks the full listing that follows.
        node.stream_faults += [StreamFault(kind, after=10)] * (2 if kind == "error" else 1)
        broken = await engine.cycle()
        healed = await engine.cycle()
    finally:
        await engine.close()
        await store.close()
    assert first.local_pins == 40
    assert not broken.node_online and broken.local_pins == 40, "the last complete listing"
    assert broken.local_removed == 0 and broken.services["spec"].added == 0
    assert healed.node_online and healed.local_added == 1 and healed.services["spec"].added == 1


async def test_verification_repins_what_vanished_and_only_that(
    tmp_path: Path, node: FakeKubo
) -> None:
    """A pinned pin that silently disappears is pinned again at the next verification. A
    server whose listing misses pins (here: capped at 10 per page, count = page length) must
    not make pinsyncd pin anything twice: a GET confirms each "missing" pin first."""
    async with FakePinningService(
        token=TOKEN, transition_after=0.0, ignore_limit_over=10, count_mode="page"
    ) as svc:
        lines = make_config(tmp_path, node, [("spec", svc)])
        config = parse_config(
            config_text(lines).replace(
                "status_interval: 100ms", "status_interval: 100ms\n  verify_interval: 200ms"
            ),
            env={"TOKEN": TOKEN},
        )
        await run_cycles(config)  # adds everything; pinned at once
        await run_cycles(config, send=False)  # tracking sees them pinned
        gone = sorted(node.pinset())[:3]
        for cid in gone:
            svc.vanish(svc.pins_for_cid(cid)[0]["requestid"])
        await asyncio.sleep(0.25)
        with capture_logs() as logs:
            (report,) = await run_cycles(config)
        (again,) = await run_cycles(config)
    assert report.services["spec"].vanished == 3
    assert again.services["spec"].added == 3, "re-pinned at the next cycle"
    assert all(len(svc.pins_for_cid(cid)) == 1 for cid in node.pinset()), "none twice"
    (verified,) = [e for e in logs if e["event"] == "verified the pinned set"]
    assert verified["vanished"] == 3 and verified["listed"] < 37, "the listing was incomplete"
