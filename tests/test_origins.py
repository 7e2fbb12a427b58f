"""`select_origins`: which of the node's addresses are offered to a service as `origins`."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pinsyncd.origins import MAX_ORIGINS, select_origins

PEER = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"
OTHER = "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"
RELAY = "12D3KooWLQzUv2FHWGVPXTXSZpdHs7oHbXub2G5WC8Tx4NQhyd2d"

PUBLIC = [
    "/ip4/1.2.3.4/tcp/4001",
    "/ip4/8.8.8.8/udp/4001/quic-v1",
    "/ip4/8.8.4.4/udp/4001/quic-v1/webtransport",
    "/ip4/11.0.0.1/tcp/4001/ws",
    "/ip4/172.15.255.255/tcp/4001",  # just below 172.16/12
    "/ip4/172.32.0.1/tcp/4001",  # just above 172.16/12
    "/ip4/192.169.0.1/tcp/4001",  # next to 192.168/16
    "/ip4/100.63.255.255/tcp/4001",  # just below 100.64/10
    "/ip4/100.128.0.1/tcp/4001",  # just above 100.64/10
    "/ip6/2606:4700:4700::1111/tcp/4001",
    "/ip6/2a01:4f8:c17:1::1/udp/4001/quic-v1",
    "/dns/example.com/tcp/4001",
    "/dns4/node.example.org/tcp/443/wss",
    "/dns6/node.example.org/udp/4001/quic-v1",
    "/dnsaddr/bootstrap.libp2p.io",
]

PRIVATE = [
    "/ip4/127.0.0.1/tcp/4001",
    "/ip4/127.8.8.8/udp/4001/quic-v1",
    "/ip4/10.0.0.1/tcp/4001",
    "/ip4/10.255.255.255/tcp/4001",
    "/ip4/172.16.0.1/tcp/4001",
    "/ip4/172.31.255.255/tcp/4001",
    "/ip4/192.168.0.1/tcp/4001",
    "/ip4/192.168.255.254/udp/4001/quic-v1",
    "/ip4/169.254.10.20/tcp/4001",
    "/ip4/100.64.0.1/tcp/4001",
    "/ip4/100.127.255.255/tcp/4001",
    "/ip6/::1/tcp/4001",
    "/ip6/fe80::1/tcp/4001",
    "/ip6/fe80::1%eth0/tcp/4001",
    "/ip6/fc00::1/tcp/4001",
    "/ip6/fd12:3456:789a::1/udp/4001/quic-v1",
    "/ip6/::ffff:10.0.0.1/tcp/4001",  # IPv4-mapped private address
    "/dns/localhost/tcp/4001",
    "/dns4/localhost/tcp/4001",
    "/dns6/localhost/tcp/4001",
    "/dns4/ipfs.localhost/tcp/4001",
    "/dns4/printer.local/tcp/4001",
]


def p2p(address: str, peer: str = PEER) -> str:
    return f"{address}/p2p/{peer}"


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_kept_with_the_peer_id(address: str) -> None:
    assert select_origins([address], PEER) == [p2p(address)]
    assert select_origins([address], PEER, include_private=True) == [p2p(address)]


@pytest.mark.parametrize("address", PRIVATE)
def test_local_network_addresses_are_dropped_unless_asked_for(address: str) -> None:
    assert select_origins([address], PEER) == []
    assert select_origins([address], PEER, include_private=True) == [p2p(address)]


@pytest.mark.parametrize("address", ["/ip4/0.0.0.0/tcp/4001", "/ip6/::/tcp/4001"])
def test_unspecified_addresses_are_not_offered_by_default(address: str) -> None:
    assert select_origins([address], PEER) == []


def test_mixed_list_keeps_public_ones_in_order() -> None:
    addresses = [PRIVATE[0], PUBLIC[0], PRIVATE[5], PUBLIC[9], PUBLIC[11], PRIVATE[-1]]
    assert select_origins(addresses, PEER) == [p2p(PUBLIC[0]), p2p(PUBLIC[9]), p2p(PUBLIC[11])]
    assert select_origins(addresses, PEER, include_private=True) == [p2p(a) for a in addresses]


def test_an_address_already_ending_in_our_peer_id_is_kept_once() -> None:
    address = "/ip4/1.2.3.4/tcp/4001"
    with_id = p2p(address)
    assert select_origins([with_id], PEER) == [with_id]
    assert select_origins([address, with_id, with_id + "/", f"  {with_id}\n"], PEER) == [with_id]
    assert select_origins([with_id, address], PEER) == [with_id]


def test_an_address_of_another_peer_is_dropped() -> None:
    for include_private in (False, True):
        for address in ("/ip4/1.2.3.4/tcp/4001", "/ip4/127.0.0.1/tcp/4001"):
            others = [p2p(address, OTHER), p2p(address, OTHER) + "/"]
            assert select_origins(others, PEER, include_private=include_private) == []


def test_duplicates_are_removed() -> None:
    addresses = ["/ip4/1.2.3.4/tcp/4001", "/ip4/1.2.3.4/tcp/4001", "/ip4/1.2.3.4/tcp/4001/"]
    assert select_origins(addresses, PEER) == [p2p("/ip4/1.2.3.4/tcp/4001")]


def test_surrounding_whitespace_and_trailing_slashes_are_ignored() -> None:
    assert select_origins(["  /ip4/1.2.3.4/tcp/4001//\n"], PEER) == [p2p("/ip4/1.2.3.4/tcp/4001")]


def test_at_most_twenty_the_first_ones_kept() -> None:
    public = [f"/ip4/8.8.{i // 250}.{i % 250 + 1}/tcp/4001" for i in range(30)]
    assert MAX_ORIGINS == 20
    assert select_origins(public, PEER) == [p2p(a) for a in public[:20]]


def test_the_limit_counts_kept_addresses_only() -> None:
    public = [f"/ip4/8.8.8.{i + 1}/tcp/4001" for i in range(25)]
    noise = ["/ip4/10.0.0.1/tcp/4001", "garbage", public[0], p2p("/ip4/9.9.9.9/tcp/1", OTHER)]
    addresses = [*noise, *noise, *public]
    assert select_origins(addresses, PEER) == [p2p(a) for a in public[:20]]


def test_the_input_may_be_any_iterable_and_is_read_only_up_to_the_limit() -> None:
    def addresses():
        for i in range(MAX_ORIGINS):
            yield f"/ip4/8.8.8.{i + 1}/tcp/4001"
        raise AssertionError("read past the limit")

    assert len(select_origins(addresses(), PEER)) == MAX_ORIGINS


@pytest.mark.parametrize(
    "garbage",
    ["", " ", "garbage", "ip4/1.2.3.4/tcp/4001", "1.2.3.4:4001", "http://1.2.3.4:4001", "\n"],
)
def test_strings_that_are_not_multiaddrs_are_ignored(garbage: str) -> None:
    for include_private in (False, True):
        assert select_origins([garbage], PEER, include_private=include_private) == []
        assert select_origins([garbage, PUBLIC[0]], PEER, include_private=include_private) == [
            p2p(PUBLIC[0])
        ]


@pytest.mark.parametrize(
    "garbage", ["/", "/garbage", "/ip4/not-an-ip/tcp/4001", "/ip4/999.1.1.1/tcp/4001", "/ip6/zz"]
)
def test_malformed_multiaddrs_are_not_offered_by_default(garbage: str) -> None:
    assert select_origins([garbage], PEER) == []


@pytest.mark.parametrize(
    "garbage", ["/", "/garbage", "/ip4/not-an-ip/tcp/4001", "/ip4/999.1.1.1/tcp/4001"]
)
def test_malformed_multiaddrs_are_not_offered_with_include_private(garbage: str) -> None:
    assert select_origins([garbage], PEER, include_private=True) == []


@pytest.mark.parametrize(
    "address",
    [
        "/dns4/LOCALHOST/tcp/4001",
        "/dns/Localhost/tcp/4001",
        "/dns4/localhost./tcp/4001",
        "/dns4/printer.LOCAL/tcp/4001",
    ],
)
def test_local_dns_names_are_dropped_whatever_their_spelling(address: str) -> None:
    assert select_origins([address], PEER) == []


# --- relay (circuit) addresses --------------------------------------------------------------


def test_a_circuit_address_through_a_public_relay_gets_our_peer_id_appended() -> None:
    circuit = f"/ip4/1.2.3.4/tcp/4001/p2p/{RELAY}/p2p-circuit"
    assert select_origins([circuit], PEER) == [f"{circuit}/p2p/{PEER}"]


def test_a_complete_circuit_address_for_us_is_kept_as_is() -> None:
    full = f"/ip4/1.2.3.4/tcp/4001/p2p/{RELAY}/p2p-circuit/p2p/{PEER}"
    assert select_origins([full], PEER) == [full]
    assert select_origins([full.removesuffix(f"/p2p/{PEER}"), full], PEER) == [full]


def test_a_circuit_address_for_another_peer_is_dropped() -> None:
    other = f"/ip4/1.2.3.4/tcp/4001/p2p/{RELAY}/p2p-circuit/p2p/{OTHER}"
    assert select_origins([other], PEER) == []


def test_a_circuit_address_through_a_private_relay_is_dropped() -> None:
    circuit = f"/ip4/192.168.1.1/tcp/4001/p2p/{RELAY}/p2p-circuit"
    assert select_origins([circuit], PEER) == []
    assert select_origins([circuit], PEER, include_private=True) == [f"{circuit}/p2p/{PEER}"]


# --- properties -----------------------------------------------------------------------------

addresses = st.one_of(
    st.sampled_from(PUBLIC + PRIVATE),
    st.sampled_from(PUBLIC + PRIVATE).map(p2p),
    st.sampled_from(PUBLIC + PRIVATE).map(lambda a: p2p(a, OTHER)),
    st.text(max_size=20),
    st.text(alphabet="/ip46dnscp2t0123456789.:abcf", max_size=24),
    st.builds("/ip4/{}.{}.{}.{}/tcp/4001".format, *(st.integers(0, 255) for _ in range(4))),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(addresses, max_size=40), st.booleans())
def test_properties_of_any_selection(inputs: list[str], include_private: bool) -> None:
    chosen = select_origins(inputs, PEER, include_private=include_private)
    assert len(chosen) <= MAX_ORIGINS
    assert len(chosen) == len(set(chosen))
    normalized = [a.strip().rstrip("/") for a in inputs]
    for origin in chosen:
        assert origin.startswith("/")
        assert origin.endswith(f"/p2p/{PEER}")
        assert origin in normalized or origin.removesuffix(f"/p2p/{PEER}") in normalized
    # the selection is the per-address selections, concatenated, deduplicated and cut at 20
    one_by_one: list[str] = []
    for address in inputs:
        for origin in select_origins([address], PEER, include_private=include_private):
            if origin not in one_by_one:
                one_by_one.append(origin)
    assert chosen == one_by_one[:MAX_ORIGINS]
    if not include_private:
        everything = select_origins(inputs, PEER, include_private=True)
        assert set(chosen) <= set(everything) or len(everything) == MAX_ORIGINS
    # deterministic, and the input list is left alone
    assert select_origins(list(inputs), PEER, include_private=include_private) == chosen
