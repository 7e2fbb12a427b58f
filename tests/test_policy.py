"""Replication and lifecycle policies, end to end: the engine against two and three real
services (our spec-faithful one, and the npm mock) over real sockets, with a real SQLite state.

K of N with priorities, failover from a service that is down for the whole test and from one
that fails every pin, trimming extra copies, the unpin policy (never another tool's pin), name
changes, and selection by pin type, CID, name glob and the MFS root on a real Kubo.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from pinsyncd.config import Config, parse_config
from pinsyncd.model import RemoteStatus
from pinsyncd.policy import mfs_name
from pinsyncd.store import StateStore
from pinsyncd.store.readonly import read_status
from pinsyncd.sync.engine import CycleReport, SyncEngine
from pinsyncd.tuning import DEFAULT
from tests.conftest import StoppedClock
from tests.fake_kubo import FakeKubo, generated_cid
from tests.fake_psa import FakePinningService
from tests.peers import KuboNode, MockPinningService

TOKEN = "policy-token"
FOREIGN = {"app_id": "another-tool"}


@dataclass
class Svc:
    name: str
    url: str
    token: str = TOKEN
    extra: str = ""


def make_config(
    tmp_path: Path,
    node_url: str,
    services: Sequence[Svc],
    *,
    sync: str = "",
    retry: str = "base: 10ms\n  cap: 50ms\n  max_attempts: 3\n  failed_retry: 1d",
    origins: str = "all",
) -> Config:
    lines = [
        f"node:\n  api: {node_url}\n  timeout: 5s",
        f"sync:\n  interval: 1h\n  status_interval: 100ms\n  origins: {origins}\n" + sync,
        f"state:\n  path: {tmp_path / 'state.db'}",
        f"retry:\n  {retry}",
        "services:",
    ]
    env = {}
    for index, svc in enumerate(services):
        env[f"TOKEN_{index}"] = svc.token
        lines.append(
            f"  - name: {svc.name}\n    endpoint: {svc.url}\n    token_env: TOKEN_{index}\n"
            f"    timeout: 1s\n    concurrency: 4\n{svc.extra}"
        )
    text = "\n".join(lines) + "\n"
    source = tmp_path / "config.yaml"
    source.write_text(text)
    return parse_config(text, env=env, source=source)


class Engine:
    """A SyncEngine on a state file, run cycle by cycle."""

    def __init__(self, config: Config) -> None:
        self.config = config

    async def __aenter__(self) -> Engine:
        self.store = await StateStore.open(self.config.state_path)
        self.engine = SyncEngine(self.config, self.store)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.engine.close()
        await self.store.close()

    async def cycle(self) -> CycleReport:
        return await self.engine.cycle()

    async def until(
        self, done: Callable[[], bool], what: str, *, cycles: int = 60, pause: float = 0.05
    ) -> None:
        for _ in range(cycles):
            await self.cycle()
            if done():
                return
            await asyncio.sleep(pause)
        known = {s.name: await self.statuses(s.name) for s in self.config.services}
        raise AssertionError(f"not reached after {cycles} cycles: {what}; state: {known}")

    async def statuses(self, service: str) -> dict[str, RemoteStatus]:
        return {cid: row.status for cid, row in (await self.store.remote_pins(service)).items()}


def ours(svc: FakePinningService) -> dict[str, list[dict]]:
    """pinsyncd's requests on a service, by CID (other tools' pins left out)."""
    out: dict[str, list[dict]] = {}
    for pin in svc.pins:
        if (pin["pin"].get("meta") or {}).get("app_id") != FOREIGN["app_id"]:
            out.setdefault(pin["pin"]["cid"], []).append(pin)
    return out


def pinned_once(svc: FakePinningService, cids: set[str]) -> bool:
    held = ours(svc)
    return set(held) == cids and all(
        len(p) == 1 and p[0]["status"] == "pinned" for p in held.values()
    )


def below(config: Config, replicas: int) -> int:
    """Selected CIDs that pinsyncd's state has pinned on fewer than `replicas` services."""
    names = [s.name for s in config.services]
    kinds = read_status(config.state_path, names, replicas=replicas)["replication"]["kinds"]
    return sum(kind["below"] for kind in kinds.values())


def local_pins(count: int, seed: str) -> dict[str, str]:
    return {generated_cid(i, seed): f"{seed}-{i}" for i in range(count)}


