"""An unchanged listing of the node's pins is recognised by its digest and not diffed again;
everything that could make that shortcut wrong falls back to the full diff. The engine runs
against our Kubo RPC server and our Pinning Service over real sockets, with a real SQLite
state file closed, copied, downgraded and reopened."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path

import pytest

from pinsyncd.config import Config, parse_config
from pinsyncd.daemon import node_wait
from pinsyncd.store import StateStore
from pinsyncd.sync import snapshot
from pinsyncd.sync.engine import CycleReport, SyncEngine
from pinsyncd.tuning import DEFAULT
from tests.conftest import StoppedClock
from tests.fake_kubo import FakeKubo, StreamFault, generated_cid
from tests.fake_psa import FakePinningService

TOKEN = "digest-token"
NEW_CID = generated_cid(10_000, "new")


def make_config(
    tmp_path: Path, node: FakeKubo, service: FakePinningService, sync: str = ""
) -> Config:
    text = (
        f"node:\n  api: {node.url}\n  timeout: 2s\n"
        f"sync:\n  interval: 1h\n  status_interval: 100ms\n  origins: all\n{sync}"
        f"state:\n  path: {tmp_path / 'state.db'}\n"
        "services:\n"
        f"  - name: spec\n    endpoint: {service.url}\n    token_env: TOKEN\n    timeout: 2s\n"
    )
    source = tmp_path / "config.yaml"
    source.write_text(text)
    return parse_config(text, env={"TOKEN": TOKEN}, source=source)


@pytest.fixture
async def node() -> AsyncIterator[FakeKubo]:
    async with FakeKubo(pins=30) as fake:
        yield fake


@pytest.fixture
async def service() -> AsyncIterator[FakePinningService]:
    async with FakePinningService(token=TOKEN) as svc:
        yield svc


class Engine:
    """The engine on a config, a cycle at a time; the state is closed between sessions."""

    def __init__(self, config: Config) -> None:
        self.config = config

    async def cycles(self, count: int = 1) -> list[CycleReport]:
        store = await StateStore.open(self.config.state_path)
        engine = SyncEngine(self.config, store)
        try:
            return [await engine.cycle() for _ in range(count)]
        finally:
            await engine.close()
            await store.close()

    async def cycle(self) -> CycleReport:
        return (await self.cycles())[0]


def local_pins(path: Path) -> dict[str, tuple[str, int]]:
    with closing(sqlite3.connect(path)) as db, db:
        return {c: (n, s) for c, n, s in db.execute("SELECT cid, name, selected FROM local_pins")}


def listing_files(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".pinsyncd-listing")]


async def test_an_unchanged_listing_is_not_diffed_and_every_change_is(
    tmp_path: Path, node: FakeKubo, service: FakePinningService, pinsyncd_clock: StoppedClock
) -> None:
    run = Engine(make_config(tmp_path, node, service))
    first, idle = await run.cycles(2)
    assert not first.listing_unchanged and first.local_added == 30
    assert idle.listing_unchanged and (idle.local_pins, idle.selected) == (30, 30)
    assert idle.listing_probed and node.listings == [True, False], "a probe, without names"
    assert "add" not in idle.services["spec"].requests, "nothing sent"

    node.extra[NEW_CID] = "new"  # a pin added on the node
    added, idle = await run.cycles(2)
    assert not added.listing_unchanged and added.local_added == 1
    assert added.services["spec"].added == 1
    assert idle.listing_unchanged and idle.local_pins == 31

    node.extra[NEW_CID] = "renamed"  # only its name changed: a probe cannot see that
    probed = await run.cycle()
    assert probed.listing_probed and local_pins(run.config.state_path)[NEW_CID][0] == "new"
    pinsyncd_clock.advance(DEFAULT.full_listing_every)
    renamed, idle = await run.cycles(2)
    assert not renamed.listing_unchanged and renamed.local_renamed == 1
    assert local_pins(run.config.state_path)[NEW_CID][0] == "renamed"
    assert idle.listing_probed, "the probe matches the full listing of named pins"
    pinsyncd_clock.advance(DEFAULT.full_listing_every)
    full, idle = await run.cycles(2)
    assert full.listing_unchanged and not full.listing_probed, "due: listed with names"
    assert idle.listing_probed, "and the next 10 minutes count from that listing"

    del node.extra[NEW_CID]  # unpinned on the node
    removed, idle = await run.cycles(2)
    assert not removed.listing_unchanged and removed.local_removed == 1
    assert idle.listing_unchanged and idle.local_pins == 30


@pytest.mark.parametrize("kind", ["cut", "error", "trailer"])
async def test_a_listing_that_breaks_off_is_never_taken_as_unchanged(
    tmp_path: Path, node: FakeKubo, service: FakePinningService, kind: str
) -> None:
    """Even when it broke off after every pin, so that what came is the whole last listing
    (Kubo's `trailer` case: the body is complete, the error is in the trailer)."""
    run = Engine(make_config(tmp_path, node, service))
    await run.cycle()
    node.stream_faults.append(StreamFault(kind, after=node.pins))
    asked = len(node.listings)
    broken = await run.cycle()
    if kind == "error":  # an error line is part of the body: the probe differs, and the
        # full listing that follows is whole
        assert broken.node_online and not broken.listing_probed
        assert node.listings[asked:] == [False, True]
    else:
        assert not broken.node_online and broken.node_error
        assert not broken.listing_unchanged
    node.extra[NEW_CID] = "new"
    node.stream_faults += [StreamFault(kind, after=10)] * 2  # the probe, the full listing
    broken = await run.cycle()
    assert not broken.node_online and broken.local_pins == 30, "the last complete listing"
    node.stream_faults.clear()
    healed = await run.cycle()
    assert healed.node_online and not healed.listing_unchanged and healed.local_added == 1


@pytest.mark.parametrize(
    "change",
    [
        '  exclude: ["pin-1*"]\n',
        "  pin_types: [recursive, direct]\n",
        "  mfs: true\n",
    ],
    ids=["include-exclude", "pin-types", "mfs"],
)
async def test_a_config_change_in_what_a_listing_means_makes_a_full_diff(
    tmp_path: Path, node: FakeKubo, service: FakePinningService, change: str
) -> None:
    await Engine(make_config(tmp_path, node, service)).cycles(2)
    changed = Engine(make_config(tmp_path, node, service, sync=change))
    first, idle = await changed.cycles(2)
    assert not first.listing_unchanged
    assert idle.listing_unchanged
    pins = local_pins(changed.config.state_path)
    if "exclude" in change:
        assert first.selected == idle.selected == 30 - 11  # pin-1 and pin-10 … pin-19
        assert pins[generated_cid(1, "fake")][1] == 0
    if "mfs" in change:
        assert first.local_added == 1 and node.mfs_root in pins


async def test_a_selection_changed_while_the_node_was_away_is_diffed_when_it_is_back(
    tmp_path: Path, node: FakeKubo, service: FakePinningService
) -> None:
    await Engine(make_config(tmp_path, node, service)).cycles(2)
    changed = Engine(make_config(tmp_path, node, service, sync="  exclude: [pin-2]\n"))
    await node.go_offline()
    offline = await changed.cycle()
    assert not offline.node_online and offline.selected == 29, "applied to the last listing"
    await node.come_back()
    back = await changed.cycle()
    assert back.node_online and not back.listing_unchanged and back.selected == 29


async def test_a_migrated_state_is_diffed_in_full(
    tmp_path: Path, node: FakeKubo, service: FakePinningService
) -> None:
    run = Engine(make_config(tmp_path, node, service))
    await run.cycles(2)
    with closing(sqlite3.connect(run.config.state_path)) as db, db:  # as an older pinsyncd left it
        db.execute("DROP TABLE restore_items")
        db.execute("PRAGMA user_version = 6")
    migrated, idle = await run.cycles(2)
    assert not migrated.listing_unchanged and migrated.local_added == 0
    assert idle.listing_unchanged


async def test_a_state_file_put_back_from_a_copy_is_diffed_against_the_node(
    tmp_path: Path, node: FakeKubo, service: FakePinningService
) -> None:
    """The digest lives in the state file, in the transaction that wrote the pins it
    stands for: an old copy put back is as consistent as when it was made."""
    run = Engine(make_config(tmp_path, node, service))
    await run.cycles(2)
    copy = tmp_path / "copy.db"
    shutil.copy(run.config.state_path, copy)  # closed: nothing is left in its WAL
    node.extra[NEW_CID] = "new"
    await run.cycles(2)
    shutil.copy(copy, run.config.state_path)
    put_back = await run.cycle()
    assert not put_back.listing_unchanged and put_back.local_added == 1
    assert NEW_CID in local_pins(run.config.state_path)
    assert (await run.cycle()).listing_unchanged


async def test_a_listing_larger_than_memory_allows_is_kept_in_a_file_and_then_gone(
    tmp_path: Path, node: FakeKubo, service: FakePinningService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshot, "IN_MEMORY", 1000)  # 30 pins take about 2,500 bytes
    monkeypatch.setattr(snapshot, "READ_BACK", 700)
    run = Engine(make_config(tmp_path, node, service))
    first, idle = await run.cycles(2)
    assert first.local_added == 30 and idle.listing_unchanged
    assert set(local_pins(run.config.state_path)) == set(node.pinset())
    assert listing_files(tmp_path) == []


async def test_a_row_deleted_on_a_service_is_added_again_even_when_the_listing_is_unchanged(
    tmp_path: Path, node: FakeKubo, service: FakePinningService
) -> None:
    """The services skip the walk of the local pinset for pins without a request while
    nothing can have made one (`StateStore.rowless_mark`); a row deleted is such a thing."""
    config = make_config(tmp_path, node, service)
    store = await StateStore.open(config.state_path)
    engine = SyncEngine(config, store)
    try:
        await engine.cycle()
        await engine.cycle()
        cid = generated_cid(3, "fake")
        await store.forget("spec", [cid])
        again = await engine.cycle()
    finally:
        await engine.close()
        await store.close()
    assert again.listing_unchanged
    assert again.services["spec"].added == 1, f"{cid} had lost its row: sent again"


async def test_an_endless_line_is_cut_off_before_it_fills_the_disk(
    tmp_path: Path, node: FakeKubo, service: FakePinningService
) -> None:
    """The listing is kept whole before it is parsed: its line limit holds there too."""
    run = Engine(make_config(tmp_path, node, service))
    await run.cycle()
    node.stream_faults.append(StreamFault("endless_line", after=5))
    broken = await run.cycle()
    assert not broken.node_online and "longer than 1 MiB" in (broken.node_error or "")
    assert node.streamed < 2**20 + 8 * 2**20, "it stopped reading"
    assert listing_files(tmp_path) == []


async def test_the_probe_digest_of_a_listing_with_names_is_that_of_one_without() -> None:
    named = [
        b'{"Cid":"bafyone","Name":"plain","Type":"recursive"}\n',
        b'{"Cid":"bafytwo","Name":"a \\"quoted\\", \\\\ one ,\\"Name\\":\\"x",'
        b'"Type":"recursive"}\n',
        b'{"Cid":"bafythree","Type":"recursive"}\n',
    ]
    bare = [b'{"Cid":"bafyone","Type":"recursive"}\n', b'{"Cid":"bafytwo","Type":"recursive"}\n']
    bare.append(named[2])

    async def blocks(lines: list[bytes], size: int) -> AsyncIterator[bytes]:
        data = b"".join(lines)
        for start in range(0, len(data), size):
            yield data[start : start + size]

    digests = set()
    for size in (1, 7, 40, 1000):
        with snapshot.ListingSnapshot(Path("."), "context") as full:
            await full.read("recursive", blocks(named, size))
            digests.add(full.probe_digest)
        with snapshot.ListingSnapshot(Path("."), "context", keep=False) as probe:
            await probe.read("recursive", blocks(bare, size))
            digests.add(probe.probe_digest)
    assert len(digests) == 1


async def test_a_slow_node_is_looked_at_less_often(
    tmp_path: Path, node: FakeKubo, service: FakePinningService
) -> None:
    """The daemon's wait is 40 times the last probe's, when that is longer than the
    interval; the full listings after a change do not count (the next change would wait)."""
    config = make_config(tmp_path, node, service)
    store = await StateStore.open(config.state_path)
    engine = SyncEngine(config, store)
    try:
        await engine.cycle()
        assert engine.look_seconds == 0.0, "no probe yet"
        await engine.cycle()
        assert engine.look_seconds > 0.0
    finally:
        await engine.close()
        await store.close()
    assert node_wait(30.0, engine.look_seconds) == 30.0, "a small pinset: the interval"
    assert node_wait(30.0, 1.5) == 60.0
