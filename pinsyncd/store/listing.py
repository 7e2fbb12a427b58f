"""What vetting the node's listing found (`ListingVetting`), and what is kept of the last
listing taken in (`StoredListing`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

VET_CHUNK = 5000

LISTING_DIGEST = "listing_digest"
"""The meta key of what is kept of the last listing taken in (`StoredListing`, as JSON)."""


@dataclass(frozen=True)
class ListingDigest:
    """What identifies one full listing of the node's pins (see `sync.snapshot`)."""

    full: str
    """Its digest as the node sent it, names included."""
    probe: str
    """Its digest without the pins' names: what a listing asked without names must match."""
    taken: float
    """When it was taken (Unix time)."""


@dataclass(frozen=True)
class StoredListing:
    """The listing the state's local pins were last made from (written in the transaction
    that made them), and their counts."""

    digest: ListingDigest
    pins: int
    selected: int

    def to_json(self) -> str:
        d = self.digest
        return json.dumps(
            {
                "full": d.full,
                "probe": d.probe,
                "taken": d.taken,
                "pins": self.pins,
                "selected": self.selected,
            }
        )

    @classmethod
    def from_json(cls, text: str | None) -> StoredListing | None:
        """None for anything but what `to_json` wrote (an older pinsyncd's value included)."""
        try:
            v = json.loads(text or "")
            digest = ListingDigest(str(v["full"]), str(v["probe"]), float(v["taken"]))
            return cls(digest, int(v["pins"]), int(v["selected"]))
        except (ValueError, TypeError, KeyError):
            return None


@dataclass
class ListingVetting:
    """What vetting a node's listing left out (`StateStore.replace_local_listing`)."""

    bad_lines: int = 0
    """Lines of the node's listing that were not a pin (counted by the node's client)."""
    unparsable: int = 0
    """CIDs that do not parse: never planned, never sent."""
    spellings: int = 0
    """Second spellings of a CID listed (CIDv0 and CIDv1 of one multihash): one pin."""
    examples: list[str] = field(default_factory=list)
    unparsable_known: list[str] = field(default_factory=list)
    """Unparsable CIDs an older pinsyncd stored: dropped from the state."""

    @property
    def complete(self) -> bool:
        """Whether the listing can be trusted to name every pin: a pin may be behind a line
        that is not a pin or a CID that does not parse, so then nothing counts as gone."""
        return not (self.bad_lines or self.unparsable)

    def note_unparsable(self, cid: str, *, known: bool) -> None:
        self.unparsable += 1
        if len(self.examples) < 3:
            self.examples.append(cid[:80])
        if known and len(self.unparsable_known) < 500:
            self.unparsable_known.append(cid)
