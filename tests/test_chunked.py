"""The chunked transfer coding decoder that reads streamed RPC answers: whatever the chunk sizes
and wherever the socket splits the bytes, the payload and the trailers come out whole; a body
that breaks the coding is an error, never a short payload."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pinsyncd.chunked import MAX_SIZE_LINE, ChunkedDecoder, ChunkError


def encode(chunks: list[bytes], trailers: dict[str, str] | None = None, ext: str = "") -> bytes:
    body = b"".join(b"%x%s\r\n%s\r\n" % (len(c), ext.encode(), c) for c in chunks if c)
    fields = b"".join(f"{k}: {v}\r\n".encode() for k, v in (trailers or {}).items())
    return body + b"0\r\n" + fields + b"\r\n"


def decode(data: bytes, cuts: list[int]) -> tuple[bytes, ChunkedDecoder]:
    decoder = ChunkedDecoder()
    out, start = [], 0
    for cut in [*sorted(cuts), len(data)]:
        out.append(decoder.feed(data[start:cut]))
        start = max(start, cut)
    return b"".join(out), decoder


@settings(max_examples=300, deadline=None)
@given(
    chunks=st.lists(st.binary(max_size=300), max_size=30),
    cuts=st.lists(st.integers(min_value=0, max_value=12_000), max_size=20),
    trailers=st.dictionaries(
        st.sampled_from(["X-Stream-Error", "X-Other", "Server-Timing"]),
        st.text(alphabet="abc :!é", max_size=20).map(str.strip),
        max_size=2,
    ),
    ext=st.sampled_from(["", ";a=b", " ;name", '\t;x="y"']),
)
def test_any_chunking_and_any_split_gives_the_payload_and_the_trailers(
    chunks: list[bytes], cuts: list[int], trailers: dict[str, str], ext: str
) -> None:
    data = encode(chunks, trailers, ext)
    payload, decoder = decode(data, [c for c in cuts if c <= len(data)])
    assert payload == b"".join(chunks)
    assert decoder.done
    assert decoder.trailers == {k.lower(): v for k, v in trailers.items()}


def test_kubo_framing_a_line_a_chunk() -> None:
    lines = [b'{"Cid":"bafy%d","Type":"recursive"}\n' % i for i in range(1000)]
    data = encode(lines)
    payload, decoder = decode(data, list(range(0, len(data), 4096)))
    assert payload.count(b"\n") == 1000 and decoder.done and decoder.trailers == {}


def test_what_follows_the_body_is_kept_apart() -> None:
    payload, decoder = decode(encode([b"abc"]) + b"HTTP/1.1 200 OK\r\n", [])
    assert payload == b"abc" and decoder.done and decoder.rest == b"HTTP/1.1 200 OK\r\n"


def test_an_unfinished_body_is_not_done() -> None:
    data = encode([b"hello", b"world"])
    for cut in range(len(data)):
        payload, decoder = decode(data[:cut], [])
        assert not decoder.done
        assert b"helloworld".startswith(payload)


@pytest.mark.parametrize(
    "data",
    [
        b"zz\r\nab\r\n0\r\n\r\n",  # not hex
        b"-5\r\nabcde\r\n0\r\n\r\n",  # a sign
        b"5\r\nabcdefg\r\n0\r\n\r\n",  # longer than its size
        b"1_0\r\n" + b"a" * 16 + b"\r\n0\r\n\r\n",  # int() would take it
        b" 5\r\nabcde\r\n0\r\n\r\n",  # whitespace before the size
        b"12345678901234567\r\n",  # more than 16 hex digits
        b"0\r\nno colon here\r\n\r\n",  # a trailer that is not a field
        b"0\r\n bad: name\r\n\r\n",
    ],
)
def test_a_broken_coding_is_an_error(data: bytes) -> None:
    with pytest.raises(ChunkError):
        decode(data, [])


def test_a_size_line_that_never_ends_is_an_error() -> None:
    decoder = ChunkedDecoder()
    with pytest.raises(ChunkError, match="too long"):
        decoder.feed(b"5;" + b"x" * MAX_SIZE_LINE)
