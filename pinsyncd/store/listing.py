"""What vetting the node's listing found (`ListingVetting`), and what is kept of the last
listing taken in (`StoredListing`)."""

from __future__ import annotations

from dataclasses import dataclass, field

VET_CHUNK = 5000

LISTING_DIGEST = "listing_digest"
"""The meta key of the last listing's digest and counts: "<digest> <pins> <selected>"."""


@dataclass(frozen=True)
class StoredListing:
    """The digest of the listing the state's local pins were last made from (written in
    the transaction that made them), and their counts."""

    digest: str
    pins: int
    selected: int


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
