"""Traffic stays on this machine: every peer in the suite hands out loopback delegates only,
test Kubo nodes cannot dial anything else, and the suite-wide guard (tests/loopback_guard.py,
the autouse `dial_guard` fixture) catches a dial pinsyncd asks for off loopback."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from pinsyncd.config import Service
from pinsyncd.delegates import DelegateDialer
from pinsyncd.kubo import LocalNode
from pinsyncd.psa import Pin, PinningServiceClient
from pinsyncd.store import StateStore
from pinsyncd.sync.context import NodeView
from pinsyncd.sync.service import ServiceExecutor
from pinsyncd.tokens import Secret
from tests.cidgen import random_cid, random_cids
from tests.conftest import DialGuard
from tests.daemon_helpers import ServiceSpec, cli, write_config
from tests.fake_kubo import FakeKubo
from tests.fake_psa import FAKE_PEER_ID, FakePinningService
from tests.loopback_guard import is_loopback_multiaddr, leaves_this_machine
from tests.peers import KuboNode, MockPinningService

PUBLIC_DELEGATE = f"/ip4/203.0.113.42/tcp/4001/p2p/{FAKE_PEER_ID}"


def test_the_guard_knows_loopback() -> None:
    assert is_loopback_multiaddr(f"/ip4/127.0.0.1/tcp/4001/p2p/{FAKE_PEER_ID}")
    assert is_loopback_multiaddr("/ip4/127.8.0.1/udp/4001/quic-v1")
    assert is_loopback_multiaddr("/dns4/localhost/tcp/4001")
    assert is_loopback_multiaddr("/ip6/::1/tcp/4001")
    for address in (PUBLIC_DELEGATE, "/ip4/192.168.1.2/tcp/1", "/dns4/example.com/tcp/1"):
        assert not is_loopback_multiaddr(address) and leaves_this_machine(address)
    assert leaves_this_machine(f"/p2p/{FAKE_PEER_ID}"), "the node would look the peer up"
    assert not leaves_this_machine("not-a-multiaddr"), "nothing can dial it"


async def test_the_npm_mock_hands_out_loopback_delegates(mock_psa: MockPinningService) -> None:
    async with PinningServiceClient("mock", mock_psa.url, Secret(mock_psa.token, "t")) as client:
        added = await client.add_pin(Pin(cid=random_cid()))
    assert added.delegates
    assert all(is_loopback_multiaddr(a) for a in added.delegates), added.delegates


def test_the_npm_mock_refuses_a_delegate_off_loopback(
    mock_psa_factory: Callable[..., MockPinningService],
) -> None:
    with pytest.raises(RuntimeError, match="did not start"):
        mock_psa_factory(delegates=PUBLIC_DELEGATE)


def test_test_kubo_nodes_dial_nothing_but_loopback(
    kubo_factory: Callable[..., KuboNode],
) -> None:
    node = kubo_factory("filtered", online=False)
    filters = json.loads(node.cli("config", "Swarm.AddrFilters"))
    assert "/ip4/0.0.0.0/ipcidr/2" in filters and "/ip4/128.0.0.0/ipcidr/1" in filters
    assert "/ip6/::/ipcidr/0" in filters
    assert not any(f.startswith("/ip4/127.") for f in filters)


async def test_a_real_sync_asks_real_kubo_to_dial_loopback_only(
    kubo_factory: Callable[..., KuboNode],
    mock_psa: MockPinningService,
    tmp_path: Path,
    dial_guard: DialGuard,
) -> None:
    """The CLI as a subprocess, real Kubo, the npm mock: the delegates it dials are recorded
    (the subprocess records too) and every one is on loopback."""
    node = kubo_factory("dialer")
    node.cli("add", "-q", "--pin=true", stdin=b"loopback only, please")
    config = tmp_path / "config.yaml"
    env = write_config(
        config,
        node_api=node.api_url,
        services=[ServiceSpec("mock", mock_psa.url, mock_psa.token)],
    )
    result = cli(["sync", "--once", "-c", str(config)], env)
    assert result.returncode == 0, result.stderr
    dialled = dial_guard.take()
    assert dialled, "pinsyncd dialled the mock's delegate"
    assert all(is_loopback_multiaddr(a) for a in dialled), dialled


async def test_the_guard_catches_a_dial_off_loopback(tmp_path: Path, dial_guard: DialGuard) -> None:
    """A service handing out a public delegate is caught. The node is our fake Kubo, which
    dials nothing, so no packet leaves even here."""
    async with (
        FakeKubo() as fake_node,
        FakePinningService(token="t", delegates=[PUBLIC_DELEGATE]) as service,
        LocalNode(fake_node.url) as node,
    ):
        store = await StateStore.open(tmp_path / "state.db")
        config = Service("spec", service.url, Secret("t", "$T"), 2, 5.0)
        dialer = DelegateDialer(node)
        client = PinningServiceClient("spec", service.url, config.token)
        executor = ServiceExecutor(config, client, store, dialer)
        try:
            async with client:
                await executor.sync(dict.fromkeys(random_cids(3), ""), NodeView(True, "12D3KooWMe"))
            await dialer.drain(within=10)
        finally:
            await store.close()
    dialled = dial_guard.take()
    assert PUBLIC_DELEGATE in dialled and fake_node.dials == [PUBLIC_DELEGATE]
    dial_guard.expect(PUBLIC_DELEGATE)  # the guard would fail this test without it
