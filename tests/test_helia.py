"""pinsyncd against the real Helia Pinning Service API server (npm
`@helia/pinning-service-api-server` 1.0.4, peers/helia/server.mjs), with real Kubo nodes. Helia
really fetches the blocks over bitswap, so a pin is `pinned` only once the data moved.

Everything stays on 127.0.0.1: the server binds loopback, Helia's libp2p listens on
/ip4/127.0.0.1/tcp/0 only and its connection gater refuses any other dial, and the Kubo nodes
refuse to dial off loopback (`Swarm.AddrFilters`).

What Helia does that a client meets (see each test): it dials every origin before fetching and
fails the pin at once when one cannot be dialled; a replace by the request's own CID answers
with the same requestid and the old status (pinsyncd deletes, then adds); it stores and echoes
back junk from other clients; a second add of a CID it has pinned stays `queued`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
from multiformats import CID, multihash

from pinsyncd.backoff import RetryPolicy
from pinsyncd.config import Service
from pinsyncd.delegates import DelegateDialer
from pinsyncd.kubo import LocalNode
from pinsyncd.model import RemoteStatus
from pinsyncd.policy import Directives
from pinsyncd.psa import ListingReport, NotFound, Pin, PinningServiceClient, Status, iter_pins
from pinsyncd.store import StateStore
from pinsyncd.sync.context import NodeView
from pinsyncd.sync.service import ServiceExecutor
from pinsyncd.tokens import Secret
from tests.helia_peer import HeliaPinningService, unavailable
from tests.peers import IPFS_BIN, KuboNode

pytestmark = pytest.mark.peers

TOKEN = "helia-token"
SERVICE = "helia"
HeliaFactory = Callable[[], HeliaPinningService]
KuboFactory = Callable[..., KuboNode]


@pytest.fixture
def helia_factory(peers_installed: None, tmp_path: Path) -> Iterator[HeliaFactory]:
    """Start Helia pinning services for one test (stopped at its end); skip the test when
    the Helia peer could not be installed here (`tests.helia_peer.unavailable`)."""
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    started: list[HeliaPinningService] = []

    def start() -> HeliaPinningService:
        service = HeliaPinningService(TOKEN, tmp_path / f"helia-{len(started)}.log")
        started.append(service)
        service.start()
        return service

    yield start
    for service in started:
        service.stop()
    refused = [a for s in started for a in s.refused_dials()]
    assert not refused, f"Helia was asked to dial off loopback: {refused}"


@pytest.fixture
def helia(helia_factory: HeliaFactory) -> HeliaPinningService:
    return helia_factory()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    state = await StateStore.open(tmp_path / "state.db")
    yield state
    await state.close()


# --- helpers ---------------------------------------------------------------------------------


def client_for(helia: HeliaPinningService, timeout: float = 10.0) -> PinningServiceClient:
    return PinningServiceClient(
        SERVICE, helia.url, Secret(TOKEN, "test"), timeout=timeout, read_retries=0
    )


def executor_for(
    helia: HeliaPinningService,
    store: StateStore,
    dialer: DelegateDialer | None = None,
    *,
    concurrency: int = 1,
) -> ServiceExecutor:
    config = Service(SERVICE, helia.url, Secret(TOKEN, "$TOKEN"), concurrency, 10.0)
    client = PinningServiceClient(SERVICE, helia.url, config.token, timeout=10.0)
    return ServiceExecutor(config, client, store, dialer, retry=RetryPolicy(base=0.01, cap=0.05))


async def wait_until(check: Callable[[], Awaitable[bool]], seconds: float, what: str) -> float:
    """Poll `check` until it holds; the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if await check():
            return time.monotonic() - started
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {seconds:.0f}s waiting for: {what}")


