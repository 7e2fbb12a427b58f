"""CID identity: the fast decoding of the common forms gives exactly what the multiformats
library gives, and every other form (or invalid text) is still the library's to judge."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multiformats import CID, multihash

from pinsyncd import cids
from pinsyncd.cids import InvalidCIDError, cid_forms, multihash_of


def library_multihash(text: str) -> bytes:
    return bytes(CID.decode(text.strip()).digest)


def library_forms(text: str) -> list[str]:
    """What cid_forms answered before the fast path (the library alone)."""
    cid = CID.decode(text.strip())
    forms = [text.strip()]
    v1 = cid.set(version=1).encode("base32")
    if v1 not in forms:
        forms.append(v1)
    if cid.codec.code == 0x70 and cid.hashfun.code == 0x12 and cid.digest[1] == 32:
        v0 = str(cid.set(version=0, base="base58btc"))
        if v0 not in forms:
            forms.append(v0)
    return forms


def spellings(content: bytes) -> list[str]:
    """The same content as CIDs in many forms: fast ones and ones left to the library."""
    sha = multihash.digest(content, "sha2-256")
    blake = multihash.digest(content, "blake2b-256")
    out = [str(CID("base58btc", 0, "dag-pb", sha))]
    for codec in ("raw", "dag-pb", "dag-cbor", "dag-json", "libp2p-key"):
        for digest in (sha, blake):
            cid = CID("base32", 1, codec, digest)
            out += [cid.encode(base) for base in ("base32", "base58btc", "base36", "base16")]
            out.append(cid.encode("base32").upper().replace("B", "b", 1))  # 'b' + upper case
    return out


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=0, max_size=64))
@pytest.mark.slow
def test_fast_forms_match_the_library(content: bytes) -> None:
    for text in spellings(content):
        assert multihash_of(text) == library_multihash(text), text
        assert cid_forms(text) == library_forms(text), text
        assert multihash_of(f"  {text}\n") == library_multihash(text)


def test_the_common_forms_take_the_fast_path() -> None:
    digest = multihash.digest(b"pinsyncd", "sha2-256")
    fast = [
        str(CID("base58btc", 0, "dag-pb", digest)),
        CID("base32", 1, "raw", digest).encode("base32"),
        CID("base32", 1, "dag-pb", digest).encode("base58btc"),
        CID("base32", 1, "dag-cbor", digest).encode("base32"),
    ]
    for text in fast:
        assert cids._fast_decode(text) == (CID.decode(text).codec.code, bytes(digest))
    slow = [
        CID("base32", 1, "raw", digest).encode("base36"),
        CID("base32", 1, "dag-json", digest).encode("base32"),
        CID("base32", 1, "raw", multihash.digest(b"x", "blake2b-256")).encode("base32"),
    ]
    for text in slow:
        assert cids._fast_decode(text) is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Qm",
        "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbd0",  # '0' is not base58
        "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdGG",  # 47 characters
        "bafkreialpcahre34jrxnn6mlmqnxvejjz2owzsmt6eaaxoacjz5nwsgcqb",  # pad bits set
        "bafkreialpcahre34jrxnn6mlmqnxvejjz2owzsmt6eaaxoacjz5nwsgcq",  # cut short
        "bafkreialpcahre34jrxnn6mlmqnxvejjz2owzsmt6eaaxoacjz5nwsgcqa1",  # not base32
        "zzzz",
        "not a cid",
    ],
)
def test_invalid_text_is_an_invalid_cid(text: str) -> None:
    with pytest.raises(InvalidCIDError):
        multihash_of(text)
    with pytest.raises(InvalidCIDError):
        cid_forms(text)
