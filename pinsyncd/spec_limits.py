"""What the Pinning Service API spec allows in a Pin, named once: the name's length in bytes
and the number of origins."""

from __future__ import annotations

MAX_NAME_BYTES = 255  # Pin.name maxLength; Kubo enforces the same limit in bytes
MAX_ORIGINS = 20  # Pin.origins maxItems


def clip_name(name: str, limit: int = MAX_NAME_BYTES) -> str:
    """`name` cut to at most `limit` UTF-8 bytes, never in the middle of a character."""
    encoded = name.encode("utf-8")
    if len(encoded) <= limit:
        return name
    return encoded[:limit].decode("utf-8", errors="ignore")