async def wait_for_status(
    client: PinningServiceClient, requestid: str, wanted: Status, seconds: float = 30.0
) -> float:
    seen: list[Status] = []

    async def reached() -> bool:
        status = (await client.get_pin(requestid)).status
        if not seen or seen[-1] != status:
            seen.append(status)
        return status == wanted

    try:
        return await wait_until(reached, seconds, f"{requestid} {wanted}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; statuses seen: {[str(s) for s in seen]}") from None


def add_content(node: KuboNode, data: bytes, name: str) -> str:
    """Add `data` to `node` only, pinned recursively under `name`; its CID."""
    cid = node.cli("add", "-Q", "--pin=false", stdin=data)
    node.cli("pin", "add", "--name", name, cid)
    return cid


def addresses(node: KuboNode) -> tuple[str, ...]:
    return tuple(node.rpc("id")["Addresses"])


def peer_id(node: KuboNode) -> str:
    return str(node.rpc("id")["ID"])


def read_from_helia(helia: HeliaPinningService, reader: KuboNode, cid: str) -> bytes:
    """`reader` (a Kubo that never had the data) connects to Helia and reads `cid`: Helia has
    the blocks, since nothing else can serve them."""
    reader.cli("swarm", "connect", *helia.multiaddrs)
    result = subprocess.run(
        [str(IPFS_BIN), "--timeout", "30s", "cat", cid],
        env=reader.env,
        capture_output=True,
        timeout=40,
        check=True,
    )
    return result.stdout


def inline_cid(data: bytes) -> str:
    """A CID whose block is inside the CID itself (identity multihash): Helia pins it at once,
    without the network."""
    return str(CID("base32", 1, "raw", multihash.digest(data, "identity")))


def dead_origins(kubo_factory: KuboFactory) -> tuple[str, ...]:
    """The loopback addresses of a Kubo that is stopped: nothing listens there any more."""
    gone = kubo_factory("gone")
    origins = addresses(gone)
    gone.stop()
    return origins


# --- the data really moves -------------------------------------------------------------------


async def test_a_pin_with_origins_fetches_the_data_from_a_real_kubo(
    helia: HeliaPinningService, kubo_factory: KuboFactory
) -> None:
    """An add by pinsyncd's client with the Kubo's loopback addresses as origins: Helia dials
    them, fetches every block over bitswap and says `pinned`. With the Kubo stopped, a fresh
    Kubo reads the file back from Helia, byte for byte."""
    local = kubo_factory("local")
    data = os.urandom(600_000)  # several 256 KiB chunks: a real DAG, not one block
    cid = add_content(local, data, "big.bin")
    origins = addresses(local)
    assert origins and all(a.startswith("/ip4/127.0.0.1/") for a in origins)
    async with client_for(helia) as client:
        added = await client.add_pin(Pin(cid=cid, name="big.bin", origins=list(origins)))
        assert added.delegates == helia.multiaddrs, "the delegates are Helia's loopback addresses"
        took = await wait_for_status(client, added.requestid, Status.PINNED)
        pinned = await client.get_pin(added.requestid)
    assert pinned.pin.origins == list(origins) and pinned.pin.name == "big.bin"
    print(f"pinned {len(data)} bytes from Kubo in {took:.2f}s")
    local.stop()
    reader = kubo_factory("reader")
    assert read_from_helia(helia, reader, cid) == data