# --- K of N -----------------------------------------------------------------------------------


async def test_two_of_three_fill_services_in_priority_order(tmp_path: Path) -> None:
    pins = local_pins(12, "k")
    async with (
        FakeKubo(extra=dict(pins)) as node,
        FakePinningService(token=TOKEN, transition_after=0.02) as a,
        FakePinningService(token=TOKEN, transition_after=0.02) as b,
        FakePinningService(token=TOKEN, transition_after=0.02) as c,
    ):
        services = [
            Svc("a", a.url, extra="    priority: 2\n"),
            Svc("b", b.url, extra="    priority: 3\n"),
            Svc("c", c.url, extra="    priority: 1\n"),
        ]
        config = make_config(tmp_path, node.url, services, sync="  replicas: 2\n")
        assert config.service_order == ("c", "a", "b")
        async with Engine(config) as run:
            await run.until(lambda: pinned_once(c, set(pins)) and pinned_once(a, set(pins)), "c, a")
            for _ in range(3):
                await run.cycle()
        assert ours(b) == {}, "the third service is not needed while the first two hold"
        assert b.count("POST") == 0
        status = read_status(config.state_path, ["a", "b", "c"], replicas=2)
        assert status["replication"]["kinds"] == {"recursive": {"cids": 12, "below": 0, "none": 0}}
        assert status["services"]["b"]["unsent"] == 0, "nothing is meant for b"


@pytest.mark.slow
async def test_a_service_down_for_the_whole_test_fails_over_and_back(tmp_path: Path) -> None:
    """a is down from the start: after failover_after, c takes a's share. When a comes back
    it pins its share, and c's extra copies are deleted (trim_extra) - but never the pins
    another tool made on c."""
    pins = local_pins(10, "f")
    cids = set(pins)
    async with (
        FakeKubo(extra=dict(pins)) as node,
        FakePinningService(token=TOKEN, transition_after=0.02) as a,
        FakePinningService(token=TOKEN, transition_after=0.02) as b,
        FakePinningService(token=TOKEN, transition_after=0.02) as c,
    ):
        await a.stop()  # down for now: connections are refused
        foreign_elsewhere = c.add_pin(generated_cid(1, "not-local"), meta=FOREIGN)["requestid"]
        services = [Svc("a", a.url), Svc("b", b.url), Svc("c", c.url)]
        sync = "  replicas: 2\n  failover_after: 1500ms\n  trim_extra: true\n"
        config = make_config(tmp_path, node.url, services, sync=sync)
        async with Engine(config) as run:
            await run.until(lambda: pinned_once(b, cids), "b pinned", pause=0.02)
            assert ours(c) == {}, "c waits while a might still come back"
            await run.until(lambda: pinned_once(c, cids), "failover to c", pause=0.1)
            await run.until(lambda: below(config, 2) == 0, "pinsyncd knows", cycles=10)
            # another tool pins one of our CIDs on c, after c has been adopted
            late_foreign = c.add_pin(sorted(cids)[0], meta=FOREIGN)["requestid"]

            await a.start()  # a is back, on the same port
            await run.until(lambda: pinned_once(a, cids), "a back", pause=0.1)
            await run.until(lambda: ours(c) == {}, "c's extra copies trimmed")
            await run.cycle()
        assert pinned_once(b, cids)
        assert {p["requestid"] for p in c.pins} == {foreign_elsewhere, late_foreign}
        assert c.count("DELETE") == len(cids), "one delete per extra copy, none for others"
        for svc in (a, b):
            assert svc.count("DELETE") == 0
        assert c.count("POST", "/pins") == len(cids), "c added each CID once"


@pytest.mark.slow
async def test_without_trim_the_failover_copies_stay(tmp_path: Path) -> None:
    pins = local_pins(6, "t")
    cids = set(pins)
    async with (
        FakeKubo(extra=dict(pins)) as node,
        FakePinningService(token=TOKEN, transition_after=0.02) as a,
        FakePinningService(token=TOKEN, transition_after=0.02) as b,
    ):
        await a.stop()
        services = [Svc("a", a.url), Svc("b", b.url)]
        config = make_config(
            tmp_path, node.url, services, sync="  replicas: 1\n  failover_after: 300ms\n"
        )
        async with Engine(config) as run:
            await run.until(lambda: pinned_once(b, cids), "failover to b", pause=0.1)
            await a.start()
            await run.until(lambda: pinned_once(a, cids), "a back", pause=0.1)
            for _ in range(3):
                await run.cycle()
        assert pinned_once(b, cids), "kept: trim_extra is off"
        assert b.count("DELETE") == 0


