"""pinsyncd against a real ipfs-cluster (v1.1.6, built from source) with its own Kubo: the data
really moves, over bitswap, from our Kubo to the cluster's, and only because of `origins` and
`delegates` (the two Kubos are never connected otherwise: loopback only, no bootstrap, no
MDNS). Also: offline windows, and the cluster's deviations from the spec (docs/cluster.md)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, closing
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from pinsyncd.kubo import LocalNode
from pinsyncd.psa import (
    ListingReport,
    NotFound,
    PinningServiceClient,
    Status,
    Unauthorized,
    find_pins,
    iter_pins,
)
from pinsyncd.psa.models import Pin
from pinsyncd.tokens import Secret
from tests.cluster_peer import ClusterPeer
from tests.daemon_helpers import (
    ServiceSpec,
    acli,
    log_events,
    start_daemon,
    status_json,
    write_config,
)
from tests.peers import IPFS_BIN, KuboNode

pytestmark = pytest.mark.peers

ClusterFactory = Callable[..., ClusterPeer]
KuboFactory = Callable[..., KuboNode]


# --- helpers ---------------------------------------------------------------------------------


def add_content(node: KuboNode, data: bytes, name: str) -> str:
    """Add `data` to `node` only, pinned recursively under `name`; its CID."""
    cid = node.cli("add", "-Q", "--pin=false", stdin=data)
    node.cli("pin", "add", "--name", name, cid)
    return cid


def holds(node: KuboNode, cid: str) -> bool:
    """Whether `node` has the root block in its own blockstore (no network lookup)."""
    result = subprocess.run(
        [str(IPFS_BIN), "--offline", "block", "stat", cid],
        env=node.env,
        capture_output=True,
        timeout=30,
    )
    return result.returncode == 0


def read_back(node: KuboNode, cid: str) -> bytes:
    """`ipfs cat` from `node`'s own blockstore (`--offline`: the network cannot help)."""
    result = subprocess.run(
        [str(IPFS_BIN), "--offline", "cat", cid],
        env=node.env,
        capture_output=True,
        timeout=30,
        check=True,
    )
    return result.stdout


def connected_peers(node: KuboNode) -> set[str]:
    peers = node.rpc("swarm/peers").get("Peers") or []
    return {peer["Peer"] for peer in peers}


def keep_api_port(node: KuboNode) -> None:
    """Pin the RPC API to the port it has now (a real node's API stays on one port), so that
    pinsyncd finds the node again after a restart; its swarm port still changes."""
    port = node.api_url.rsplit(":", 1)[1]
    node.cli("config", "Addresses.API", f"/ip4/127.0.0.1/tcp/{port}")


def addresses(node: KuboNode) -> list[str]:
    return list(node.rpc("id")["Addresses"])


def cluster_config(
    tmp_path: Path,
    local: KuboNode,
    cluster: ClusterPeer,
    *,
    origins: str = "all",
    timeout: str = "5s",
    retry: str = "base: 1s\ncap: 4s\nmax_attempts: 50",
) -> tuple[Path, dict[str, str]]:
    """A pinsyncd config with the cluster as its one service, its JWT as the token."""
    config = tmp_path / "config.yaml"
    env = write_config(
        config,
        node_api=local.api_url,
        services=[ServiceSpec("cluster", cluster.url, cluster.token(), timeout=timeout)],
        interval="1s",
        extra_sync=f"origins: {origins}",
        retry=retry,
    )
    return config, env


