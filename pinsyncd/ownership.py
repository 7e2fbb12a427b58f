"""Whose a remote request is. Every request pinsyncd makes carries `meta.app_id` (pinsyncd's)
and `meta.node` (the peer id of the node it backs up): the device that owns it. A device
adopts only its own requests and those no pinsyncd device has claimed (made by
`ipfs pin remote add`, a web UI, an install from before `meta.node`), and deletes, replaces
or trims only its own. A request of another device is never touched."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from enum import StrEnum

APP_ID = "8541372b-2ac2-4ba6-88a8-d93f4c524155"
"""meta.app_id on every pin pinsyncd creates (the spec's suggestion for per-app filtering)."""


class Claim(StrEnum):
    OURS = "ours"  # made by this device (its peer id, or one it took over)
    UNCLAIMED = "unclaimed"  # no pinsyncd device named in it: adoptable, never ours to delete
    OTHER = "other"  # another pinsyncd device's: never adopted, deleted or replaced


def claim_of(meta: Mapping[str, str] | None, ours: Collection[str]) -> Claim:
    """The claim a request's `meta` makes, for a device whose peer ids are `ours` (the node's
    own, and any previous ones it took over)."""
    if not meta or meta.get("app_id") != APP_ID or not meta.get("node"):
        return Claim.UNCLAIMED
    return Claim.OURS if meta["node"] in ours else Claim.OTHER


def meta_for(peer_id: str | None, local_name: str) -> dict[str, str]:
    """The `meta` of a request this device makes."""
    meta = {"app_id": APP_ID}
    if peer_id:
        meta["node"] = peer_id
    if local_name:
        meta["local_name"] = local_name
    return meta
