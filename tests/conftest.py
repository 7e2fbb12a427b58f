"""Fixtures that start real peers on 127.0.0.1 and always stop them."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pinsyncd import clock
from tests import loopback_guard
from tests.cluster_peer import ClusterPeer
from tests.fake_psa import FakePinningService
from tests.peers import KuboNode, MockPinningService, install_peers
from tests.servers import SPEC_TOKEN

SEEDED_PINS = 3000


class StoppedClock:
    """pinsyncd's own time for one test, in this process: it stands still until the test
    moves it. Every time pinsyncd decides by (the age of an intent, `clock.now()` for backoff,
    pauses, failover, the unpin grace) is read off `clock.boot_seconds`, so a test that waits
    for one of them moves this clock instead of sleeping, and a slow machine cannot make a
    time look passed, or not yet passed, that the test did not mean."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.boot = clock.boot_seconds()
        monkeypatch.setattr(clock, "boot_seconds", lambda: self.boot)

    def advance(self, seconds: float) -> None:
        self.boot += seconds


@pytest.fixture
def pinsyncd_clock(monkeypatch: pytest.MonkeyPatch) -> StoppedClock:
    return StoppedClock(monkeypatch)


class DialGuard:
    """What the loopback guard recorded during one test (see tests/loopback_guard.py)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.expected: set[str] = set()

    def take(self) -> list[str]:
        """The addresses recorded since the last call."""
        addresses, self.offset = loopback_guard.recorded(self.path, self.offset)
        return addresses

    def expect(self, address: str) -> None:
        """A test of the guard itself: this one off-loopback address is its to check."""
        self.expected.add(address)


@pytest.fixture(scope="session")
def _dial_record(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("loopback-guard") / "dials.jsonl"
    saved = {k: os.environ.get(k) for k in (loopback_guard.RECORD_ENV, "PYTHONPATH")}
    os.environ[loopback_guard.RECORD_ENV] = str(path)
    os.environ["PYTHONPATH"] = loopback_guard.PYTHONPATH
    loopback_guard.install()
    try:
        yield path
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(autouse=True)
def dial_guard(_dial_record: Path) -> Iterator[DialGuard]:
    """Every test: fail it if pinsyncd asked a node to dial anything off loopback."""
    guard = DialGuard(_dial_record)
    guard.take()  # what earlier tests recorded was judged after them
    yield guard
    offending = [a for a in guard.take() if loopback_guard.leaves_this_machine(a)]
    unexpected = sorted(set(offending) - guard.expected)
    if unexpected:
        pytest.fail(f"pinsyncd asked a node to dial off this machine: {unexpected}")


@pytest.fixture(scope="session")
def peers_installed() -> None:
    install_peers()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that needs a real peer (through `peers_installed`) carries the `peers`
    marker, so `-m "not peers"` runs only tests that need no Go or npm build."""
    for item in items:
        if "peers_installed" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.peers)


@pytest.fixture(scope="session")
def kubo(peers_installed: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KuboNode]:
    """A real Kubo daemon, online on loopback only, with SEEDED_PINS named recursive pins."""
    node = KuboNode(tmp_path_factory.mktemp("kubo") / "repo")
    node.start()
    try:
        node.seeded = asyncio.run(seed_pins(node.api_url, SEEDED_PINS, "seed"))
        yield node
    finally:
        node.stop()


@pytest.fixture
def kubo_factory(peers_installed: None, tmp_path: Path) -> Iterator[Callable[..., KuboNode]]:
    """Start extra Kubo daemons for one test (stopped at its end)."""
    started: list[KuboNode] = []

    def start(name: str = "node", online: bool = True) -> KuboNode:
        node = KuboNode(tmp_path / name, online=online)
        node.start()
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop()


@pytest.fixture
def mock_psa_factory(peers_installed: None) -> Iterator[Callable[..., MockPinningService]]:
    """Start instances of the npm mock-ipfs-pinning-service (stopped at the test's end)."""
    started: list[MockPinningService] = []

    def start(token: str = "mock-token", delegates: str | None = None) -> MockPinningService:
        service = MockPinningService(token=token, delegates=delegates)
        service.start()
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


@pytest.fixture
def cluster_factory(peers_installed: None, tmp_path: Path) -> Iterator[Callable[..., ClusterPeer]]:
    """Start ipfs-cluster peers, each with its own Kubo, for one test (stopped at its end)."""
    started: list[ClusterPeer] = []

    def start(name: str = "cluster", **options: Any) -> ClusterPeer:
        peer = ClusterPeer(tmp_path / name, **options)
        started.append(peer)
        peer.start()
        return peer

    yield start
    for peer in started:
        peer.stop()


@pytest.fixture
async def service() -> AsyncIterator[FakePinningService]:
    """The fake pinning service, spec-faithful, taking `SPEC_TOKEN` (see tests/servers.py).
    Modules that need other options define their own `service`."""
    async with FakePinningService(token=SPEC_TOKEN) as svc:
        yield svc


@pytest.fixture
def mock_psa(mock_psa_factory: Callable[..., MockPinningService]) -> MockPinningService:
    return mock_psa_factory()


async def seed_pins(api_url: str, count: int, prefix: str) -> dict[str, str]:
    """Add `count` small raw blocks to a Kubo node and pin each with a name; CID -> name."""
    form = aiohttp.FormData()
    for index in range(count):
        form.add_field("file", f"{prefix} {index} {os.urandom(8).hex()}".encode(), filename="f")
    async with aiohttp.ClientSession() as session:
        cids: list[str] = []
        async with session.post(
            f"{api_url}/api/v0/block/put", params={"cid-codec": "raw"}, data=form
        ) as response:
            response.raise_for_status()
            async for line in response.content:
                if line.strip():
                    cids.append(json.loads(line)["Key"])
        limit = asyncio.Semaphore(16)

        async def pin(index: int, cid: str) -> None:
            async with (
                limit,
                session.post(
                    f"{api_url}/api/v0/pin/add", params={"arg": cid, "name": f"{prefix}-{index}"}
                ) as response,
            ):
                response.raise_for_status()
                await response.read()

        await asyncio.gather(*(pin(i, cid) for i, cid in enumerate(cids)))
    return {cid: f"{prefix}-{i}" for i, cid in enumerate(cids)}
