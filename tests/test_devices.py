"""Several devices, one account: each device owns the requests it made (`meta.node` = its
node's peer id) and never adopts, deletes, replaces or trims another's. Two devices are two
fake Kubo nodes with their own peer ids and their own states, running the real CLI against
one service; the pins made beforehand by other tools come from real Kubo's own client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from pinsyncd.ownership import APP_ID
from tests.daemon_helpers import ServiceSpec, acli, log_events, write_config
from tests.fake_kubo import FakeKubo, generated_cid
from tests.fake_psa import FakePinningService
from tests.peers import KuboNode

TOKEN = "devices-secret-token-7"
LAPTOP = "12D3KooWLaptopDeviceForPinsyncdTests111111111111111"
DESKTOP = "12D3KooWDesktopDeviceForPinsyncdTests22222222222222"


@pytest.fixture
async def service() -> AsyncIterator[FakePinningService]:
    async with FakePinningService(token=TOKEN, transition_after=0.1) as svc:
        yield svc


def pins(seed: str, count: int) -> dict[str, str]:
    return {generated_cid(i, seed): f"{seed}-{i}" for i in range(count)}


class Device:
    """One device: its node, its config and state, and the CLI run as the user runs it."""

    def __init__(self, root: Path, node: FakeKubo, services: list[ServiceSpec], sync: str):
        root.mkdir()
        self.node = node
        self.config = root / "config.yaml"
        self.state = root / "state.db"
        self.services = services
        self.env = write_config(self.config, node_api=node.url, services=services, extra_sync=sync)

    def reconfigure(self, sync: str) -> None:
        self.env = write_config(
            self.config, node_api=self.node.url, services=self.services, extra_sync=sync
        )

    async def sync(self, *args: str) -> list[dict[str, object]]:
        code, out, err = await acli(["sync", "--once", *args, "-c", str(self.config)], self.env)
        assert code == 0, err
        assert "Traceback" not in out + err
        return log_events(err)


def requests_of(service: FakePinningService, peer_id: str) -> dict[str, str]:
    """requestid -> CID of the requests a device made (its peer id in meta.node)."""
    return {
        p["requestid"]: p["pin"]["cid"]
        for p in service.pins
        if (p["pin"].get("meta") or {}).get("node") == peer_id
    }


def lose_state(root: Path) -> None:
    """The state file and its WAL are gone (a new disk, a reinstall)."""
    for path in root.glob("state.db*"):
        path.unlink()


MIRROR = "unpin: mirror\n  unpin_grace: 1s"


@pytest.mark.slow
async def test_unpinning_on_one_device_never_deletes_another_devices_pins(
    service: FakePinningService, tmp_path: Path
) -> None:
    shared, own_l, own_d = pins("shared", 40), pins("laptop", 20), pins("desktop", 20)
    spec = [ServiceSpec("spec", service.url, TOKEN)]
    async with (
        FakeKubo(extra={**shared, **own_l}, peer_id=LAPTOP) as laptop_node,
        FakeKubo(extra={**shared, **own_d}, peer_id=DESKTOP) as desktop_node,
    ):
        laptop = Device(tmp_path / "laptop", laptop_node, spec, MIRROR)
        desktop = Device(tmp_path / "desktop", desktop_node, spec, MIRROR)
        await laptop.sync("--wait")
        events = await desktop.sync("--wait")
        adopted = next(e for e in events if e["event"] == "adopted existing pins")
        assert adopted["other_devices_requests"] == 60 and adopted["adopted"] == 0
        # One request per device for a CID both hold: the default, documented.
        assert sorted(requests_of(service, LAPTOP).values()) == sorted({**shared, **own_l})
        assert sorted(requests_of(service, DESKTOP).values()) == sorted({**shared, **own_d})
        desktop_before = requests_of(service, DESKTOP)

        gone_shared, gone_own = list(shared)[:10], list(own_l)[:10]
        for cid in gone_shared + gone_own:
            del laptop_node.extra[cid]
        await laptop.sync()  # notes them gone
        await asyncio.sleep(1.1)  # past unpin_grace (1s): the real config, not a timing claim
        events = await laptop.sync()
        deleted = [e for e in events if e["event"] == "deleted pins"]
        assert deleted and deleted[0]["unpinned_locally"] == 20

        assert requests_of(service, DESKTOP) == desktop_before, "the desktop's all stay"
        laptop_left = set(requests_of(service, LAPTOP).values())
        assert laptop_left == set(shared) - set(gone_shared) | set(own_l) - set(gone_own)
        for cid in gone_shared:
            (left,) = service.pins_for_cid(cid)
            assert left["pin"]["meta"]["node"] == DESKTOP and left["status"] == "pinned"
        assert all(service.pins_for_cid(cid) == [] for cid in gone_own)

        adds = service.request_counts()["add"]
        await desktop.sync()
        assert service.request_counts()["add"] == adds, "the desktop has nothing to redo"

        # The laptop loses its state (a new disk): it finds its own requests by its peer id.
        lose_state(tmp_path / "laptop")
        events = await laptop.sync()
        adopted = next(e for e in events if e["event"] == "adopted existing pins")
        assert adopted["adopted"] == 40 and adopted["other_devices_requests"] == 60
        assert service.request_counts()["add"] == adds, "nothing pinned twice"
        # ... and they are its own again: an unpin still deletes its request, only its.
        del laptop_node.extra[list(own_l)[10]]
        await laptop.sync()
        await asyncio.sleep(1.1)
        await laptop.sync()
        assert service.pins_for_cid(list(own_l)[10]) == []
        assert requests_of(service, DESKTOP) == desktop_before


@pytest.mark.slow
async def test_trimming_extra_copies_leaves_another_devices_copies(tmp_path: Path) -> None:
    """The laptop holds everything on both services, then asks for one copy (priority) and
    `trim_extra`: its own second copies go; the desktop's on that service stay."""
    shared, own_l = pins("shared", 10), pins("laptop", 10)
    async with (
        FakePinningService(token=TOKEN, transition_after=0.1) as first,
        FakePinningService(token=TOKEN, transition_after=0.1) as second,
        FakeKubo(extra={**shared, **own_l}, peer_id=LAPTOP) as laptop_node,
        FakeKubo(extra=dict(shared), peer_id=DESKTOP) as desktop_node,
    ):
        both = [ServiceSpec("first", first.url, TOKEN), ServiceSpec("second", second.url, TOKEN)]
        laptop = Device(tmp_path / "laptop", laptop_node, both, "replicas: 2")
        desktop = Device(tmp_path / "desktop", desktop_node, both, "replicas: 2")
        await laptop.sync("--wait")
        await desktop.sync("--wait")
        desktop_before = requests_of(second, DESKTOP)
        assert sorted(desktop_before.values()) == sorted(shared)

        laptop.reconfigure("replicas: 1\n  trim_extra: true")
        events = await laptop.sync()
        deleted = [e for e in events if e["event"] == "deleted pins"]
        assert deleted and deleted[0]["extra_copy"] == 20
        assert requests_of(second, LAPTOP) == {}, "the laptop's extra copies are gone"
        assert requests_of(second, DESKTOP) == desktop_before, "the desktop's are not"
        assert len(requests_of(first, LAPTOP)) == 20 and len(requests_of(first, DESKTOP)) == 10


