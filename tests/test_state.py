"""`StateStore` on real SQLite files, its durability across hard kills, and `read_status`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pinsyncd import clock
from pinsyncd.model import Origin, RemotePin, RemoteStatus, ServiceState
from pinsyncd.status import render_table
from pinsyncd.store import MIGRATIONS, SCHEMA_VERSION, StateDamaged, StateError, StateStore
from pinsyncd.store.readonly import read_status
from tests import loopback_guard

REPO = Path(__file__).resolve().parents[1]
TABLES = {"local_pins", "local_gone", "remote_pins", "services", "meta", "restore_items"}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    state = await StateStore.open(tmp_path / "state.db")
    yield state
    await state.close()


@contextlib.contextmanager
def plain(path: Path) -> Iterator[sqlite3.Connection]:
    """A second, independent connection to the file (as `pinsyncd status` has)."""
    db = sqlite3.connect(path)
    try:
        yield db
    finally:
        db.close()


def pragma(path: Path, name: str) -> object:
    with plain(path) as db:
        return db.execute(f"PRAGMA {name}").fetchone()[0]


def tables(path: Path) -> set[str]:
    with plain(path) as db:
        rows = db.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
    return {name for (name,) in rows}


def wal_size(path: Path) -> int:
    """The size of the file's write-ahead log (0 when there is none)."""
    wal = Path(f"{path}-wal")
    return wal.stat().st_size if wal.exists() else 0


def pin(cid: str, status: RemoteStatus = RemoteStatus.PINNED, **fields: object) -> RemotePin:
    fields.setdefault("updated", 1_700_000_000.0)
    return RemotePin("svc", cid, status, **fields)  # type: ignore[arg-type]


# --- opening ----------------------------------------------------------------------------------


