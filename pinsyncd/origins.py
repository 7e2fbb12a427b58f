"""Which of the node's addresses to offer a service as `origins` (provider hints).

The spec: every multiaddr must end with `/p2p/<peer id>`, at most 20, and addresses from local
networks should not be sent. Loopback, private, link-local and CGNAT addresses are dropped
unless the config says `sync.origins: all` (for tests and LANs).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from pinsyncd.spec_limits import MAX_ORIGINS


def select_origins(
    addresses: Iterable[str], peer_id: str, *, include_private: bool = False
) -> list[str]:
    chosen: list[str] = []
    for address in addresses:
        candidate = _with_peer_id(address.strip(), peer_id)
        if candidate is None or candidate in chosen:
            continue
        public = is_public(candidate)
        if public is None or (not public and not include_private):
            continue  # not a usable multiaddr, or a local one that the spec says not to send
        chosen.append(candidate)
        if len(chosen) == MAX_ORIGINS:
            break
    return chosen


def _with_peer_id(address: str, peer_id: str) -> str | None:
    if not address.startswith("/"):
        return None
    parts = address.rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] in ("p2p", "ipfs"):  # /ipfs/ is the legacy spelling
        if parts[-1] != peer_id:
            return None
        parts[-2] = "p2p"
        return "/".join(parts)
    return f"{address.rstrip('/')}/p2p/{peer_id}"


def is_public(address: str) -> bool | None:
    """True for a public address, False for a local one, None when it is not a multiaddr we
    can judge (it is then never offered)."""
    parts = address.split("/")
    if len(parts) < 3 or not parts[2]:
        return None
    protocol, value = parts[1], parts[2]
    if protocol in ("ip4", "ip6"):
        return _is_public_ip(value.split("%")[0], 4 if protocol == "ip4" else 6)
    if protocol in ("dns", "dns4", "dns6", "dnsaddr"):
        name = value.lower().rstrip(".")
        if not name:
            return None
        literal = _is_public_ip(name, None)
        if literal is not None:
            return literal
        return not (name == "localhost" or name.endswith((".localhost", ".local")))
    return None


def _is_public_ip(text: str, version: int | None) -> bool | None:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if version is not None and ip.version != version:
        return None
    return ip.is_global
