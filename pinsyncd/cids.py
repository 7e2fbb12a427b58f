"""CID identity: two CIDs name the same content when their multihashes match.

Services may answer with a CIDv1 for the CIDv0 we sent (or a different base), so pins are
matched by multihash, never by string. Parsing uses the `multiformats` library, except for
the forms nearly every pin has (CIDv0; CIDv1 in base32 or base58btc with a raw, dag-pb or
dag-cbor codec and a sha2-256 hash), which are decoded here about 50 times faster (the
library takes over 100 µs a CID, and an adoption may parse every CID of a large pinset).
"""

import base64

from multiformats import CID

_DAG_PB = 0x70
_SHA2_256 = 0x12
_FAST_CODECS = frozenset({0x55, _DAG_PB, 0x71})  # raw, dag-pb, dag-cbor: one-byte varints
_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {char: index for index, char in enumerate(_B58_ALPHABET)}
_B32_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"  # RFC 4648, lower case (multibase 'b')
_B32_AS_DIGITS = str.maketrans(_B32_ALPHABET, "0123456789abcdefghijklmnopqrstuv")  # int(, 32)
_B32_DROP = str.maketrans("", "", _B32_ALPHABET)


class InvalidCIDError(ValueError):
    """The text is not a CID; the message says which text and why."""


def parse_cid(text: str) -> CID:
    try:
        return CID.decode(text.strip())
    except Exception as exc:  # the library raises several unrelated types
        raise InvalidCIDError(f"invalid CID {text!r}: {_first_line(exc)}") from None


def multihash_of(text: str) -> bytes:
    """The multihash bytes of a CID (a key that is the same for v0, v1 and every base)."""
    fast = _fast_decode(text.strip())
    if fast is not None:
        return fast[1]
    cid = parse_cid(text)
    return bytes(cid.digest)


def cid_forms(text: str) -> list[str]:
    """`text` and the other spellings of the same CID a server might have stored.

    Servers that compare `cid=` filters as strings (the npm mock does) miss a pin stored as
    CIDv0 when asked for its CIDv1, and the reverse; asking for both finds it either way.
    """
    forms = [text.strip()]
    fast = _fast_decode(forms[0])
    if fast is not None:
        codec, digest = fast
        v1 = "b" + _base32(bytes((1, codec)) + digest)
        v0 = _base58(digest) if codec == _DAG_PB else None
    else:
        cid = parse_cid(text)
        v1 = cid.set(version=1).encode("base32")
        v0 = None
        if cid.codec.code == _DAG_PB and cid.hashfun.code == _SHA2_256 and cid.digest[1] == 32:
            v0 = str(cid.set(version=0, base="base58btc"))
    if v1 not in forms:
        forms.append(v1)
    if v0 is not None and v0 not in forms:
        forms.append(v0)
    return forms


def other_spellings(text: str) -> list[str]:
    """`cid_forms(text)` without `text`, computed only as far as needed: a CID in canonical
    base32 with a codec other than dag-pb has none. Raises `InvalidCIDError` when `text` is
    not a CID."""
    text = text.strip()
    fast = _fast_decode(text)
    if fast is None:
        return cid_forms(text)[1:]
    codec, digest = fast
    forms = [] if text.startswith("b") else ["b" + _base32(bytes((1, codec)) + digest)]
    if codec == _DAG_PB and not text.startswith("Qm"):
        forms.append(_base58(digest))
    return forms


def _fast_decode(text: str) -> tuple[int, bytes] | None:
    """(codec, multihash) of a CID in one of the common forms, or None when the text is in
    any other form (or invalid): the library then decides, and words its own errors."""
    if len(text) == 46 and text.startswith("Qm"):
        digest = _unbase58(text)
        if digest is not None and len(digest) == 34 and digest[:2] == b"\x12\x20":
            return _DAG_PB, digest
        return None
    if text.startswith("b"):
        unpacked = _unbase32(text[1:])
    elif text.startswith("z"):
        unpacked = _unbase58(text[1:])
    else:
        return None
    if unpacked is None:
        return None
    data = unpacked
    if len(data) == 36 and data[0] == 1 and data[1] in _FAST_CODECS and data[2:4] == b"\x12\x20":
        return data[1], data[2:]
    return None


def _base32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def _unbase32(text: str) -> bytes | None:
    """Canonical lower-case unpadded base32 only (anything else is the library's)."""
    if not text or text.translate(_B32_DROP):
        return None
    bits = 5 * len(text)
    size, pad = divmod(bits, 8)
    if pad >= 5:  # a character more than any byte string encodes to
        return None
    value = int(text.translate(_B32_AS_DIGITS), 32)
    if value & ((1 << pad) - 1):  # pad bits set: not the canonical form
        return None
    return (value >> pad).to_bytes(size, "big")


def _unbase58(text: str) -> bytes | None:
    number = 0
    for char in text:
        digit = _B58_INDEX.get(char)
        if digit is None:
            return None
        number = number * 58 + digit
    zeros = len(text) - len(text.lstrip("1"))
    return b"\0" * zeros + number.to_bytes((number.bit_length() + 7) // 8, "big")


def _base58(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    chars = []
    while number:
        number, digit = divmod(number, 58)
        chars.append(_B58_ALPHABET[digit])
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + "".join(reversed(chars))


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def same_content(requestid: str, cid: str) -> bool:
    """Whether a requestid is a CID for the same content as `cid` (ipfs-cluster's requestids
    are the pin's CID; spec-following services use opaque ids such as UUIDs)."""
    if requestid == cid:
        return True
    try:
        return multihash_of(requestid) == multihash_of(cid)
    except InvalidCIDError:
        return False
