"""Which pins a restore brings back, and from where: the requests the services list, filtered
by whose they are, their CID and their name; each CID once, from the first service (in the
order asked) that has it `pinned`. Pure: the listing and the fetching are elsewhere."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from pinsyncd.cids import InvalidCIDError, multihash_of
from pinsyncd.ownership import APP_ID

MAX_DELEGATES = 20
"""The most delegates dialled for one request (the spec asks servers for a few)."""


@dataclass(frozen=True, slots=True)
class Offer:
    """One request a service lists, as a restore sees it."""

    service: str
    requestid: str
    cid: str
    status: str  # the spec's: queued, pinning, pinned, failed
    name: str = ""  # the pin's `name`
    meta: Mapping[str, str] = field(default_factory=dict)
    delegates: tuple[str, ...] = ()

    @property
    def by_pinsyncd(self) -> bool:
        return self.meta.get("app_id") == APP_ID

    @property
    def owner(self) -> str | None:
        """The peer id of the node that made it (pinsyncd's `meta.node`)."""
        return self.meta.get("node") if self.by_pinsyncd else None

    def local_name(self) -> str:
        """The name the pin had on the node it was backed up from: pinsyncd keeps it in
        `meta.local_name` and sends the CID as the name of an unnamed pin."""
        if self.by_pinsyncd:
            return self.meta.get("local_name", "")
        return "" if self.name == self.cid else self.name


@dataclass(frozen=True)
class Wanted:
    """Which requests to restore."""

    owners: frozenset[str] | None
    """Restore the requests these nodes made; None: every request pinsyncd made (`--all`)."""
    cids: frozenset[bytes] = frozenset()
    """Only these CIDs (by multihash); empty: any."""
    names: tuple[str, ...] = ()
    """Only pins whose name matches one of these globs; empty: any."""

    def takes(self, offer: Offer) -> bool:
        if not offer.by_pinsyncd:
            return False
        if self.owners is not None and offer.owner not in self.owners:
            return False
        if self.names and not any(fnmatch.fnmatchcase(offer.local_name(), g) for g in self.names):
            return False
        return not self.cids or cid_key(offer.cid) in self.cids


@dataclass
class Item:
    """One CID to bring back."""

    cid: str
    name: str
    sources: list[Offer] = field(default_factory=list)
    """Its `pinned` requests, in the order the services were asked: fetched from the first,
    from the next when that fails."""
    elsewhere: dict[str, str] = field(default_factory=dict)
    """Services that have a request for it that is not `pinned`: service -> status."""

    @property
    def service(self) -> str | None:
        return self.sources[0].service if self.sources else None

    def delegates(self, source: Offer) -> list[str]:
        return list(dict.fromkeys(source.delegates))[:MAX_DELEGATES]


@dataclass
class Plan:
    items: list[Item]
    """CIDs that some service has pinned, in the order first listed."""
    unpinned: list[Item]
    """CIDs wanted that no service has pinned (the requests are queued, pinning or failed)."""
    left_out: int = 0
    """Requests listed that are not wanted (another node's, not pinsyncd's, filtered out)."""


def choose(offers: Mapping[str, Iterable[Offer]], order: Sequence[str], wanted: Wanted) -> Plan:
    """The restore plan from each service's listed requests (`offers`, by service), services
    tried in `order`. CIDs are matched by multihash, so a CIDv0 and its CIDv1 are one."""
    by_key: dict[bytes, Item] = {}
    left_out = 0
    for service in order:
        for offer in offers.get(service, ()):
            if not wanted.takes(offer):
                left_out += 1
                continue
            key = cid_key(offer.cid)
            item = by_key.get(key)
            if item is None:
                item = by_key[key] = Item(offer.cid, offer.local_name())
            if offer.status == "pinned":
                if not item.sources:  # the name and spelling of the request fetched from
                    item.cid, item.name = offer.cid, offer.local_name()
                if all(s.service != service for s in item.sources):
                    item.sources.append(offer)
            else:
                item.elsewhere.setdefault(service, offer.status)
    items = [item for item in by_key.values() if item.sources]
    unpinned = [item for item in by_key.values() if not item.sources]
    return Plan(items, unpinned, left_out)


def cid_key(cid: str) -> bytes:
    """What a CID is compared by: its multihash (a CIDv0 and its CIDv1 are one)."""
    try:
        return multihash_of(cid)
    except InvalidCIDError:
        return cid.encode()