async def test_without_origins_the_delegates_pinsyncd_dials_bring_the_data(
    helia: HeliaPinningService, kubo_factory: KuboFactory, store: StateStore
) -> None:
    """pinsyncd's default sends no loopback origin (`origins: public`). Helia then dials no
    one: the pin waits in `pinning` until pinsyncd has the node dial the delegates Helia
    answered with, and then the data moves."""
    local = kubo_factory("local")
    data = os.urandom(300_000)
    cid = add_content(local, data, "file.bin")
    async with LocalNode(local.api_url) as node:
        dialer = DelegateDialer(node)
        executor = executor_for(helia, store, dialer)
        view = NodeView(online=True, peer_id=peer_id(local), origins=())
        try:
            async with executor.client:
                report = await executor.sync({cid: "file.bin"}, view)
                assert report.added == 1 and report.errors == 0
                await dialer.drain(10)
                connected = {p["Peer"] for p in local.rpc("swarm/peers").get("Peers") or []}
                assert helia.peer_id in connected, "the node dialled Helia's delegate"
                row = (await store.remote_pins(SERVICE))[cid]
                assert row.requestid is not None
                took = await wait_for_status(executor.client, row.requestid, Status.PINNED)
                await executor.sync(Directives(), view, send=False)
        finally:
            await dialer.close()
    assert (await store.remote_pins(SERVICE))[cid].status is RemoteStatus.PINNED
    print(f"pinned through the delegate dial in {took:.2f}s")
    local.stop()
    assert read_from_helia(helia, kubo_factory("reader"), cid) == data


# --- failed pins, and a replace that does nothing --------------------------------------------


async def test_an_unreachable_origin_fails_the_pin_and_pinsyncd_deletes_then_adds(
    helia: HeliaPinningService, kubo_factory: KuboFactory, store: StateStore
) -> None:
    """Helia dials every origin before it fetches, and fails the pin when one cannot be
    dialled: two pins whose origins are a stopped Kubo's addresses fail within a second or so.
    A replace by the same CID then answers 202 with the same requestid, still `failed`.
    pinsyncd notices that, deletes the request and adds the pin again (with the live node's
    origins, so it is pinned), never two requests for a CID at once; it remembers that
    Helia's replace does nothing, so the second failed pin gets no replace at all."""
    local = kubo_factory("local")
    payloads = {f"file-{i}.bin": os.urandom(50_000) for i in range(2)}
    local_pins = {add_content(local, data, name): name for name, data in payloads.items()}
    dead = dead_origins(kubo_factory)
    me = peer_id(local)
    offline_view = NodeView(online=True, peer_id=me, origins=dead)
    live_view = NodeView(online=True, peer_id=me, origins=addresses(local))

    executor = executor_for(helia, store, concurrency=1)
    async with executor.client as client:
        report = await executor.sync(local_pins, offline_view)
        assert report.added == 2 and report.errors == 0
        rows = await store.remote_pins(SERVICE)
        first = {cid: rows[cid].requestid for cid in local_pins}
        for cid, requestid in first.items():
            assert requestid is not None
            took = await wait_for_status(client, requestid, Status.FAILED, seconds=30)
            print(f"{cid}: failed {took:.2f}s after the add (origins: a stopped Kubo)")

        # The quirk itself, by hand: same CID, new origins -> same request, still failed.
        cid, requestid = next(iter(first.items()))
        assert requestid is not None
        async with client_for(helia) as other:
            answer = await other.replace_pin(
                requestid, Pin(cid=cid, name="renamed", origins=list(live_view.origins))
            )
        assert answer.requestid == requestid and answer.status is Status.FAILED
        assert answer.pin.origins == list(live_view.origins), "only the fields were updated"

        # pinsyncd learns that both failed, and their backoff is over.
        await executor.sync(Directives(), offline_view, send=False)
        rows = await store.remote_pins(SERVICE)
        assert {rows[cid].status for cid in local_pins} == {RemoteStatus.FAILED}
        await store.save([rows[cid].evolve(next_attempt=0.0) for cid in local_pins])
        before = dict(client.requests)

        report = await executor.sync(Directives(), live_view)
        sent = {op: client.requests[op] - before.get(op, 0) for op in client.requests}
        assert report.errors == 0 and report.replaced == 2
        assert sent.get("replace", 0) == 1, "one replace showed the no-op; the next was skipped"
        assert sent.get("delete", 0) == 2 and sent.get("add", 0) == 2
        assert await store.get_meta(f"replace_noop:{SERVICE}") is not None

        rows = await store.remote_pins(SERVICE)
        listed = [p async for p in iter_pins(client)]
        assert sorted(p.pin.cid for p in listed) == sorted(local_pins), "one request per CID"
        for cid, old in first.items():
            new = rows[cid].requestid
            assert new is not None and new != old
            with pytest.raises(NotFound):
                await client.get_pin(str(old))
            took = await wait_for_status(client, new, Status.PINNED)
            print(f"{cid}: re-added and pinned in {took:.2f}s")
        await executor.sync(Directives(), live_view, send=False)
    rows = await store.remote_pins(SERVICE)
    assert {rows[cid].status for cid in local_pins} == {RemoteStatus.PINNED}

    local.stop()
    reader = kubo_factory("reader")
    for cid, name in local_pins.items():
        assert read_from_helia(helia, reader, cid) == payloads[name]


