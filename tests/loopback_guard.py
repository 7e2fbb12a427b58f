"""The suite's guard that keeps traffic on this machine: every address pinsyncd asks a node to
dial (`LocalNode.swarm_connect`: the services' delegates) is recorded, in this process and in
every pinsyncd subprocess a test starts, and a test after which a recorded address is not on
loopback fails. The test Kubo nodes are also configured to refuse any dial off loopback
(`ADDR_FILTERS`), so even a peer that hands out another address makes no packet leave.

Subprocesses record through `tests/guard/sitecustomize.py`, which Python imports at start-up
when that directory is on PYTHONPATH (`PYTHONPATH` below) and the record file is named in the
environment (`RECORD_ENV`).
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

RECORD_ENV = "LOOPBACK_GUARD_DIALS"
GUARD_DIR = Path(__file__).resolve().parent / "guard"
ROOT = GUARD_DIR.parent.parent
PYTHONPATH = f"{ROOT}{os.pathsep}{GUARD_DIR}"
"""PYTHONPATH for a subprocess that runs pinsyncd from this checkout, with the guard on."""

ADDR_FILTERS: list[str] = [
    *(
        f"/ip4/{net.network_address}/ipcidr/{net.prefixlen}"
        for net in ipaddress.ip_network("0.0.0.0/0").address_exclude(
            ipaddress.ip_network("127.0.0.0/8")
        )
    ),
    "/ip6/::/ipcidr/0",
]
"""Kubo's `Swarm.AddrFilters` (addresses it never dials) for every test node: all but
127.0.0.0/8."""

_HOST = re.compile(r"^/(ip4|ip6|dns|dns4|dns6)/([^/]+)")


def is_loopback_multiaddr(address: str) -> bool:
    """Whether a multiaddr names this machine: 127.0.0.0/8, ::1 or `localhost`."""
    match = _HOST.match(address)
    if not match:
        return False
    kind, host = match.groups()
    if kind.startswith("dns"):
        return host == "localhost" or host.endswith(".localhost")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def leaves_this_machine(address: str) -> bool:
    """Whether a node told to dial `address` could reach off this machine: any multiaddr not on
    loopback (a bare `/p2p/<id>` too: the node would look the peer up). Text that is not a
    multiaddr at all cannot be dialled."""
    return address.startswith("/") and not is_loopback_multiaddr(address)


def record(addresses: Iterable[str]) -> None:
    path = os.environ.get(RECORD_ENV)
    if not path:
        return
    lines = "".join(json.dumps({"pid": os.getpid(), "address": a}) + "\n" for a in addresses)
    with open(path, "a", encoding="utf-8") as out:  # one write: appends never interleave
        out.write(lines)


def recorded(path: Path, offset: int = 0) -> tuple[list[str], int]:
    """The addresses recorded in `path` from byte `offset` on, and the new offset."""
    if not path.exists():
        return [], offset
    with open(path, "rb") as source:
        source.seek(offset)
        data = source.read()
    complete = data[: data.rfind(b"\n") + 1]
    addresses = [json.loads(line)["address"] for line in complete.splitlines() if line.strip()]
    return addresses, offset + len(complete)


def install() -> None:
    """Record every dial pinsyncd's node client is asked to make (idempotent)."""
    from pinsyncd.kubo import LocalNode

    original: Any = LocalNode.swarm_connect
    if getattr(original, "_loopback_guard", False):
        return

    @functools.wraps(original)
    async def swarm_connect(self: LocalNode, addresses: Iterable[str]) -> Any:
        addresses = list(addresses)
        record(addresses)
        return await original(self, addresses)

    swarm_connect._loopback_guard = True  # type: ignore[attr-defined]
    LocalNode.swarm_connect = swarm_connect  # type: ignore[method-assign]
