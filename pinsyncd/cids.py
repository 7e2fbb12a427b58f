"""CID identity: two CIDs name the same content when their multihashes match.

Services may answer with a CIDv1 for the CIDv0 we sent (or a different base), so pins are
matched by multihash, never by string. Parsing uses the `multiformats` library.
"""

from multiformats import CID

_DAG_PB = 0x70
_SHA2_256 = 0x12


class InvalidCIDError(ValueError):
    """The text is not a CID; the message says which text and why."""


def parse_cid(text: str) -> CID:
    try:
        return CID.decode(text.strip())
    except Exception as exc:  # the library raises several unrelated types
        raise InvalidCIDError(f"invalid CID {text!r}: {_first_line(exc)}") from None


def multihash_of(text: str) -> bytes:
    """The multihash bytes of a CID (a key that is the same for v0, v1 and every base)."""
    cid = parse_cid(text)
    return bytes(cid.digest)


def cid_forms(text: str) -> list[str]:
    """`text` and the other spellings of the same CID a server might have stored.

    Servers that compare `cid=` filters as strings (the npm mock does) miss a pin stored as
    CIDv0 when asked for its CIDv1, and the reverse; asking for both finds it either way.
    """
    cid = parse_cid(text)
    forms = [text.strip()]
    v1 = cid.set(version=1).encode("base32")
    if v1 not in forms:
        forms.append(v1)
    if cid.codec.code == _DAG_PB and cid.hashfun.code == _SHA2_256 and cid.digest[1] == 32:
        v0 = str(cid.set(version=0, base="base58btc"))
        if v0 not in forms:
            forms.append(v0)
    return forms


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
