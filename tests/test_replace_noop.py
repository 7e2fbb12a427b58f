"""A service whose replace does nothing (Helia's Pinning Service API server answers
`POST /pins/{requestid}` by the request's own CID with 202, the same requestid and the old
status). pinsyncd falls back to a delete, then an add, never holding two requests for a CID,
and remembers per service that its replace is a no-op."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest

from pinsyncd.model import RemoteStatus
from pinsyncd.ownership import meta_for
from pinsyncd.policy import Directives
from pinsyncd.status import render_table
from pinsyncd.store import StateStore
from pinsyncd.store.readonly import read_status
from tests.fake_psa import FakePinningService
from tests.test_executor import ONLINE, TOKEN, executor_for, local_pins

OURS = meta_for(ONLINE.peer_id, "")  # this device's own request


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    state = await StateStore.open(tmp_path / "state.db")
    yield state
    await state.close()


def replaces(svc: FakePinningService) -> int:
    return sum(1 for r in svc.requests if r.method == "POST" and r.path != "/pins")


async def fail_now(svc: FakePinningService, store: StateStore, cids: Iterable[str]) -> None:
    """The service marks each CID's request `failed`; pinsyncd learns it, and its backoff
    is over."""
    for cid in cids:
        (pin,) = svc.pins_for_cid(cid)
        svc.set_status(pin["requestid"], "failed")
    executor = executor_for(svc, store)
    async with executor.client:
        await executor.sync(Directives(), ONLINE, send=False)
    rows = await store.remote_pins("spec")
    assert {rows[cid].status for cid in cids} == {RemoteStatus.FAILED}
    await store.save([rows[cid].evolve(next_attempt=0.0) for cid in cids])
    svc.requests.clear()


async def test_a_replace_that_does_nothing_becomes_a_delete_then_an_add(
    store: StateStore, tmp_path: Path
) -> None:
    """4 of 6 pins fail. Before: each replace came back unchanged and still `failed`, was sent
    again every cycle, and ended failed for good. Now each is deleted, then added once the
    delete is answered; the next failures (and those after a restart) skip the replace."""
    local = local_pins(6)
    failing = sorted(local)[:4]
    async with FakePinningService(token=TOKEN, replace_noop=True) as svc:
        first = executor_for(svc, store)
        async with first.client:
            await first.sync(local, ONLINE)
        await fail_now(svc, store, failing)
        async with first.client:
            report = await first.sync(Directives(), ONLINE)
        counts = svc.request_counts()
        assert 1 <= replaces(svc) <= 4, "the replaces sent before the no-op was seen"
        assert counts["delete"] == 4 and counts["add"] == 4
        assert report.replaced == 4 and report.errors == 0
        rows = await store.remote_pins("spec")
        for cid in local:
            (live,) = svc.pins_for_cid(cid)
            assert rows[cid].requestid == live["requestid"]
            assert rows[cid].status is RemoteStatus.QUEUED
        assert all(svc.most_at_once[cid] == 1 for cid in local), "never two requests at once"

        await fail_now(svc, store, failing)
        async with first.client:
            await first.sync(Directives(), ONLINE)
        counts = svc.request_counts()
        assert replaces(svc) == 0, "learned: no replace is sent any more"
        assert (counts["get"], counts["delete"], counts["add"]) == (4, 4, 4)

        await fail_now(svc, store, failing[:2])
        restarted = executor_for(svc, store)  # a new process: it reads what was learned
        async with restarted.client:
            await restarted.sync(Directives(), ONLINE)
        assert replaces(svc) == 0 and svc.request_counts()["add"] == 2
        assert all(len(svc.pins_for_cid(cid)) == 1 for cid in local)
        assert max(svc.most_at_once.values()) == 1

        more = {**local, **local_pins(3)}  # new pins on such a service are plain adds
        svc.requests.clear()
        async with restarted.client:
            report = await restarted.sync(more, ONLINE)
        assert report.added == 3 and report.errors == 0 and report.error is None
        assert svc.request_counts()["add"] == 3 and replaces(svc) == 0
        assert all(len(svc.pins_for_cid(cid)) == 1 for cid in more)

    status = read_status(tmp_path / "state.db", ["spec"])
    assert status["services"]["spec"]["replace_noop"] is True
    assert "its replace does nothing" in render_table(status)


async def test_a_rename_that_does_nothing_is_not_a_delete(store: StateStore) -> None:
    """With names carried to services, a rename whose replace comes back unchanged is
    remembered, and no rename is sent again: deleting a pinned backup to fix its name is not
    worth it. Nothing is deleted or added."""
    local = local_pins(3)
    renames = Directives(rename=True)
    async with FakePinningService(token=TOKEN, replace_noop=True) as svc:
        executor = executor_for(svc, store, concurrency=1)
        async with executor.client:
            await executor.sync(local, ONLINE)
            for pin in svc.pins:
                svc.set_status(pin["requestid"], "pinned")
            rows = await store.remote_pins("spec")
            await store.save([row.evolve(status=RemoteStatus.PINNED) for row in rows.values()])
            await store.replace_local_pins({cid: f"renamed-{name}" for cid, name in local.items()})
            svc.requests.clear()
            await executor.sync(renames, ONLINE)
            assert replaces(svc) == 1, "the first rename shows the no-op; the others are not sent"
            svc.requests.clear()
            await executor.sync(renames, ONLINE)
        counts = svc.request_counts()
        assert replaces(svc) == 0 and counts["delete"] == 0 and counts["add"] == 0
        assert all(len(svc.pins_for_cid(cid)) == 1 for cid in local)
        rows = await store.remote_pins("spec")
        assert {rows[cid].status for cid in local} == {RemoteStatus.PINNED}
        assert {rows[cid].name for cid in local} == set(local.values()), "as the service has it"


async def test_a_replace_that_works_is_still_one_request(store: StateStore) -> None:
    """On a service whose replace works, a failed pin is still replaced in one request, and
    nothing is remembered."""
    local = local_pins(3)
    async with FakePinningService(token=TOKEN) as svc:
        executor = executor_for(svc, store)
        async with executor.client:
            await executor.sync(local, ONLINE)
        await fail_now(svc, store, list(local))
        async with executor.client:
            await executor.sync(Directives(), ONLINE)
        counts = svc.request_counts()
        assert replaces(svc) == 3 and counts["delete"] == 0 and counts["add"] == 0
        assert await store.get_meta("replace_noop:spec") is None


async def test_a_new_mfs_root_where_no_replace_works_is_a_delete_then_an_add(
    store: StateStore,
) -> None:
    """The MFS root moved on, and the service's replace does nothing whatever the CID: the
    old root's request is deleted, then the new root added; the old root's row goes."""
    old_root, new_root = local_pins(2)
    mfs = Directives(mfs_root=new_root, mfs_name=f"policy/{ONLINE.peer_id}/mfs")
    async with FakePinningService(token=TOKEN, replace_noop="any") as svc:
        old = svc.add_pin(old_root, name=mfs.mfs_name, status="pinned", meta=OURS)
        executor = executor_for(svc, store)
        async with executor.client:
            await executor.sync({old_root: ""}, ONLINE)  # first contact: the old root adopted
            assert (await store.remote_pins("spec"))[old_root].requestid == old["requestid"]
            await store.replace_local_pins({new_root: ""})
            svc.requests.clear()
            report = await executor.sync(mfs, ONLINE)
        counts = svc.request_counts()
        assert (replaces(svc), counts["delete"], counts["add"]) == (1, 1, 1)
        assert report.replaced == 1
        assert svc.pins_for_cid(old_root) == [] and len(svc.pins_for_cid(new_root)) == 1
        rows = await store.remote_pins("spec")
        assert set(rows) == {new_root}, "the old root's row went with its request"
        assert await store.get_meta("replace_noop:spec") is not None
