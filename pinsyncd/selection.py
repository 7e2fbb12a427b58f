"""Which of the node's pins are backed up: `sync.include` / `sync.exclude` entries, each a CID
or a glob on the Kubo pin name.

A pin is selected when it matches an `include` entry (or `include` is empty) and matches no
`exclude` entry. CIDs are compared in every spelling a node may list (CIDv0 and CIDv1 base32),
so matching costs a set lookup per pin, not a CID parse; names are matched by one compiled
regular expression per list.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence

from pinsyncd.cids import InvalidCIDError, cid_forms

_CID_LIKE = re.compile(r"(Qm[1-9A-HJ-NP-Za-km-z]{20,}|b[a-z2-7]{40,}|z[1-9A-HJ-NP-Za-km-z]{40,})")


def check_pattern(text: str) -> str:
    """Validate one include/exclude entry (for the config): an entry that looks like a CID
    must be one, so that a mistyped CID is an error rather than a glob that matches nothing."""
    entry = text.strip()
    if not entry:
        raise ValueError("an empty entry matches nothing; remove it")
    if _CID_LIKE.fullmatch(entry):
        try:
            cid_forms(entry)
        except InvalidCIDError as exc:
            raise ValueError(f"looks like a CID but is not one: {exc}") from None
    return entry


class _Matcher:
    def __init__(self, entries: Sequence[str]) -> None:
        self.cids: set[str] = set()
        globs: list[str] = []
        for entry in entries:
            try:
                self.cids.update(cid_forms(entry))
            except InvalidCIDError:
                globs.append(entry)
        self.names = re.compile("|".join(fnmatch.translate(g) for g in globs)) if globs else None
        self.empty = not entries

    def matches(self, cid: str, name: str) -> bool:
        if cid in self.cids:
            return True
        return self.names is not None and self.names.match(name) is not None


class Selector:
    """`sync.include` / `sync.exclude` as one test per pin."""

    def __init__(self, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> None:
        self._include = _Matcher(include)
        self._exclude = _Matcher(exclude)
        self.selects_all = self._include.empty and self._exclude.empty

    def selected(self, cid: str, name: str) -> bool:
        if self.selects_all:
            return True
        if not self._include.empty and not self._include.matches(cid, name):
            return False
        return not self._exclude.matches(cid, name)