async def test_only_our_own_and_unclaimed_requests_are_adopted(
    kubo_factory: Callable[..., KuboNode], service: FakePinningService, tmp_path: Path
) -> None:
    """Before pinsyncd's first contact the service holds requests for the node's CIDs made
    by `ipfs pin remote add` (real Kubo), by an unknown tool, by another pinsyncd device, and
    by this device before it lost its state. The first three-but-one are adopted; the other
    device's is left alone, and this device adds its own request for that CID."""
    node = kubo_factory("node", online=False)
    cids = [node.cli("add", "-q", "--pin=true", stdin=f"file {i}".encode()) for i in range(5)]
    by_kubo, by_tool, by_other, by_us, fresh = cids
    node.cli("pin", "remote", "service", "add", "spec", service.url, TOKEN)
    # In a thread: Kubo's client talks to the service, which runs on this event loop.
    await asyncio.to_thread(
        node.cli, "pin", "remote", "add", "--service=spec", "--background", "--name=kubo", by_kubo
    )
    our_id = json.loads(node.cli("id"))["ID"]
    service.add_pin(by_tool, name="tool", meta={"app_id": "another-app"}, status="pinned")
    service.add_pin(by_other, meta={"app_id": APP_ID, "node": DESKTOP}, status="pinned")
    service.add_pin(by_us, meta={"app_id": APP_ID, "node": our_id}, status="pinned")

    config = tmp_path / "config.yaml"
    env = write_config(
        config, node_api=node.api_url, services=[ServiceSpec("spec", service.url, TOKEN)]
    )
    code, out, err = await acli(["adopt", "--service", "spec", "-c", str(config)], env)
    assert code == 0, err
    assert "spec: 3 existing pins adopted" in out
    assert "spec: 1 requests belong to other devices and were left alone" in out

    code, out, err = await acli(["sync", "--once", "-c", str(config)], env)
    assert code == 0, err
    added = [p for p in service.pins if (p["pin"].get("meta") or {}).get("node") == our_id]
    local = set(node.cli("pin", "ls", "--type=recursive", "-q").split())
    assert sorted(p["pin"]["cid"] for p in added) == sorted(local - {by_kubo, by_tool})
    assert {by_other, by_us, fresh} <= local
    assert [len(service.pins_for_cid(c)) for c in cids] == [1, 1, 2, 1, 1]
    assert service.request_counts()["delete"] == 0 and service.request_counts()["replace"] == 0


