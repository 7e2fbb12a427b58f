"""The node's pins read whole before any of it is parsed, with digests of everything the
state's copy of the listing depends on.

Most listings are the same as the last one. Reading one and hashing it costs a few percent
of parsing it into rows and diffing them against the state, so the engine reads the whole
listing first (`read`), compares `digest` with the one stored beside the last listing the
state took in, and parses the kept body (`body`) only when they differ. The body is kept in
memory up to `IN_MEMORY` bytes, then in an unnamed file beside the state (a listing of a
million pins is about 90 MiB), which is gone when the snapshot is closed.

What a digest covers: the body of each `pin/ls` (as the node sent it, without the HTTP
framing), the pin type each was asked for, the MFS root, and `context` (what else turns a
listing into rows: the pin types and include/exclude configured, the node's peer id, and
`FORMAT`). Kubo lists pins in the order of its datastore, which is the same for the same
pins; a listing in another order only costs a full diff.

`probe_digest` is the same digest with every pin's `"Name"` left out. Kubo answers a
`pin/ls` without names three to four times faster (it need not load each pin's record), so
between full listings the engine asks for a probe (`keep=False`, no names): when its digest
equals the last full listing's `probe_digest`, no pin was added or removed since. A node
that writes its lines in another way only makes the two never match: a full listing every
time, never a wrong skip.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

FORMAT = "pinsyncd listing 1"
"""Changed when the way a listing becomes rows changes: every stored digest then differs."""

IN_MEMORY = 2 * 2**20
"""Bytes of listing kept in memory before it goes to a file (about 20,000 pins): more would
only add to the peak memory of a large node's first cycle, and a file that is deleted within
seconds is seldom written to disk at all."""

READ_BACK = 2**20
"""Bytes read back from the kept body at a time."""

_NAME = re.compile(rb',"Name":"(?:[^"\\]|\\.)*"')
"""A pin's name member in Kubo's compact JSON lines (a raw `"` is never inside a string)."""


class ListingSnapshot:
    """`with ListingSnapshot(folder, context) as snapshot`: `await snapshot.read(type, body)`
    for each pin type, `snapshot.note_mfs_root(cid)`, then `snapshot.digest` and
    `probe_digest`; `body(type)` gives a body back, in blocks, to be parsed. With
    `keep=False` (a probe, asked without names) nothing is kept and only `probe_digest`
    means anything."""

    def __init__(self, folder: Path, context: str, *, keep: bool = True) -> None:
        start = f"{FORMAT}\n{context}\n".encode()
        self._hash = hashlib.sha256(start)
        self._probe = hashlib.sha256(start)
        self._body = (
            tempfile.SpooledTemporaryFile(  # noqa: SIM115 - closed by __exit__
                max_size=IN_MEMORY, dir=str(folder), prefix=".pinsyncd-listing-"
            )
            if keep
            else None
        )
        self._parts: dict[str, tuple[int, int]] = {}
        self._size = 0
        self.mfs_root: str | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._body is not None:
            self._body.close()

    @property
    def size(self) -> int:
        """Bytes of listing read."""
        return self._size

    @property
    def digest(self) -> str:
        return self._hash.hexdigest()

    @property
    def probe_digest(self) -> str:
        return self._probe.hexdigest()

    async def read(self, pin_type: str, body: AsyncIterable[bytes]) -> None:
        """Keep and hash one whole `pin/ls` body; what it raises (a stream that broke off)
        goes to the caller, and the snapshot must then not be used."""
        label = f"\0pin/ls {pin_type}\0".encode()
        self._hash.update(label)
        self._probe.update(label)
        start = self._size
        tail = b""  # a line not yet complete: names are left out of whole lines
        async for block in body:
            self._size += len(block)
            if self._body is None:  # a probe: no names to leave out
                self._probe.update(block)
                continue
            self._hash.update(block)
            self._body.write(block)
            cut = block.rfind(b"\n") + 1
            if not cut:
                tail += block
                continue
            self._probe.update(_NAME.sub(b"", tail + block[:cut] if tail else block[:cut]))
            tail = block[cut:]
        if tail:
            self._probe.update(_NAME.sub(b"", tail))
        self._parts[pin_type] = (start, self._size)

    def note_mfs_root(self, cid: str) -> None:
        self.mfs_root = cid
        self._hash.update(f"\0mfs {cid}\0".encode())
        self._probe.update(f"\0mfs {cid}\0".encode())

    async def body(self, pin_type: str) -> AsyncIterator[bytes]:
        """The body read for `pin_type`, in blocks of `READ_BACK` bytes."""
        for block in self._blocks(*self._parts[pin_type]):
            yield block

    def _blocks(self, start: int, end: int) -> Iterator[bytes]:
        file = self._body
        assert file is not None, "a probe keeps no body"
        position = start
        while position < end:
            file.seek(position)
            block = file.read(min(READ_BACK, end - position))
            if not block:
                raise OSError(f"the kept listing ended at byte {position} of {end}")
            position += len(block)
            yield block
