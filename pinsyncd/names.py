"""Pin names as a Pinning Service API request may carry them."""

from __future__ import annotations

MAX_NAME_BYTES = 255  # Pin.name maxLength; Kubo enforces the same limit in bytes


def clip_name(name: str, limit: int = MAX_NAME_BYTES) -> str:
    """`name` cut to at most `limit` UTF-8 bytes, never in the middle of a character."""
    encoded = name.encode("utf-8")
    if len(encoded) <= limit:
        return name
    return encoded[:limit].decode("utf-8", errors="ignore")
