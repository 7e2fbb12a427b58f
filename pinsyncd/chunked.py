"""The chunked transfer coding of HTTP/1.1 (RFC 9112, section 7.1), decoded incrementally.

Kubo flushes every line of a streamed answer as its own chunk, so a listing of 100,000 pins
arrives as 100,000 chunks. h11 turns each into an event object, which cost about 5 µs a chunk
here (half a second of CPU per listing of 100,000 pins, more than the rest of an idle cycle);
this decoder walks whole blocks of chunks with `bytes.find` and slices, about ten times less.
h11 still reads the answer's head (`rpc_stream`); this takes over for the body.
"""

from __future__ import annotations

MAX_SIZE_LINE = 4096
"""Bytes a chunk-size line (with its extensions) may take."""
MAX_TRAILERS = 64 * 1024
"""Bytes the trailer section may take."""


class ChunkError(ValueError):
    """The body does not follow the chunked coding."""


class ChunkedDecoder:
    """`feed(data)` returns the payload in `data` (what it completes of earlier data too);
    `done` once the last chunk and the trailer section have come, then `trailers` (names in
    lower case, values as UTF-8 text) and `rest` (bytes after the body)."""

    def __init__(self) -> None:
        self._buffer = b""
        self._left = 0  # payload bytes of the current chunk still to come
        self._crlf = False  # the CRLF that ends a chunk's payload is still to come
        self._in_trailers = False
        self.done = False
        self.trailers: dict[str, str] = {}
        self.rest = b""

    def feed(self, data: bytes) -> bytes:
        if self.done:
            self.rest += data
            return b""
        buf = self._buffer + data if self._buffer else data
        out: list[bytes] = []
        pos = 0
        while True:
            if self._left or self._crlf:
                pos = self._chunk_end(buf, pos, out)
                if self._left or self._crlf:
                    break  # the rest of the chunk is still to come
            if self._in_trailers:
                pos = self._trailers(buf, pos)
                break
            pos = self._whole_chunks(buf, pos, out)
            if not (self._left or self._in_trailers):
                break  # a size line is still to come
        self._buffer = buf[pos:]
        if self.done:
            self.rest, self._buffer = self._buffer, b""
        return b"".join(out) if len(out) != 1 else out[0]

    def _chunk_end(self, buf: bytes, pos: int, out: list[bytes]) -> int:
        """The rest of a chunk that began in an earlier block, and the CRLF after it."""
        if self._left:
            end = min(pos + self._left, len(buf))
            out.append(buf[pos:end])
            self._left -= end - pos
            pos = end
            if self._left:
                return pos
            self._crlf = True
        if len(buf) - pos < 2:
            return pos
        if buf[pos : pos + 2] != b"\r\n":
            raise ChunkError("a chunk's payload is longer than its size says")
        self._crlf = False
        return pos + 2

    def _whole_chunks(self, buf: bytes, pos: int, out: list[bytes]) -> int:
        """Chunks that `buf` holds whole, as long as they last: the hot loop. Stops at a
        size line not yet complete, at a chunk that goes on in the next block (`_left`),
        or at the last chunk (`_in_trailers`)."""
        find, size = buf.find, len(buf)
        while True:
            end = find(b"\r\n", pos)
            if end < 0:
                if size - pos > MAX_SIZE_LINE:
                    raise ChunkError("a chunk-size line is too long")
                return pos
            line = buf[pos:end]
            try:
                length = int(line, 16) if line.isalnum() and len(line) <= 16 else _size(line)
            except ValueError:
                raise ChunkError(f"not a chunk size: {line[:40]!r}") from None
            start = end + 2
            stop = start + length
            if not length:
                self._in_trailers = True
                return start
            if stop + 2 > size:
                self._left = length
                return start
            if buf[stop : stop + 2] != b"\r\n":
                raise ChunkError("a chunk's payload is longer than its size says")
            out.append(buf[start:stop])
            pos = stop + 2

    def _trailers(self, buf: bytes, pos: int) -> int:
        """Read trailer fields up to the empty line that ends the body; where reading stopped
        (all of them, or at a line not yet complete)."""
        while True:
            end = buf.find(b"\r\n", pos)
            if end < 0:
                if len(buf) - pos > MAX_TRAILERS:
                    raise ChunkError("the trailer section is too long")
                return pos
            line = buf[pos:end]
            pos = end + 2
            if not line:
                self.done = True
                return pos
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip():
                raise ChunkError("a trailer line is not a header field")
            # Go (Kubo) writes a field's text as UTF-8; anything else is mended, not refused.
            text = value.strip().decode("utf-8", "replace")
            self.trailers[name.decode("latin-1").lower()] = text
            if sum(map(len, self.trailers.values())) > MAX_TRAILERS:
                raise ChunkError("the trailer section is too long")


def _size(line: bytes) -> int:
    """A chunk-size line that is not plain hex digits: hex digits, then optional extensions
    (`;name=value`, ignored), with optional whitespace before them."""
    digits, _, _extensions = line.partition(b";")
    digits = digits.rstrip(b" \t")
    if not digits or len(digits) > 16 or not all(c in b"0123456789abcdefABCDEF" for c in digits):
        raise ChunkError(f"not a chunk size: {line[:40]!r}")
    return int(digits, 16)