async def test_an_origin_off_loopback_is_refused_and_the_pin_fails(
    helia: HeliaPinningService,
) -> None:
    """The peer's connection gater refuses a dial off this machine (and says so in its log);
    Helia then fails the pin as for any origin it cannot dial."""
    off = "/ip4/192.0.2.1/tcp/4001/p2p/12D3KooWGBoSpdSqfj8YYGCBkNPjRgyJyymfmx3hmhxTTJ9nh8KX"
    cid = str(CID("base32", 1, "raw", multihash.digest(os.urandom(16), "sha2-256")))
    async with client_for(helia) as client:
        added = await client.add_pin(Pin(cid=cid, origins=[off]))
        await wait_for_status(client, added.requestid, Status.FAILED, seconds=10)
    assert helia.refused_dials() == [off]
    helia.log.write_text("")  # seen: the fixture's check is for unexpected dials


# --- what the server stores and echoes -------------------------------------------------------


async def test_junk_from_another_client_is_echoed_and_the_listing_survives_it(
    helia: HeliaPinningService,
) -> None:
    """Another client's add with `origins: [1, 2, "x"]` is stored as it came (Fastify makes
    the first item a string, the others stay) and echoed in every listing. pinsyncd keeps that
    record (a junk origin is no reason to drop a request: only its non-string items are left
    out), skips nothing, and lists every pin across pages of 2 (Helia lists newest first, with
    a strict `before`, ignores the `cid` filter and has no default status filter)."""
    ours = [inline_cid(f"pin {i}".encode()) for i in range(4)]
    junk_cid = inline_cid(b"another client's pin")
    async with client_for(helia) as client:
        for cid in ours[:2]:
            await client.add_pin(Pin(cid=cid, name=cid[-6:]))
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{helia.url}/pins",
                json={"cid": junk_cid, "name": "junk", "origins": [1, 2, "x"]},
                headers={"Authorization": f"Bearer {TOKEN}"},
            ) as response,
        ):
            assert response.status == 202
            junk_id = (await response.json())["requestid"]
        for cid in ours[2:]:
            await client.add_pin(Pin(cid=cid, name=cid[-6:]))

        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"{helia.url}/pins", headers={"Authorization": f"Bearer {TOKEN}"}
            ) as response,
        ):
            raw = await response.json()
        (echoed,) = [r for r in raw["results"] if r["requestid"] == junk_id]
        assert echoed["pin"]["origins"] == ["1", 2, "x"], "stored and echoed as it came"
        assert raw["count"] == 5, "count is the total; no default status filter"

        report = ListingReport()
        listed = [p async for p in iter_pins(client, page_size=2, report=report)]
        assert sorted(p.pin.cid for p in listed) == sorted([*ours, junk_cid])
        assert len({p.requestid for p in listed}) == 5
        assert report.skipped == 0 and report.complete and report.order == "newest_first"
        assert report.pages >= 3
        (junk,) = [p for p in listed if p.requestid == junk_id]
        assert junk.pin.origins == ["1", "x"], "only the non-string item is left out"

        only_one = await client.list_pins(cids=[ours[0]], statuses=list(Status))
        assert only_one.count == 5, "the cid filter is ignored"