async def test_a_refused_token_pauses_the_service_and_its_share_fails_over(
    tmp_path: Path,
) -> None:
    pins = local_pins(5, "auth")
    async with (
        FakeKubo(extra=dict(pins)) as node,
        FakePinningService(token=TOKEN, transition_after=0.01) as refusing,
        FakePinningService(token=TOKEN, transition_after=0.01) as spare,
    ):
        services = [Svc("refusing", refusing.url, token="wrong"), Svc("spare", spare.url)]
        sync = "  replicas: 1\n  failover_after: 300ms\n"
        config = make_config(tmp_path, node.url, services, sync=sync)
        async with Engine(config) as run:
            report = await run.cycle()
            assert report.services["refusing"].paused
            assert ours(spare) == {}, "not before failover_after"
            await run.until(lambda: pinned_once(spare, set(pins)), "failover", pause=0.1)
        assert ours(refusing) == {}


async def test_a_service_that_fails_every_pin_hands_them_to_the_next(tmp_path: Path) -> None:
    pins = local_pins(8, "x")
    cids = set(pins)
    async with (
        FakeKubo(extra=dict(pins)) as node,
        FakePinningService(token=TOKEN, transition_after=0.01, fail_cids=cids) as bad,
        FakePinningService(token=TOKEN, transition_after=0.01) as good,
        FakePinningService(token=TOKEN, transition_after=0.01) as spare,
    ):
        services = [Svc("bad", bad.url), Svc("good", good.url), Svc("spare", spare.url)]
        retry = "base: 10ms\n  cap: 20ms\n  max_attempts: 2\n  failed_retry: 1d"
        config = make_config(tmp_path, node.url, services, sync="  replicas: 2\n", retry=retry)
        async with Engine(config) as run:
            await run.until(
                lambda: pinned_once(good, cids) and pinned_once(spare, cids), "good and spare"
            )
            # The services pinned them; one more cycle and the state has followed them there
            # (on a loaded machine the last adds can be pinned before the cycle that sent
            # them ends, and tracking only follows requests sent before a cycle began).
            await run.cycle()
            bad_rows = await run.store.remote_pins("bad")
        assert {r.status for r in bad_rows.values()} == {RemoteStatus.FAILED}
        assert all(r.attempts == 2 for r in bad_rows.values()), "failed for good, then handed on"
        for cid in cids:
            assert len(bad.pins_for_cid(cid)) == 1, "a replace never leaves a second request"
        status = read_status(
            config.state_path, ["bad", "good", "spare"], replicas=2, max_attempts=2
        )
        assert status["services"]["bad"]["failed_for_good"] == len(cids)
        assert status["replication"]["kinds"]["recursive"]["below"] == 0
        assert status["services"]["bad"]["unsent"] == 0


async def test_the_npm_mock_and_a_service_down_for_the_whole_test(
    tmp_path: Path, mock_psa: MockPinningService
) -> None:
    """Four services, two replicas: the npm mock first, then one that never answers (nothing
    listens on its port), then a and b. After failover_after, a takes the dead one's share;
    b is never needed."""
    pins = local_pins(15, "m")
    with socket.socket() as probe:  # a port with nothing behind it
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    async with (
        FakeKubo(extra=dict(pins)) as node,
        FakePinningService(token=TOKEN, transition_after=0.02) as a,
        FakePinningService(token=TOKEN, transition_after=0.02) as b,
    ):
        services = [
            Svc("mock", mock_psa.url, token=mock_psa.token, extra="    priority: -1\n"),
            Svc("dead", f"http://127.0.0.1:{dead_port}"),
            Svc("a", a.url),
            Svc("b", b.url),
        ]
        sync = "  replicas: 2\n  failover_after: 500ms\n"
        config = make_config(tmp_path, node.url, services, sync=sync)
        async with Engine(config) as run:
            await run.until(lambda: pinned_once(a, set(pins)), "a took over", pause=0.1)
            mock_psa.set_status(sorted(pins), "pinned")
            await run.until(lambda: below(config, 2) == 0, "two copies of each", cycles=10)
            mock = await run.statuses("mock")
        assert set(mock) == set(pins) and set(mock.values()) == {RemoteStatus.PINNED}
        assert ours(b) == {} and b.count("POST") == 0
        status = read_status(config.state_path, ["mock", "dead", "a", "b"], replicas=2)
        assert status["services"]["dead"]["pinned"] == 0
        assert status["services"]["dead"]["last_error"], "why it is passed over is shown"