def test_a_new_identity_takes_over_its_old_requests(tmp_path: Path) -> None:
    """`node.previous_peer_ids` names the peer ids a node had before: their requests are
    adopted as its own (and can be deleted by it); a typo is a config error."""
    from pinsyncd.config import ConfigError, parse_config

    text = (
        f"node:\n  previous_peer_ids: [{LAPTOP}]\n"
        "services:\n  - {name: a, endpoint: https://a.example, token_env: T}\n"
    )
    assert parse_config(text, env={"T": "x"}).node.previous_peer_ids == [LAPTOP]
    with pytest.raises(ConfigError, match=r"node.previous_peer_ids\[0\]: 'laptop' is not a peer"):
        parse_config(text.replace(LAPTOP, "laptop"), env={"T": "x"})


@pytest.mark.slow
async def test_a_new_identity_adopts_requests_made_under_the_old_one(
    service: FakePinningService, tmp_path: Path
) -> None:
    own = pins("laptop", 10)
    spec = [ServiceSpec("spec", service.url, TOKEN)]
    async with FakeKubo(extra=dict(own), peer_id=LAPTOP) as old_node:
        old = Device(tmp_path / "old", old_node, spec, "")
        await old.sync("--wait")
    renamed = "12D3KooWNewLaptopIdentityForPinsyncdTests3333333333"
    async with FakeKubo(extra=dict(own), peer_id=renamed) as new_node:
        new = Device(tmp_path / "new", new_node, spec, "")
        events = await new.sync()
        adopted = next(e for e in events if e["event"] == "adopted existing pins")
        assert adopted["other_devices_requests"] == 10, "without the key: another device's"
        assert len(service.pins) == 20
        for request in requests_of(service, renamed):
            service.vanish(request)
        lose_state(tmp_path / "new")
        new.reconfigure("")
        text = new.config.read_text().replace(
            "node:\n", f"node:\n  previous_peer_ids: [{LAPTOP}]\n"
        )
        new.config.write_text(text)
        events = await new.sync()
        adopted = next(e for e in events if e["event"] == "adopted existing pins")
        assert adopted["adopted"] == 10 and adopted["other_devices_requests"] == 0
        assert len(service.pins) == 10, "nothing pinned twice"