async def test_open_creates_the_file_and_its_parent_directories(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "state.db"
    store = await StateStore.open(path)
    try:
        assert path.is_file()
        assert store.path == path
        assert pragma(path, "journal_mode") == "wal"
        assert pragma(path, "user_version") == SCHEMA_VERSION
        assert tables(path) >= TABLES
    finally:
        await store.close()


async def test_reopening_keeps_the_data_and_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = await StateStore.open(path)
    await store.save([pin("a")])
    await store.set_meta("k", "v")
    await store.close()
    store = await StateStore.open(path)
    try:
        assert list(await store.remote_pins("svc")) == ["a"]
        assert await store.get_meta("k") == "v"
        assert pragma(path, "user_version") == SCHEMA_VERSION
    finally:
        await store.close()


async def test_close_twice_is_safe(tmp_path: Path) -> None:
    store = await StateStore.open(tmp_path / "state.db")
    await store.close()
    await store.close()


async def test_a_directory_in_the_way_is_a_state_error(tmp_path: Path) -> None:
    (tmp_path / "state.db").mkdir()
    before = set(threading.enumerate())
    with pytest.raises(StateError, match="cannot open"):
        await StateStore.open(tmp_path / "state.db")
    # aiosqlite stops the worker thread of a failed connect without waiting for it, and the
    # thread then reports back to this loop: let it finish before the loop is closed.
    for thread in set(threading.enumerate()) - before:
        await asyncio.to_thread(thread.join, 10)
        assert not thread.is_alive()
    await asyncio.sleep(0)


# --- remote pins ------------------------------------------------------------------------------

FULL = {
    "requestid": "req-0001",
    "created": "2024-05-01T12:00:00.123000+00:00",
    "name": "photo 'quoted' \"double\" ü 🍕",
    "attempts": 7,
    "next_attempt": 1_700_000_123.456789,
    "last_error": "HTTP 500: oops; DROP TABLE remote_pins",
    "details": "status details",
    "updated": 1_700_000_001.5,
}


@pytest.mark.parametrize("origin", list(Origin))
@pytest.mark.parametrize("status", list(RemoteStatus))
async def test_every_field_round_trips(
    store: StateStore, status: RemoteStatus, origin: Origin
) -> None:
    full = RemotePin("svc", "bafyfull", status, origin=origin, **FULL)  # type: ignore[arg-type]
    bare = RemotePin("svc", "bafybare", status, origin=origin, updated=12.25)
    await store.save([full, bare])
    assert await store.remote_pins("svc") == {"bafyfull": full, "bafybare": bare}


async def test_an_unset_updated_time_is_stored_as_now(store: StateStore) -> None:
    """ "Now" is pinsyncd's (`clock.now()`: the wall clock at start, moved on by the boot
    clock), which drifts from `time.time()` by however much NTP has slewed since."""
    before = clock.now()
    await store.save([RemotePin("svc", "a", RemoteStatus.INTENT)])
    after = clock.now()
    (row,) = (await store.remote_pins("svc")).values()
    assert before <= row.updated <= after


async def test_rows_are_per_service(store: StateStore) -> None:
    a = RemotePin("one", "cid", RemoteStatus.PINNED, requestid="r1", updated=1.0)
    b = RemotePin("two", "cid", RemoteStatus.FAILED, requestid="r2", updated=2.0)
    await store.save([a, b])
    assert await store.remote_pins("one") == {"cid": a}
    assert await store.remote_pins("two") == {"cid": b}
    assert await store.remote_pins("three") == {}


async def test_save_replaces_whole_rows(store: StateStore) -> None:
    first = pin("a", RemoteStatus.FAILED, **{**FULL, "updated": 5.0})
    await store.save([first])
    second = pin("a", RemoteStatus.INTENT, attempts=8, updated=6.0)
    await store.save([second])
    # INSERT OR REPLACE: the old requestid, name, errors... are not merged in
    assert await store.remote_pins("svc") == {"a": second}
    # within one batch, the last row for a key wins
    third, fourth = pin("a", RemoteStatus.QUEUED, requestid="x"), pin("a", RemoteStatus.PINNED)
    await store.save([third, fourth])
    assert await store.remote_pins("svc") == {"a": fourth}


async def test_save_accepts_any_iterable_and_an_empty_one(store: StateStore) -> None:
    await store.save([])
    await store.save(pin(f"c{i}") for i in range(3))
    assert sorted(await store.remote_pins("svc")) == ["c0", "c1", "c2"]


async def test_forget_removes_only_the_given_service_and_cids(store: StateStore) -> None:
    await store.save([pin("a"), pin("b"), pin("c"), RemotePin("other", "a", RemoteStatus.PINNED)])
    await store.forget("svc", [])
    await store.forget("svc", iter(["a", "c", "not-there"]))
    assert list(await store.remote_pins("svc")) == ["b"]
    assert list(await store.remote_pins("other")) == ["a"]


# --- the local pinset -------------------------------------------------------------------------


async def test_replace_local_pins_reports_the_difference(store: StateStore) -> None:
    assert await store.local_pins() == {}
    assert await store.replace_local_pins({"a": "A", "b": "", "c": "C"}) == (3, 0, 0)
    assert await store.local_pins() == {"a": "A", "b": "", "c": "C"}
    # d added, a removed, b and c renamed
    assert await store.replace_local_pins({"b": "B", "c": "", "d": "D"}) == (1, 1, 2)
    assert await store.local_pins() == {"b": "B", "c": "", "d": "D"}
    assert await store.replace_local_pins({}) == (0, 3, 0)
    assert await store.local_pins() == {}


listings = st.lists(
    st.dictionaries(
        st.sampled_from([f"bafy{i}" for i in range(12)]),
        st.sampled_from(["", "a", "b", "ü 'x'"]),
        max_size=12,
    ),
    min_size=1,
    max_size=5,
)


@settings(max_examples=30, deadline=None)
@given(listings)
def test_replace_local_pins_follows_any_sequence_of_listings(
    sequence: list[dict[str, str]],
) -> None:
    async def run(path: Path) -> None:
        store = await StateStore.open(path)
        try:
            known: dict[str, str] = {}
            for pins in sequence:
                added = len(pins.keys() - known.keys())
                removed = len(known.keys() - pins.keys())
                renamed = sum(
                    1 for cid, name in pins.items() if cid in known and known[cid] != name
                )
                assert await store.replace_local_pins(pins) == (added, removed, renamed)
                assert await store.local_pins() == pins
                known = pins
        finally:
            await store.close()

    with tempfile.TemporaryDirectory() as directory:
        asyncio.run(run(Path(directory) / "state.db"))


async def test_an_unchanged_pinset_writes_nothing(store: StateStore) -> None:
    pins = {f"bafy{i}": f"name {i}" for i in range(500)}
    assert await store.replace_local_pins(pins) == (500, 0, 0)
    with plain(store.path) as other:

        def data_version() -> int:  # changes when another connection commits a change
            return other.execute("PRAGMA data_version").fetchone()[0]

        version, wal_before = data_version(), wal_size(store.path)
        for _ in range(3):
            assert await store.replace_local_pins(dict(reversed(pins.items()))) == (0, 0, 0)
        assert data_version() == version
        assert wal_size(store.path) == wal_before
        # and the control: a real change is seen by the other connection
        assert await store.replace_local_pins({**pins, "bafynew": ""}) == (1, 0, 0)
        assert data_version() != version


# --- services, meta, counts -------------------------------------------------------------------


async def test_service_state_defaults_and_round_trip(store: StateStore) -> None:
    assert await store.service_state("svc") == ServiceState("svc")
    default = await store.service_state("svc")
    assert not default.adopted
    assert default.paused_until == 0.0
    assert default.pause_reason is default.last_cycle is default.last_error is None
    state = ServiceState("svc", True, 1_700_000_500.25, "paused: token refused", 1_700.5, "boom")
    await store.save_service_state(state)
    assert await store.service_state("svc") == state
    assert await store.service_state("other") == ServiceState("other")
    cleared = ServiceState("svc", adopted=True)
    await store.save_service_state(cleared)
    assert await store.service_state("svc") == cleared


async def test_meta_get_and_set(store: StateStore) -> None:
    assert await store.get_meta("node_peer_id") is None
    await store.set_meta("node_peer_id", "12D3KooW")
    await store.set_meta("last_cycle", "1700000000.5")
    await store.set_meta("node_peer_id", "12D3KooX ü")
    assert await store.get_meta("node_peer_id") == "12D3KooX ü"
    assert await store.get_meta("last_cycle") == "1700000000.5"


async def populate(store: StateStore) -> None:
    """Local a..e; on `svc`: a pinned, b error, c intent, f (not local) queued, g pinning,
    h failed; on `other`: d pinned."""
    await store.replace_local_pins({c: "" for c in "abcde"})
    await store.save(
        [
            pin("a", RemoteStatus.PINNED, requestid="ra"),
            pin("b", RemoteStatus.ERROR, next_attempt=9e9),
            pin("c", RemoteStatus.INTENT),
            pin("f", RemoteStatus.QUEUED, requestid="rf"),
            pin("g", RemoteStatus.PINNING, requestid="rg"),
            pin("h", RemoteStatus.FAILED, requestid="rh"),
            RemotePin("other", "d", RemoteStatus.PINNED, requestid="rd"),
        ]
    )


async def test_counts_by_status_and_unsent(store: StateStore) -> None:
    assert await store.counts("svc") == {"unsent": 0}
    await populate(store)
    assert await store.counts("svc") == {
        "pinned": 1,
        "error": 1,
        "intent": 1,
        "queued": 1,
        "pinning": 1,
        "failed": 1,
        "unsent": 3,  # b (its add never got there), d and e (nothing on svc)
    }
    assert await store.counts("other") == {"pinned": 1, "unsent": 4}
    assert await store.counts("nobody") == {"unsent": 5}


# --- schema versions and broken files ---------------------------------------------------------


async def test_a_file_from_a_newer_pinsyncd_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with plain(path) as db:
        db.execute("CREATE TABLE future (x)")
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
        db.commit()
    with pytest.raises(StateError, match="newer"):
        await StateStore.open(path)
    assert pragma(path, "user_version") == SCHEMA_VERSION + 1
    assert tables(path) == {"future"}


@pytest.mark.parametrize("content", ["empty-database", "zero-bytes"])
async def test_a_file_at_version_0_is_migrated(tmp_path: Path, content: str) -> None:
    path = tmp_path / "state.db"
    if content == "zero-bytes":
        path.write_bytes(b"")
    else:
        with plain(path) as db:
            db.execute("CREATE TABLE scratch (x)")
            db.execute("DROP TABLE scratch")
            db.commit()
        assert path.stat().st_size > 0
        assert tables(path) == set()
    assert pragma(path, "user_version") == 0
    store = await StateStore.open(path)
    try:
        assert pragma(path, "user_version") == SCHEMA_VERSION
        assert tables(path) == TABLES
        await store.save([pin("a")])
        assert list(await store.remote_pins("svc")) == ["a"]
    finally:
        await store.close()


def _random_bytes(size: int) -> bytes:
    data = random.Random(20240501).randbytes(size)
    assert not data.startswith(b"SQLite format 3\0")
    return data


@pytest.mark.parametrize("size", [100, 4096, 65536])
async def test_a_file_of_random_bytes_is_a_state_error(tmp_path: Path, size: int) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(_random_bytes(size))
    with pytest.raises(StateDamaged, match="is damaged"):
        await StateStore.open(path)
    assert path.read_bytes() == _random_bytes(size)  # nothing was written over it


async def test_a_truncated_file_is_a_state_error(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = await StateStore.open(path)
    await store.replace_local_pins({f"bafy{i:05d}" * 4: "n" * 50 for i in range(3000)})
    await store.close()
    data = path.read_bytes()
    assert wal_size(path) == 0  # all of it is in the main file
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(StateError):
        await StateStore.open(path)


def _sqlite_file_with_a_meta_table(path: Path) -> None:
    with plain(path) as db:
        db.execute("CREATE TABLE meta (something TEXT)")  # another program's database
        db.commit()


async def test_a_failed_migration_is_rolled_back(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    _sqlite_file_with_a_meta_table(path)
    with pytest.raises((StateError, sqlite3.Error)):
        await StateStore.open(path)
    assert pragma(path, "user_version") == 0
    assert tables(path) == {"meta"}  # no half-made schema


async def test_a_failed_migration_is_a_state_error(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    _sqlite_file_with_a_meta_table(path)
    with pytest.raises(StateError):
        await StateStore.open(path)


# --- concurrency ------------------------------------------------------------------------------


async def test_two_stores_on_one_file_read_while_the_other_writes(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    writer = await StateStore.open(path)
    reader = await StateStore.open(path)
    try:
        done = asyncio.Event()
        seen: list[int] = []

        async def write() -> None:
            for batch in range(30):
                await writer.save(pin(f"b{batch:02d}-{i:03d}", attempts=batch) for i in range(100))
                await asyncio.sleep(0)
            done.set()

        async def read() -> None:
            while not done.is_set():
                rows = await reader.remote_pins("svc")
                assert len(rows) % 100 == 0  # only whole, committed batches are visible
                seen.append(len(rows))
                await asyncio.sleep(0)

        await asyncio.gather(write(), read())
        assert seen and seen == sorted(seen)
        assert len(await reader.remote_pins("svc")) == 3000
        # and the second store can write too; each sees the other's commits
        await reader.set_meta("from", "reader")
        await asyncio.gather(
            writer.set_meta("w", "1"), reader.save([pin("r")]), writer.save([pin("w")])
        )
        assert await writer.get_meta("from") == "reader"
        assert {"r", "w"} <= set(await writer.remote_pins("svc"))
    finally:
        await reader.close()
        await writer.close()


async def test_concurrent_transactions_on_one_store_take_turns(store: StateStore) -> None:
    await asyncio.gather(
        *(store.save([pin(f"t{t}-{i}", attempts=t) for i in range(50)]) for t in range(10)),
        store.replace_local_pins({f"l{i}": "" for i in range(100)}),
        *(store.set_meta(f"k{i}", str(i)) for i in range(10)),
    )
    assert len(await store.remote_pins("svc")) == 500
    assert len(await store.local_pins()) == 100
    assert await store.get_meta("k9") == "9"


async def test_a_save_cancelled_while_starting_leaves_the_store_usable(
    store: StateStore,
) -> None:
    task = asyncio.create_task(store.save([pin("cancelled", RemoteStatus.INTENT)]))
    await asyncio.sleep(0)  # the task is now awaiting its BEGIN IMMEDIATE
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await store.save([pin("after", RemoteStatus.INTENT)])
    assert "after" in await store.remote_pins("svc")
    assert "after" in read_remote_plain(store.path)  # committed, not just visible


def read_remote_plain(path: Path) -> set[str]:
    with plain(path) as db:
        return {cid for (cid,) in db.execute("SELECT cid FROM remote_pins")}


# --- durability across hard kills -------------------------------------------------------------

SAVE_ONE_AND_DIE = """
import asyncio, os, signal, sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from pinsyncd.model import RemotePin, RemoteStatus
from pinsyncd.store import StateStore

async def main() -> None:
    store = await StateStore.open(Path(sys.argv[1]))
    await store.save([RemotePin("svc", "bafy-intent", RemoteStatus.INTENT, name="n",
                                attempts=1, next_attempt=5.0, updated=1234.5)])
    await store.set_meta("k", "v")
    {die}

asyncio.run(main())
"""

SAVE_BATCHES_FOREVER = """
import asyncio, sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from pinsyncd.model import RemotePin, RemoteStatus
from pinsyncd.store import StateStore

async def main() -> None:
    store = await StateStore.open(Path(sys.argv[1]))
    batch = 0
    while True:
        await store.save(
            RemotePin("svc", f"b{batch:06d}-{i:03d}", RemoteStatus.INTENT, attempts=batch,
                      updated=1.0)
            for i in range(100)
        )
        print(batch, flush=True)
        batch += 1

asyncio.run(main())
"""


async def python(code: str, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        *args,
        env={**os.environ, "PYTHONPATH": loopback_guard.PYTHONPATH},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


def integrity(path: Path) -> str:
    with plain(path) as db:
        return db.execute("PRAGMA integrity_check").fetchone()[0]


@pytest.mark.parametrize(
    ("die", "returncode"),
    [("os.kill(os.getpid(), signal.SIGKILL)", -9), ("os._exit(0)", 0)],
)
async def test_a_committed_intent_survives_a_hard_kill(
    tmp_path: Path, die: str, returncode: int
) -> None:
    path = tmp_path / "state.db"
    process = await python(SAVE_ONE_AND_DIE.format(die=die), str(path))
    async with asyncio.timeout(30):
        _, stderr = await process.communicate()
    assert process.returncode == returncode, stderr.decode()
    assert wal_size(path) > 0  # never closed: the rows are in the WAL
    store = await StateStore.open(path)
    try:
        assert await store.remote_pins("svc") == {
            "bafy-intent": RemotePin(
                "svc",
                "bafy-intent",
                RemoteStatus.INTENT,
                name="n",
                attempts=1,
                next_attempt=5.0,
                updated=1234.5,
            )
        }
        assert await store.get_meta("k") == "v"
    finally:
        await store.close()
    assert integrity(path) == "ok"


async def test_a_kill_during_saves_loses_no_acknowledged_batch_and_splits_none(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    process = await python(SAVE_BATCHES_FOREVER, str(path))
    assert process.stdout is not None
    acknowledged = -1
    try:
        async with asyncio.timeout(30):
            while acknowledged < 40:
                line = await process.stdout.readline()
                if not line:
                    _, stderr = await process.communicate()
                    pytest.fail(f"the writer died early: {stderr.decode()}")
                acknowledged = int(line)
    finally:
        process.kill()  # SIGKILL, from outside, while it is saving
        rest, _ = await process.communicate()
    assert process.returncode == -9
    for line in rest.split():
        acknowledged = int(line)
    assert integrity(path) == "ok"
    store = await StateStore.open(path)
    try:
        rows = await store.remote_pins("svc")
    finally:
        await store.close()
    sizes = Counter(row.attempts for row in rows.values())
    assert all(size == 100 for size in sizes.values()), sizes  # every batch whole, or absent
    batches = sorted(sizes)
    assert batches == list(range(len(batches)))  # no gaps
    # everything acknowledged is there; at most one more (committed, not yet printed)
    assert acknowledged + 1 <= len(batches) <= acknowledged + 2
    for cid, row in rows.items():
        assert cid.startswith(f"b{row.attempts:06d}-")
        assert row.status is RemoteStatus.INTENT


# --- pinsyncd status --------------------------------------------------------------------------

EMPTY = {
    "pinned": 0,
    "pinning": 0,
    "queued": 0,
    "failed": 0,
    "unsent": 0,
    "sending": 0,
    "failed_for_good": 0,
    "stuck": 0,
    "last_cycle": None,
    "last_error": None,
    "paused": None,
    "paused_until": None,
    "down_since": None,
    "skipped_records": 0,
    "skipped_reason": None,
    "replace_noop": False,
    "delegates_unreachable": None,
}


def nothing_known(services: int) -> dict[str, object]:
    return {
        "local": {"pins": 0, "selected": 0, "last_cycle": None},
        "replication": {"replicas": services, "services": services, "kinds": {}},
        "stuck_after": 3600.0,
        "drill": None,
    }


def test_status_of_a_missing_file_is_all_zeros_and_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "state.db"
    assert read_status(path, ["one", "two"]) == {
        "services": {"one": EMPTY, "two": EMPTY},
        **nothing_known(2),
    }
    assert not path.exists()
    assert not path.parent.exists()


def test_status_of_a_file_not_yet_migrated_is_all_zeros(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"")
    assert read_status(path, ["one"]) == {"services": {"one": EMPTY}, **nothing_known(1)}


async def test_status_of_a_populated_store(store: StateStore) -> None:
    await populate(store)
    await store.set_meta("last_cycle", "1700000000.0")
    await store.save_service_state(
        ServiceState("svc", adopted=True, last_cycle=1_700_000_060.0, last_error="HTTP 502")
    )
    status = read_status(store.path, ["svc", "other", "nobody"])  # the store stays open
    assert status["local"] == {
        "pins": 5,
        "selected": 5,
        "last_cycle": "2023-11-14T22:13:20+00:00",
        "skipped": {"lines": 0, "unparsable": 0, "spellings": 0},
    }
    # one CID pinned on one service ("svc" and "other" pin different ones): all below 3 of 3
    assert status["replication"] == {
        "replicas": 3,
        "services": 3,
        "kinds": {"recursive": {"cids": 5, "below": 5, "none": 3}},
    }
    assert status["services"]["svc"] == {
        **EMPTY,
        "pinned": 1,
        "pinning": 1,
        "queued": 1,
        "failed": 1,
        "unsent": 3,
        "sending": 1,
        "last_cycle": "2023-11-14T22:14:20+00:00",
        "last_error": "HTTP 502",
    }
    assert status["services"]["other"] == {**EMPTY, "pinned": 1, "unsent": 4}
    assert status["services"]["nobody"] == {**EMPTY, "unsent": 5}


async def test_status_shows_a_pause_only_while_it_lasts(store: StateStore) -> None:
    reason = "paused: the token from $TOKEN was refused"
    await store.save_service_state(
        ServiceState("svc", paused_until=time.time() + 3600, pause_reason=reason)
    )
    paused = read_status(store.path, ["svc"])["services"]["svc"]
    assert paused["paused"] == reason
    assert paused["paused_until"] is not None and paused["paused_until"].endswith("+00:00")
    await store.save_service_state(
        ServiceState("svc", paused_until=time.time() - 1, pause_reason=reason)
    )
    expired = read_status(store.path, ["svc"])["services"]["svc"]
    assert expired["paused"] is None and expired["paused_until"] is None
    await store.save_service_state(ServiceState("svc"))
    assert read_status(store.path, ["svc"])["services"]["svc"]["paused"] is None


async def test_status_sees_only_committed_rows(store: StateStore) -> None:
    await store.save([pin("a", RemoteStatus.INTENT)])
    assert read_status(store.path, ["svc"])["services"]["svc"]["sending"] == 1
    await store.save([pin("a", RemoteStatus.QUEUED, requestid="r")])
    counts = read_status(store.path, ["svc"])["services"]["svc"]
    assert (counts["sending"], counts["queued"]) == (0, 1)


def test_status_of_a_corrupt_file_is_a_state_error(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(_random_bytes(4096))
    with pytest.raises(StateError):
        read_status(path, ["svc"])


async def test_status_flags_requests_stuck_in_queued_or_pinning(store: StateStore) -> None:
    old = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    new = datetime.now(UTC).isoformat()
    await store.save(
        [
            pin("a", RemoteStatus.QUEUED, requestid="ra", created=old),
            pin("b", RemoteStatus.PINNING, requestid="rb", created=old),
            pin("c", RemoteStatus.QUEUED, requestid="rc", created=new),
            pin("d", RemoteStatus.PINNED, requestid="rd", created=old),
        ]
    )
    status = read_status(store.path, ["svc"], stuck_after=3600.0)
    assert status["services"]["svc"]["stuck"] == 2
    table = render_table(status)
    assert "2 queued or pinning for over 1h" in table
    assert "must be online and reachable" in table
    assert read_status(store.path, ["svc"], stuck_after=3 * 3600.0)["services"]["svc"]["stuck"] == 0


async def test_gone_cids_are_noted_forgotten_when_back_or_no_longer_held(
    store: StateStore,
) -> None:
    await store.replace_local_pins({"a": "", "b": "", "c": ""})
    await store.save([pin("a", requestid="ra"), pin("b", requestid="rb")])
    before = clock.now()  # the store notes when on pinsyncd's clock
    await store.replace_local_pins({"c": ""})
    assert sorted(await store.gone_since("svc", clock.now())) == ["a", "b"]
    assert await store.gone_since("svc", before - 1) == [], "not gone long enough"
    await store.replace_local_pins({"a": "", "c": ""})  # a is back
    assert await store.gone_since("svc", clock.now()) == ["b"]
    await store.forget("svc", ["b"])
    db = sqlite3.connect(store.path)
    try:
        assert db.execute("SELECT cid FROM local_gone").fetchall() == []
    finally:
        db.close()


async def test_kinds_and_selection_are_stored_and_read_back(store: StateStore) -> None:
    await store.replace_local_pins(
        {"a": "x", "b": "y", "r": "policy/p/mfs"}, kinds={"b": "direct", "r": "mfs"}, excluded={"a"}
    )

    def stored() -> list[tuple[str, str, str, int]]:
        db = sqlite3.connect(store.path)
        try:
            return db.execute("SELECT cid, name, kind, selected FROM local_pins").fetchall()
        finally:
            db.close()

    assert sorted(stored()) == [
        ("a", "x", "recursive", 0),
        ("b", "y", "direct", 1),
        ("r", "policy/p/mfs", "mfs", 1),
    ]
    assert await store.local_counts() == (3, 2)
    assert await store.mfs_root() == "r"
    assert await store.counts("svc") == {"unsent": 2}, "an excluded pin is not waiting to be sent"
    assert await store.replace_local_pins({"a": "x", "b": "y", "r": "policy/p/mfs"}) == (0, 0, 0)
    assert await store.local_counts() == (3, 3), "the new listing's selection counts"
    assert await store.mfs_root() is None


def _version_3_file(path: Path) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        for script in MIGRATIONS[:3]:
            for statement in (s for s in script.split(";") if s.strip()):
                db.execute(statement)
        db.execute("PRAGMA user_version=3")
    finally:
        db.close()


async def test_a_version_3_file_with_data_is_brought_to_version_4(tmp_path: Path) -> None:
    """v4 adds pin kinds and selection, and notes as gone the CIDs that services hold but the
    node no longer lists (so `unpin: mirror` starts their grace period at the upgrade)."""
    path = tmp_path / "state.db"
    _version_3_file(path)
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("INSERT INTO local_pins VALUES ('a', 'photo')")
        for cid in ("a", "b"):
            db.execute(
                "INSERT INTO remote_pins (service, cid, status, requestid, updated) "
                f"VALUES ('svc', '{cid}', 'pinned', 'r{cid}', 1.0)"
            )
    finally:
        db.close()
    before = time.time()
    store = await StateStore.open(path)
    try:
        assert pragma(path, "user_version") == SCHEMA_VERSION == 7
        assert await store.local_counts() == (1, 1)
        assert await store.gone_since("svc", time.time() + 1) == ["b"]
        assert await store.gone_since("svc", before - 2) == []
        assert (await store.service_state("svc")).down_since == 0.0
    finally:
        await store.close()


def _columns(path: Path, table: str) -> set[str]:
    with plain(path) as db:
        return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


async def test_the_migrations_are_one_transaction(tmp_path: Path) -> None:
    """A file three versions behind is brought up to date all at once or not at all: `status`
    beside a daemon that is migrating never meets a schema between two versions (it once read
    `services` before its `unsent` column was added), and a failure in the last step leaves
    the file as it was."""
    path = tmp_path / "state.db"
    _version_3_file(path)
    with pytest.raises(StateError, match="schema version 3, from an older pinsyncd"):
        read_status(path, ["svc"])
    with plain(path) as db:  # makes the last migration (v6: remote_pins.stamp) fail
        db.execute("ALTER TABLE remote_pins ADD COLUMN stamp TEXT")
        db.commit()
    with pytest.raises(StateError, match="schema version 6"):
        await StateStore.open(path)
    assert pragma(path, "user_version") == 3
    assert "down_since" not in _columns(path, "services"), "v4 was rolled back with v6"
    assert "local_gone" not in tables(path)

    fresh = tmp_path / "fresh.db"
    _version_3_file(fresh)
    store = await StateStore.open(fresh)
    try:
        assert pragma(fresh, "user_version") == SCHEMA_VERSION
        assert read_status(fresh, ["svc"])["services"]["svc"]["unsent"] == 0
    finally:
        await store.close()


# --- status tracking and adoption staging -------------------------------------------------------


async def test_tracking_hands_out_pending_requests_once_and_counts_what_is_left(
    store: StateStore,
) -> None:
    old, fresh = 1_700_000_000.0, 1_800_000_000.0
    rows = [
        pin(f"q{i}", RemoteStatus.QUEUED, requestid=f"r{i}", created=f"2024-01-0{i + 1}")
        for i in range(5)
    ]
    rows += [
        pin("p", RemoteStatus.PINNING, requestid="rp", created="2024-02-01"),
        pin("done", RemoteStatus.PINNED, requestid="rd"),
        pin("new", RemoteStatus.QUEUED, requestid="rn", updated=fresh),  # made this cycle
        RemotePin("else", "other", RemoteStatus.QUEUED, requestid="rx", updated=old),
    ]
    await store.save(rows)
    async with store.tracking("svc", before=fresh - 1) as tracked:
        assert tracked.remaining() == 6
        assert await tracked.oldest_created() == "2024-01-01"
        taken = await tracked.take(["r0", "rp", "rd", "rn", "rx", "nope"])
        assert set(taken) == {"r0", "rp"} and taken["rp"].cid == "p"
        assert tracked.remaining() == 4
        assert await tracked.take(["r0"]) == {}, "each request is handed out once"
        assert {row.cid for row in await tracked.rest(10)} == {"q1", "q2", "q3", "q4"}
        assert len(await tracked.rest(2)) == 2
    async with store.tracking("svc", before=fresh - 1) as again:
        assert again.remaining() == 6, "a new round starts from the state again"


async def test_reselect_applies_a_new_selection_page_by_page(store: StateStore) -> None:
    """include/exclude changed while the node is offline: the stored listing is selected
    again, more than one page of it, without holding a statement open across awaits."""
    pins = {f"bafy{i:06d}": ("photos/" if i % 3 == 0 else "misc/") + str(i) for i in range(12_000)}
    await store.replace_local_pins(pins)
    changed = await store.reselect(lambda _cid, name, _kind: name.startswith("photos/"))
    assert changed == 8000 and await store.local_counts() == (12_000, 4000)
    assert await store.reselect(lambda _cid, name, _kind: name.startswith("photos/")) == 0


async def test_a_cid_in_two_listings_keeps_its_first_entry(tmp_path: Path) -> None:
    """Two type listings that both name a CID (ipfs-cluster's IPFS proxy lists every pin
    under each type): the first entry is kept, and listing the same again writes nothing."""
    store = await StateStore.open(tmp_path / "state.db")
    try:
        a, b, c = (f"bafkrei{'abc'[i] * 52}" for i in range(3))

        async def listings() -> AsyncIterator[list[tuple[str, str, str, int]]]:
            yield [(a, "first", "recursive", 1), (b, "", "recursive", 1)]
            yield [(a, "second", "direct", 1), (b, "", "recursive", 1), (c, "c", "direct", 1)]

        assert await store.replace_local_listing(listings(), listed_twice=True) == (3, 0, 0)
        assert await store.replace_local_listing(listings(), listed_twice=True) == (0, 0, 0)
        assert await store.local_pins() == {a: "first", b: "", c: "c"}
        with closing(sqlite3.connect(tmp_path / "state.db")) as db, db:
            kinds = dict(db.execute("SELECT cid, kind FROM local_pins").fetchall())
        assert kinds == {a: "recursive", b: "recursive", c: "direct"}
    finally:
        await store.close()


async def test_a_long_name_already_sent_clipped_is_not_a_rename(tmp_path: Path) -> None:
    """A local name over 255 bytes goes to the service clipped. Before, the state compared
    the stored (clipped) name with the whole local name, so such a pin was loaded as a rename
    candidate every cycle (and the planner, which clips, then did nothing with it)."""
    from pinsyncd.spec_limits import clip_name

    store = await StateStore.open(tmp_path / "state.db")
    try:
        long, short = "é" * 200, "renamed"  # 400 bytes: sent as 127 characters
        await store.replace_local_pins({"bafkreilong": long, "bafkreishort": short})
        await store.save(
            [
                RemotePin("s", "bafkreilong", RemoteStatus.PINNED, "r1", name=clip_name(long)),
                RemotePin("s", "bafkreishort", RemoteStatus.PINNED, "r2", name="old name"),
            ]
        )
        wanted, _, _, _ = await store.plan_view("s", renamed=True)
        assert wanted == {"bafkreishort": short}, "only the pin whose name really changed"
    finally:
        await store.close()