# --- unpin policy -----------------------------------------------------------------------------


async def test_mirror_deletes_only_its_own_pins_after_the_grace_period(
    tmp_path: Path, mock_psa: MockPinningService, monkeypatch: pytest.MonkeyPatch
) -> None:
    pins = local_pins(6, "u")
    gone, back, *kept = sorted(pins)
    async with (
        FakeKubo(extra=dict(pins)) as node,
        FakePinningService(token=TOKEN, transition_after=0.01) as spec,
    ):
        foreign_other = spec.add_pin(generated_cid(7, "elsewhere"), meta=FOREIGN)["requestid"]
        services = [Svc("spec", spec.url), Svc("mock", mock_psa.url, token=mock_psa.token)]
        sync = "  unpin: mirror\n  unpin_grace: 1s\n"
        config = make_config(tmp_path, node.url, services, sync=sync)
        async with Engine(config) as run:
            await run.until(lambda: pinned_once(spec, set(pins)), "all pinned")
            await run.cycle()
            assert set(await run.statuses("mock")) == set(pins)
            foreign_same = spec.add_pin(gone, meta=FOREIGN)["requestid"]  # another tool pins it too
            stopped = StoppedClock(monkeypatch)  # the grace is pinsyncd's time, not the machine's
            del node.extra[gone]
            del node.extra[back]
            await run.cycle()
            assert gone in ours(spec), "not before the grace period"
            node.extra[back] = "back again"  # re-pinned within the grace period
            await run.cycle()
            stopped.advance(1.1)
            await run.cycle()
            spec_rows, mock_rows = await run.statuses("spec"), await run.statuses("mock")
        assert gone not in ours(spec) and gone not in spec_rows and gone not in mock_rows
        assert back in ours(spec) and back in mock_rows, "re-pinned in time: untouched"
        assert {p["requestid"] for p in spec.pins if p["pin"]["cid"] == gone} == {foreign_same}
        assert spec.get_pin(foreign_other) is not None
        assert spec.count("DELETE") == 1
        assert spec.count("POST", "/pins") == len(pins), "nothing re-added"
        assert set(spec_rows) == {back, *kept}