async def test_a_second_add_of_a_pinned_cid_stays_queued(helia: HeliaPinningService) -> None:
    """Helia pins a CID once: a second request for a CID it has pinned only bumps a refcount
    and never leaves `queued` (the first one is `pinned`)."""
    cid = inline_cid(b"pinned twice")
    async with client_for(helia) as client:
        first = await client.add_pin(Pin(cid=cid, name="first"))
        await wait_for_status(client, first.requestid, Status.PINNED, seconds=10)
        second = await client.add_pin(Pin(cid=cid, name="second"))
        assert second.requestid != first.requestid

        async def both_listed() -> bool:
            page = await client.list_pins(statuses=list(Status))
            return {p.requestid: p.status for p in page.results} == {
                first.requestid: Status.PINNED,
                second.requestid: Status.QUEUED,
            }

        await wait_until(both_listed, 5, "the two requests listed")
        # Not a race with a slow fetch: the block is inline, and requests keep coming.
        for _ in range(10):
            assert (await client.get_pin(second.requestid)).status is Status.QUEUED
            await asyncio.sleep(0.1)


# --- the way back ----------------------------------------------------------------------------


async def test_a_lost_node_is_restored_from_helia_alone(
    helia: HeliaPinningService, kubo_factory: KuboFactory, tmp_path: Path
) -> None:
    """Node A backs two files up to Helia (`sync --once --wait`, origins: all), A is stopped;
    the restore drill fetches them from Helia alone; and a fresh node B gets both back, byte
    for byte, with `pinsyncd restore --from-peer A`, from Helia's delegates alone. B's first
    sync then adopts Helia's requests: no add."""
    from tests.daemon_helpers import ServiceSpec, acli, log_events, write_config
    from tests.test_cluster import read_back
    from tests.test_drill import _drill_args

    a = kubo_factory("a")
    files = {"one.bin": os.urandom(700_000), "two.bin": os.urandom(400_000)}
    cids = {name: add_content(a, data, name) for name, data in files.items()}
    spec = ServiceSpec(SERVICE, helia.url, TOKEN, timeout="10s")
    (tmp_path / "conf-a").mkdir()
    config_a = tmp_path / "conf-a" / "config.yaml"
    env_a = write_config(config_a, node_api=a.api_url, services=[spec], extra_sync="origins: all")
    code, _out, err = await acli(["sync", "--once", "--wait", "-c", str(config_a)], env_a, 180)
    assert code == 0, err
    a_id = peer_id(a)
    a.stop()

    # The drill, from A's side: Helia serves both files to a node that never met A.
    code, out, err = await acli([*_drill_args(config_a), "--sample", "5"], env_a)
    assert code == 0, (out, err)
    assert f"{SERVICE}: 3 of 3 fetched (" in out, out  # the two, and the empty folder

    b = kubo_factory("b")
    (tmp_path / "conf-b").mkdir()
    config_b = tmp_path / "conf-b" / "config.yaml"
    env_b = write_config(config_b, node_api=b.api_url, services=[spec])
    started = time.monotonic()
    code, out, err = await acli(["restore", "--from-peer", a_id, "-c", str(config_b)], env_b)
    took = time.monotonic() - started
    assert code == 0, (out, err)
    print(f"\nrestored from Helia in {took:.1f}s: {out.splitlines()[0]}")
    for name, data in files.items():
        assert await asyncio.to_thread(read_back, b, cids[name]) == data, name
    async with LocalNode(b.api_url) as node:
        names = {pin.cid: pin.name async for pin in node.iter_pins()}
    assert {names[cid] for cid in cids.values()} == set(files)

    code, _out, err = await acli(["sync", "--once", "--wait", "-c", str(config_b)], env_b)
    assert code == 0, err
    cycle = next(e for e in log_events(err) if e["event"] == "cycle done")
    assert not cycle["services"][SERVICE].get("added"), cycle
