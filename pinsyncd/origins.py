"""Which of the node's addresses to offer a service as `origins` (provider hints).

The spec: every multiaddr must end with `/p2p/<peer id>`, at most 20, and addresses from local
networks should not be sent. Loopback, private, link-local and CGNAT addresses are dropped
unless the config says `sync.origins: all` (for tests and LANs).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

MAX_ORIGINS = 20


def select_origins(
    addresses: Iterable[str], peer_id: str, *, include_private: bool = False
) -> list[str]:
    chosen: list[str] = []
    for address in addresses:
        candidate = _with_peer_id(address.strip(), peer_id)
        if candidate is None or candidate in chosen:
            continue
        if not include_private and not _is_public(candidate):
            continue
        chosen.append(candidate)
        if len(chosen) == MAX_ORIGINS:
            break
    return chosen


def _with_peer_id(address: str, peer_id: str) -> str | None:
    if not address.startswith("/"):
        return None
    parts = address.rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] == "p2p":
        return address.rstrip("/") if parts[-1] == peer_id else None
    return f"{address.rstrip('/')}/p2p/{peer_id}"


def _is_public(address: str) -> bool:
    parts = address.split("/")
    protocol, value = (parts[1], parts[2]) if len(parts) > 2 else ("", "")
    if protocol in ("ip4", "ip6"):
        try:
            ip = ipaddress.ip_address(value.split("%")[0])
        except ValueError:
            return False
        return ip.is_global
    if protocol in ("dns", "dns4", "dns6", "dnsaddr"):
        return value != "localhost" and not value.endswith((".localhost", ".local"))
    return False