async def test_a_wall_clock_step_while_running_does_not_cut_the_unpin_grace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pin leaves the node; its grace is an hour. The wall clock then steps two hours
    forward while pinsyncd runs (NTP, a laptop waking with a wrong clock). Before, the grace
    was over at once and the remote pin deleted; within a process, the grace (like pauses,
    backoff and failover) is read off a clock that such steps do not move."""
    pins = local_pins(3, "step")
    gone = sorted(pins)[0]
    async with (
        FakeKubo(extra=dict(pins)) as node,
        FakePinningService(token=TOKEN, transition_after=0.01) as spec,
    ):
        sync = "  unpin: mirror\n  unpin_grace: 1h\n"
        config = make_config(tmp_path, node.url, [Svc("spec", spec.url)], sync=sync)
        async with Engine(config) as run:
            await run.until(lambda: pinned_once(spec, set(pins)), "all pinned")
            del node.extra[gone]
            await run.cycle()
            stepped = time.time() + 7200
            monkeypatch.setattr(time, "time", lambda: stepped)
            await run.cycle()
        assert spec.count("DELETE") == 0, "an hour has not passed"
        assert gone in ours(spec)


async def test_keep_never_deletes(tmp_path: Path, pinsyncd_clock: StoppedClock) -> None:
    pins = local_pins(4, "keep")
    async with (
        FakeKubo(extra=dict(pins)) as node,
        FakePinningService(token=TOKEN, transition_after=0.01) as spec,
    ):
        config = make_config(
            tmp_path, node.url, [Svc("spec", spec.url)], sync="  unpin_grace: 1s\n"
        )
        async with Engine(config) as run:
            await run.until(lambda: pinned_once(spec, set(pins)), "all pinned")
            node.extra.clear()
            await run.cycle()
            pinsyncd_clock.advance(1.1)
            await run.cycle()
        assert pinned_once(spec, set(pins)), "unpin: keep is a backup: remote pins stay"
        assert spec.count("DELETE") == 0


# --- names ------------------------------------------------------------------------------------


async def test_a_local_rename_is_propagated_only_when_configured(
    tmp_path: Path, pinsyncd_clock: StoppedClock
) -> None:
    """A rename is seen by the next full listing (a listing without names, in between,
    cannot show it)."""
    cid = generated_cid(0, "rename")
    for propagate in (False, True):
        async with (
            FakeKubo(extra={cid: "old name"}) as node,
            FakePinningService(token=TOKEN, transition_after=0.01) as spec,
        ):
            sync = f"  propagate_names: {'true' if propagate else 'false'}\n"
            (tmp_path / str(propagate)).mkdir()
            config = make_config(
                tmp_path / str(propagate), node.url, [Svc("s", spec.url)], sync=sync
            )
            async with Engine(config) as run:
                await run.until(lambda: pinned_once(spec, {cid}), "pinned")
                node.extra[cid] = "new name"
                pinsyncd_clock.advance(DEFAULT.full_listing_every)
                await run.until(
                    lambda: spec.pins_for_cid(cid)[0]["status"] == "pinned", "settled", cycles=5
                )
                for _ in range(3):
                    await run.cycle()
                    await asyncio.sleep(0.03)
            [remote] = spec.pins_for_cid(cid)
            if propagate:
                assert remote["pin"]["name"] == "new name"
                assert remote["pin"]["meta"]["local_name"] == "new name"
                assert spec.count("POST", "/pins/") == 1, "one replace"
            else:
                assert remote["pin"]["name"] == "old name"
                assert spec.count("POST", "/pins/") == 0


# --- selection --------------------------------------------------------------------------------


async def test_pin_types_globs_cids_and_the_mfs_root_on_real_kubo(
    tmp_path: Path, kubo_factory: Callable[..., KuboNode]
) -> None:
    node = kubo_factory("sel")
    added = {}
    for name in ("photos/a.jpg", "photos/b.jpg", "tmp/x"):
        cid = node.cli("add", "-Q", "--pin=false", stdin=f"{name} {time.time_ns()}".encode())
        node.cli("pin", "add", "--name", name, cid.strip())
        added[name] = cid.strip()
    direct = node.cli("block", "put", stdin=f"direct {time.time_ns()}".encode()).strip()
    node.cli("pin", "add", "--recursive=false", direct)
    node.cli("files", "write", "--create", "/notes.txt", stdin=b"version one")
    first_root = node.cli("files", "stat", "--hash", "/").strip()
    peer_id = node.rpc("id")["ID"]
    async with FakePinningService(token=TOKEN, transition_after=0.01) as spec:
        sync = (
            "  pin_types: [recursive, direct]\n"
            f"  include: ['photos/*', {direct}]\n"
            "  exclude: ['*/b.jpg']\n"
            "  mfs: true\n"
        )
        config = make_config(tmp_path, node.api_url, [Svc("s", spec.url)], sync=sync)
        want = {added["photos/a.jpg"], direct, first_root}
        async with Engine(config) as run:
            await run.until(lambda: pinned_once(spec, want), "selected pins", cycles=20)
            [root] = spec.pins_for_cid(first_root)
            assert root["pin"]["name"] == mfs_name(peer_id)
            first_request = root["requestid"]

            node.cli("files", "write", "--create", "/more.txt", stdin=b"version two")
            second_root = node.cli("files", "stat", "--hash", "/").strip()
            assert second_root != first_root
            want = {added["photos/a.jpg"], direct, second_root}
            await run.until(lambda: pinned_once(spec, want), "new MFS root")
        replaces = [r for r in spec.requests if r.method == "POST" and r.path != "/pins"]
        assert [r.path for r in replaces] == [f"/pins/{first_request}"], "replaced, not re-added"
        assert spec.count("DELETE") == 0
        names = {p["pin"]["cid"]: p["pin"]["name"] for p in spec.pins}
        assert names[second_root] == mfs_name(peer_id)
        status = read_status(config.state_path, ["s"])
        assert status["local"]["selected"] == 3
        assert set(status["replication"]["kinds"]) == {"recursive", "direct", "mfs"}