@asynccontextmanager
async def pinsyncd_daemon(
    config: Path, env: dict[str, str], log: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`pinsyncd run` as a user runs it (debug logs: the delegate dials are logged there),
    always stopped with SIGTERM at the end."""
    process = await start_daemon(config, env, log, log_level="debug")
    try:
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()


async def wait_until(
    check: Callable[[], Awaitable[bool]], seconds: float, what: str, every: float = 0.3
) -> float:
    """Poll `check` until it holds; the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if await check():
            return time.monotonic() - started
        await asyncio.sleep(every)
    raise AssertionError(f"timed out after {seconds:.0f}s waiting for: {what}")


async def service_status(config: Path, env: dict[str, str]) -> dict[str, Any]:
    return (await asyncio.to_thread(status_json, config, env))["services"]["cluster"]


def client_for(cluster: ClusterPeer, token: str | None = None) -> PinningServiceClient:
    return PinningServiceClient(
        "cluster", cluster.url, Secret(token or cluster.token(), "test"), read_retries=0
    )


async def local_pins(node: KuboNode) -> dict[str, str]:
    async with LocalNode(node.api_url) as local:
        return {pin.cid: pin.name async for pin in local.iter_pins()}


def nowhere_cid(node: KuboNode) -> str:
    """The CID of random bytes that no node has (hashed only, never stored)."""
    return node.cli("add", "-Q", "--only-hash", stdin=os.urandom(64))


# --- the data really moves -------------------------------------------------------------------


async def test_origins_and_delegates_move_the_data_and_it_outlives_the_node(
    kubo_factory: KuboFactory, cluster_factory: ClusterFactory, tmp_path: Path
) -> None:
    started = time.monotonic()
    local = kubo_factory("local")
    cluster = cluster_factory()
    data = os.urandom(1_500_000)  # 6 chunks of 256 KiB plus a root: a DAG that exists only here
    cid = add_content(local, data, "holiday")
    assert not holds(cluster.kubo, cid)
    assert cluster.kubo.rpc("id")["ID"] not in connected_peers(local), "connected beforehand"
    assert not connected_peers(cluster.kubo), "the cluster's Kubo knows no peer at all"
    wanted = await local_pins(local)
    config, env = cluster_config(tmp_path, local, cluster, origins="all")
    log = tmp_path / "daemon.log"

    async with pinsyncd_daemon(config, env, log):
        took = await wait_until(
            lambda: _all_pinned(config, env, len(wanted)), 60, "every local pin pinned"
        )
    print(f"\n{len(wanted)} pins (1.5 MB of random bytes) pinned by the cluster in {took:.1f}s")

    async with client_for(cluster) as client:
        remote = await client.get_pin(cid)
    assert remote.status is Status.PINNED
    assert remote.requestid == cid, "ipfs-cluster: the requestid is the CID"
    assert remote.pin.name == "holiday"
    local_id = local.rpc("id")["ID"]
    assert set(remote.pin.origins) == set(addresses(local)), "origins: all sends loopback too"
    assert all(origin.endswith(f"/p2p/{local_id}") for origin in remote.pin.origins)
    assert set(remote.delegates) == set(cluster.delegates())
    dials = [e for e in log_events(log.read_text()) if e["event"] == "delegate connected"]
    assert {e["address"] for e in dials} == set(cluster.delegates()), "pinsyncd dialled them"

    local.stop()
    assert read_back(cluster.kubo, cid) == data, "readable from the cluster alone"
    print(f"cluster end-to-end test: {time.monotonic() - started:.1f}s")


async def test_delegates_alone_move_the_data(
    kubo_factory: KuboFactory, cluster_factory: ClusterFactory, tmp_path: Path
) -> None:
    """`origins: public` (the default) sends no loopback origin, so the cluster cannot dial
    us: the blocks move only because pinsyncd connects our Kubo to the delegates."""
    local = kubo_factory("local")
    cluster = cluster_factory()
    data = os.urandom(600_000)
    cid = add_content(local, data, "delegates-only")
    config, env = cluster_config(tmp_path, local, cluster, origins="public")
    wanted = await local_pins(local)
    async with pinsyncd_daemon(config, env, tmp_path / "daemon.log"):
        await wait_until(lambda: _all_pinned(config, env, len(wanted)), 60, "pinned")
    async with client_for(cluster) as client:
        remote = await client.get_pin(cid)
    assert remote.pin.origins == [], "no origin was sent"
    assert remote.status is Status.PINNED
    local.stop()
    assert read_back(cluster.kubo, cid) == data


async def _all_pinned(config: Path, env: dict[str, str], count: int) -> bool:
    return (await service_status(config, env))["pinned"] == count


# --- offline windows -------------------------------------------------------------------------


async def _hold_the_queue(cluster: ClusterPeer, node: KuboNode, count: int) -> list[str]:
    """Pin `count` CIDs that exist nowhere, so that a peer with `concurrent_pins: 1` is busy
    (each one for its `pin_timeout`) and the pins after them wait, `queued`."""
    blockers = [nowhere_cid(node) for _ in range(count)]
    async with client_for(cluster) as client:
        for blocker in blockers:
            await client.add_pin(Pin(cid=blocker, name="blocker"))
    return blockers


async def test_offline_window_the_cluster_gives_up_then_fresh_origins_win(
    kubo_factory: KuboFactory, cluster_factory: ClusterFactory, tmp_path: Path
) -> None:
    """The node goes offline while its pin waits in the cluster's queue; the cluster tries,
    finds no provider and marks it failed. When the node is back, pinsyncd sends the pin again
    with the node's new addresses (on ipfs-cluster a replace of a CID by itself must be a
    re-add: a real replace would delete it) and the cluster fetches it."""
    started = time.monotonic()
    local = kubo_factory("local")
    cluster = cluster_factory(pin_timeout="3s", concurrent_pins=1)
    data = os.urandom(800_000)
    cid = add_content(local, data, "laptop")
    keep_api_port(local)
    old_origins = addresses(local)
    config, env = cluster_config(tmp_path, local, cluster, origins="all")
    log = tmp_path / "daemon.log"
    await _hold_the_queue(cluster, local, 3)  # about 9 s of a busy cluster

    async with pinsyncd_daemon(config, env, log), client_for(cluster) as client:

        async def sent() -> bool:
            return (await service_status(config, env))["queued"] >= 1

        await wait_until(sent, 30, "pinsyncd sent the pin")
        assert (await client.get_pin(cid)).status is Status.QUEUED, (
            "the cluster reached the pin before the node went down; more blockers needed"
        )
        local.stop()  # the laptop lid closes
        assert not holds(cluster.kubo, cid)

        pending_seen: set[str] = set()

        async def cluster_gave_up() -> bool:
            counts = await service_status(config, env)
            pending_seen.update(s for s in ("queued", "pinning") if counts[s])
            return (await client.get_pin(cid)).status is Status.FAILED

        await wait_until(cluster_gave_up, 60, "the cluster gives up on the pin")
        assert pending_seen, "pinsyncd showed the pin pending while the node was away"
        assert not holds(cluster.kubo, cid)

        back = time.monotonic()
        local.start()  # a new swarm port: the old origins are useless now
        new_origins = addresses(local)

        wanted = len(await local_pins(local))

        async def pinned() -> bool:
            return (await service_status(config, env))["pinned"] == wanted and (
                await client.get_pin(cid)
            ).status is Status.PINNED

        await wait_until(pinned, 60, "pinned after the node came back")
        recovered = time.monotonic() - back
        remote = await client.get_pin(cid)

    assert remote.requestid == cid
    assert set(remote.pin.origins) == set(new_origins), "sent again with the fresh origins"
    if set(new_origins) != set(old_origins):
        assert not set(remote.pin.origins) & set(old_origins)
    events = [e["event"] for e in log_events(log.read_text())]
    assert "local node is back" in events
    local.stop()
    assert read_back(cluster.kubo, cid) == data
    print(
        f"\noffline window: pinned {recovered:.1f}s after the node came back; "
        f"test {time.monotonic() - started:.1f}s"
    )


async def test_offline_window_node_back_while_the_cluster_still_tries(
    kubo_factory: KuboFactory, cluster_factory: ClusterFactory, tmp_path: Path
) -> None:
    """The node is back while the cluster is still fetching (its no-progress timeout is long).
    The cluster dialled the stale origins once and will not dial again; only our dial to its
    delegates lets bitswap deliver the blocks before that timeout."""
    local = kubo_factory("local")
    cluster = cluster_factory(pin_timeout="2m", concurrent_pins=1)
    data = os.urandom(300_000)
    cid = add_content(local, data, "still-trying")
    keep_api_port(local)
    config, env = cluster_config(tmp_path, local, cluster, origins="all")
    (blocker,) = await _hold_the_queue(cluster, local, 1)
    async with pinsyncd_daemon(config, env, tmp_path / "daemon.log"), client_for(cluster) as c:

        async def sent() -> bool:
            return (await service_status(config, env))["queued"] >= 1

        await wait_until(sent, 30, "pinsyncd sent the pin")
        local.stop()
        await c.delete_pin(blocker)  # frees the cluster's one worker: it starts on our pin

        async def pinning() -> bool:
            return (await c.get_pin(cid)).status is Status.PINNING

        await wait_until(pinning, 30, "the cluster fetches (and finds no provider)")
        local.start()

        async def pinned() -> bool:
            return (await c.get_pin(cid)).status is Status.PINNED

        took = await wait_until(pinned, 15, "pinned well before the cluster's 2 min timeout")
        print(f"\nnode back while the cluster still tries: pinned {took:.1f}s later")
    local.stop()
    assert read_back(cluster.kubo, cid) == data


# --- the cluster's quirks, through pinsyncd's client and pager --------------------------------


async def test_cluster_quirks_through_the_client_and_the_pager(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory()
    token = cluster.token()
    assert token.count(".") == 2, "POST /token answers a JWT"
    # The data is in the cluster's own Kubo (this test is about the API, not about fetching).
    cids = [add_content(cluster.kubo, os.urandom(100), f"q{i}") for i in range(7)]
    stuck = nowhere_cid(cluster.kubo)

    async with client_for(cluster, "not-a-jwt") as bad:
        with pytest.raises(Unauthorized):
            await bad.list_pins()

    async with client_for(cluster, token) as client:
        first = await client.add_pin(Pin(cid=cids[0], name="first", meta={"k": "v"}))
        assert first.requestid == cids[0]
        for i, cid in enumerate(cids[1:], 1):
            await client.add_pin(Pin(cid=cid, name=f"q{i}"))
        await client.add_pin(Pin(cid=stuck, name="stuck"))  # no provider: stays pending

        # A re-add: the same requestid, a new `created`, and name and meta overwritten.
        again = await client.add_pin(Pin(cid=cids[0], name="again"))
        assert again.requestid == first.requestid
        assert again.created > first.created
        assert (await client.get_pin(cids[0])).pin.name == "again"

        async def settled() -> bool:
            page = await client.list_pins(statuses=[Status.PINNED], limit=100)
            return page.count == len(cids)

        await wait_until(settled, 30, "the 7 pins with data pinned")

        # No status filter means every status (the spec says pinned only).
        bare = await client.list_pins(limit=100)
        statuses = {p.status for p in bare.results}
        assert bare.count == 8
        assert Status.PINNED in statuses and statuses & {Status.QUEUED, Status.PINNING}
        # `count` is the total, not the page length; no 1000 cap on `limit`.
        page = await client.list_pins(limit=2)
        assert (page.count, len(page.results)) == (8, 2)
        big = await client.list_pins(limit=5000, over_spec_limit=True)
        assert len(big.results) == 8
        # `created` is cut to whole seconds in listings, and `before` is inclusive.
        newest = max(p.created for p in big.results)
        assert all(p.created.microsecond == 0 for p in big.results)
        inclusive = await client.list_pins(before=newest, limit=100)
        assert inclusive.count == 8, "before=<a pin's created> still lists that pin"
        # The pager across page boundaries: 2 per page, every pin exactly once.
        for statuses, expected in (
            ((Status.QUEUED, Status.PINNING, Status.PINNED, Status.FAILED), {*cids, stuck}),
            ((Status.PINNED,), set(cids)),
            ((Status.QUEUED, Status.PINNING), {stuck}),
        ):
            report = ListingReport()
            listed = [
                p.requestid
                async for p in iter_pins(client, statuses=statuses, page_size=2, report=report)
            ]
            assert sorted(listed) == sorted(expected), statuses
            if len(expected) > 2:
                assert report.pages >= 2 and report.one_page is not None, report
        # A listing after a moment (`after` is inclusive too).
        since = min(p.created for p in big.results) - timedelta(seconds=1)
        after = [p.requestid async for p in iter_pins(client, after=since, page_size=3)]
        assert sorted(after) == sorted({*cids, stuck})

        # Lookups by CID: both spellings of one CID find its one request.
        found = await find_pins(client, [cids[1], stuck, nowhere_cid(cluster.kubo)])
        assert sorted(len(v) for v in found.values()) == [0, 1, 1]

        # Replace with the same CID: the raw call deletes the pin; the client re-adds instead.
        replaced = await client.replace_pin(cids[2], Pin(cid=cids[2], name="replaced"))
        assert replaced.requestid == cids[2]
        await asyncio.sleep(1)
        assert (await client.get_pin(cids[2])).pin.name == "replaced"
        raw = await asyncio.to_thread(
            cluster.request,
            "POST",
            f"/pins/{cids[3]}",
            bearer=token,
            body={"cid": cids[3], "name": "raw-replace"},
        )
        assert raw["status"] == "queued", "the answer says queued..."
        await asyncio.sleep(1)
        with pytest.raises(NotFound):
            await client.get_pin(cids[3])  # ...but the pin is gone
        # A replace by another CID works as the spec says (the new requestid is the new CID).
        other = add_content(cluster.kubo, os.urandom(100), "other")
        moved = await client.replace_pin(cids[5], Pin(cid=other, name="moved"))
        assert moved.requestid == other
        await asyncio.sleep(1)
        assert (await client.get_pin(other)).pin.name == "moved"
        with pytest.raises(NotFound):
            await client.get_pin(cids[5])
        await client.delete_pin(cids[4])  # whoever made it: one request per CID
        with pytest.raises(NotFound):
            await client.delete_pin(cids[4])


# --- requestid = CID vs. "never pin twice" ---------------------------------------------------


class SlowAddsProxy:
    """A reverse proxy in front of the cluster that, while `slow` is set, forwards `POST /pins`
    and answers only after `delay` seconds (the service applied the add; the client timed
    out: the answer was lost). Counts the adds it forwarded."""

    def __init__(self, upstream: str, delay: float) -> None:
        self.upstream = upstream
        self.delay = delay
        self.slow = True
        self.adds = 0
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> SlowAddsProxy:
        self._session = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._forward)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._runner is not None and self._session is not None
        await self._runner.cleanup()
        await self._session.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with self._session.request(
            request.method,
            self.upstream + request.rel_url.raw_path_qs,
            data=body,
            headers=headers,
        ) as answer:
            payload = await answer.read()
            status, content_type = answer.status, answer.content_type
        if request.method == "POST" and request.path == "/pins":
            self.adds += 1
            if self.slow:
                await asyncio.sleep(self.delay)
        return web.Response(body=payload, status=status, content_type=content_type)


async def test_lost_add_answers_are_resolved_not_resent_and_a_re_add_confuses_nothing(
    kubo_factory: KuboFactory, cluster_factory: ClusterFactory, tmp_path: Path
) -> None:
    local = kubo_factory("local", online=False)
    cluster = cluster_factory()
    cids = []
    for i in range(3):  # the cluster's Kubo has the data too: this test is about bookkeeping
        data = os.urandom(100)
        cids.append(add_content(local, data, f"lost-{i}"))
        assert add_content(cluster.kubo, data, "same bytes") == cids[-1]
    wanted = await local_pins(local)
    async with SlowAddsProxy(cluster.url, delay=3.0) as proxy:
        config = tmp_path / "config.yaml"
        env = write_config(
            config,
            node_api=local.api_url,
            services=[ServiceSpec("cluster", proxy.url, cluster.token(), timeout="1s")],
            retry="base: 1s\ncap: 1s",
        )
        code, _, stderr = await acli(
            ["sync", "--once", "-c", str(config), "--log-level", "debug"], env
        )
        counts = await service_status(config, env)
        assert counts["sending"] == len(wanted), (code, stderr[-2000:])
        assert proxy.adds == len(wanted)
        async with client_for(cluster) as client:
            applied = {p.requestid: p.created async for p in iter_pins(client)}
        assert set(applied) == set(wanted), "every add was applied although no answer came"

        proxy.slow = False
        await asyncio.sleep(2.5)  # the intent grace: twice the service timeout
        code, _, stderr = await acli(
            ["sync", "--once", "-c", str(config), "--log-level", "debug"], env
        )
        assert code == 0, stderr[-2000:]
        assert proxy.adds == len(wanted), "resolved by lookup, never sent again"
        counts = await service_status(config, env)
        assert counts["sending"] == 0
        assert counts["pinned"] + counts["queued"] + counts["pinning"] == len(wanted)
        async with client_for(cluster) as client:
            now = {p.requestid: p.created async for p in iter_pins(client)}
        assert now == applied, "same requests, same `created`: nothing was re-added"

        # Another client re-adds one CID: the same requestid comes back, with a new `created`.
        async with client_for(cluster) as client:
            readd = await client.add_pin(Pin(cid=cids[0], name="someone else"))
        assert readd.requestid == cids[0]
        code, _, stderr = await acli(
            ["sync", "--once", "-c", str(config), "--log-level", "debug"], env
        )
        assert code == 0, stderr[-2000:]
        (done,) = [e for e in log_events(stderr) if e["event"] == "cycle done"]
        assert "added" not in done["services"]["cluster"], done
        assert proxy.adds == len(wanted)
        async with client_for(cluster) as client:
            assert len([p async for p in iter_pins(client)]) == len(wanted), "one pin per CID"
    print(f"\nstate: {json.dumps(counts)}")


# --- the cluster as the source ---------------------------------------------------------------


async def test_back_up_a_whole_cluster_through_its_ipfs_proxy(
    cluster_factory: ClusterFactory, mock_psa_factory: Callable[..., Any], tmp_path: Path
) -> None:
    """pinsyncd's node is cluster A's IPFS proxy (`api.ipfsproxy`); its targets are cluster B
    (a real Pinning Service API server that fetches the data) and the npm mock. The proxy
    lists every pin for each type asked and drops the names: each pin keeps the type its
    entry gives, a CID listed twice is one pin, and the data reaches B from A's Kubo alone
    (A's addresses are the origins, and A's Kubo dials B's delegates through the proxy)."""
    source = cluster_factory("source", proxy=True)
    target = cluster_factory("target")
    mock = mock_psa_factory()
    blobs = {f"file-{i}": os.urandom(300_000) for i in range(4)}
    cids: dict[str, str] = {}
    for name, data in blobs.items():
        cids[name] = source.kubo.cli("add", "-Q", "--pin=false", stdin=data)
        source.ctl("pin", "add", "--name", name, cids[name])
    block = source.kubo.cli("block", "put", stdin=os.urandom(1000))
    source.ctl("pin", "add", "--mode", "direct", "--name", "a-block", block)
    assert not any(holds(target.kubo, cid) for cid in cids.values())

    config = tmp_path / "config.yaml"
    env = write_config(
        config,
        node_api=source.proxy_url,
        services=[
            ServiceSpec("cluster", target.url, target.token(), timeout="5s"),
            ServiceSpec("mock", mock.url, mock.token),
        ],
        interval="1s",
        extra_sync="pin_types: [recursive, direct]\n  origins: all",
        retry="base: 1s\ncap: 4s\nmax_attempts: 50",
    )

    async def pinned(count: int) -> bool:
        services = (await asyncio.to_thread(status_json, config, env))["services"]
        return services["cluster"]["pinned"] == count and services["mock"]["queued"] == count

    log = tmp_path / "daemon.log"
    async with pinsyncd_daemon(config, env, log):
        took = await wait_until(lambda: pinned(5), 90, "the cluster's 5 pins on both targets")
        later = source.kubo.cli("add", "-Q", "--pin=false", stdin=os.urandom(2000))
        source.ctl("pin", "add", "--name", "later", later)
        took_later = await wait_until(lambda: pinned(6), 90, "a pin added to the cluster later")
    print(f"\ncluster -> cluster + mock: 5 pins in {took:.1f}s, one more in {took_later:.1f}s")

    with closing(sqlite3.connect(tmp_path / "state.db")) as db, db:
        kinds = dict(db.execute("SELECT cid, kind FROM local_pins").fetchall())
        names = dict(db.execute("SELECT cid, name FROM local_pins").fetchall())
    assert kinds == {**{cid: "recursive" for cid in [*cids.values(), later]}, block: "direct"}
    assert set(names.values()) == {""}, "the proxy passes no names"
    async with client_for(target) as client:
        listed = [s async for s in iter_pins(client, statuses=frozenset(Status))]
    assert sorted(s.pin.cid for s in listed) == sorted([*cids.values(), block, later])
    assert {s.status for s in listed} == {Status.PINNED}
    source.stop()  # the data is on B now, whatever happens to A
    for name, data in blobs.items():
        assert read_back(target.kubo, cids[name]) == data
    assert "Traceback" not in log.read_text()
